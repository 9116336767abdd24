"""Glue between the phases of a step: talks → engine inputs, trajectories → reward records and
learner sequences. Pure functions, used by the controller's actors and by `hpo-ray eval`."""

from hpo_ray.config import DataConfig
from hpo_ray.data.manifest import Talk
from hpo_ray.learner.batch import SequenceItem
from hpo_ray.rollout.protocol import TalkInput, Trajectory


def talk_input(talk: Talk, data: DataConfig, max_turns: int | None = None) -> TalkInput:
    """The engine's view of a talk: memory-mapped frames cut into turns of data.turn_frames (data.multiplier chunks)."""
    return TalkInput(talk.talk_id, talk.group_id, talk.src_lang, talk.tgt_lang, talk.frames(), data.turn_frames, max_turns, data.multiplier)


def rollout_record(traj: Trajectory, talk: Talk, data: DataConfig, rollout_id: str) -> dict:
    """The reward's input record (the `hpo-ray score` JSONL format) for one trajectory."""
    return {
        "id": rollout_id,
        "group": traj.group_id,
        "src_lang": talk.src_lang,
        "tgt_lang": talk.tgt_lang,
        "chunk_seconds": data.turn_seconds,
        "talk_seconds": talk.seconds,
        "turns": list(traj.turn_texts),
        "src_sentences": list(talk.src_sentences),
        "ref_sentences": list(talk.ref_sentences),
        "segments": [{"start": s, "end": e} for s, e in talk.segments],
    }


def sequence_item(traj: Trajectory, talk: Talk, advantage: float) -> SequenceItem:
    """The learner's view of a trajectory with its advantage."""
    return SequenceItem(
        input_ids=traj.input_ids,
        assistant_mask=traj.assistant_mask,
        rollout_logprobs=traj.logprobs,
        advantage=float(advantage),
        features_path=str(talk.features_path),
        features_row=talk.features_row,
        n_frames=traj.n_frames,
        group_id=traj.group_id,
        frame_start=talk.frame_start,
    )
