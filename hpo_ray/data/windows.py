"""Training talks of bounded length: a long talk cut into windows of whole sentences
(`data.max_talk_seconds`, as the original trains on 67.2 s clips).

A window is a run of consecutive sentences; its frames start at the frame holding its first
sentence's start (frame 0 for the first window) and end where the next window starts (the talk's
last frame for the last), so the windows tile the talk and each keeps the pause after its
sentences. Its segments are re-based to its own start. Windows are deterministic, and each gets
its own talk id (`<talk>@w<k>`) and group id, since the group normaliser groups by group id.
"""

import math
from dataclasses import replace

from hpo_ray.config import ConfigError
from hpo_ray.data.manifest import Manifest, Talk


def window_talk(talk: Talk, first: int, stop: int, frame_start: int, frame_end: int, k: int) -> Talk:
    """Sentences [first, stop) of `talk` over frames [frame_start, frame_end), as window `k`."""
    offset = frame_start * talk.frame_seconds
    segments = tuple((max(0.0, s - offset), e - offset) for s, e in talk.segments[first:stop])
    return replace(
        talk,
        talk_id=f"{talk.talk_id}@w{k}",
        group_id=f"{talk.group_id}.w{k}",
        frame_start=talk.frame_start + frame_start,
        n_frames=frame_end - frame_start,
        src_sentences=talk.src_sentences[first:stop],
        ref_sentences=talk.ref_sentences[first:stop],
        segments=segments,
    )


def sentence_start_frames(talk: Talk) -> list[int]:
    """The frame each sentence starts in (the first is 0: a window owns the audio before its speech)."""
    starts = [min(math.floor(s / talk.frame_seconds + 1e-9), talk.n_frames - 1) for s, _ in talk.segments]
    starts[0] = 0
    return starts


def talk_windows(talk: Talk, max_seconds: float | None) -> list[Talk]:
    """`talk` itself when it fits in `max_seconds` (or no limit is set), else its windows: each holds
    as many whole sentences as fit, at least one (a sentence is never cut, even if longer)."""
    if max_seconds is None or talk.seconds <= max_seconds + 1e-9:
        return [talk]
    max_frames = max_seconds / talk.frame_seconds + 1e-9
    starts = sentence_start_frames(talk) + [talk.n_frames]
    windows: list[Talk] = []
    first = 0
    while first < len(talk.segments):
        stop = first + 1
        # add the next sentence while it fits, or while the window would hold no frame of its own
        while stop < len(talk.segments) and (starts[stop] == starts[first] or starts[stop + 1] - starts[first] <= max_frames):
            stop += 1
        windows.append(window_talk(talk, first, stop, starts[first], starts[stop], len(windows)))
        first = stop
    return windows


def training_talks(talks, max_seconds: float | None) -> list[Talk]:
    """Every talk, long ones replaced by their windows (in talk order, then window order)."""
    return [w for talk in talks for w in talk_windows(talk, max_seconds)]


def tokens_needed(talk: Talk, layout, turn_frames: int, max_new_tokens: int, max_turns: int | None) -> int:
    """The most tokens a dialogue over `talk` can reach: the system prompt, then per turn its user
    turn (frames + template) and a full reply (`max_new_tokens` and a closing `<|im_end|>`)."""
    spans = talk.turn_spans(turn_frames)[:max_turns]
    turns = sum(len(layout.user_ids(end - start, first=k == 0)) + max_new_tokens + 1 for k, (start, end) in enumerate(spans))
    return len(layout.system_ids(talk.src_lang, talk.tgt_lang)) + turns


def check_talks_fit(talks, layout, cfg, sampling, source: str) -> None:
    """Refuse, naming it, a talk of `source` whose dialogue could pass `rollout.max_total_tokens` with
    every reply at its full budget at `data.multiplier` (`sampling.reply_budget`): every rollout of it
    would be truncated and dropped, leaving nothing to learn from."""
    cap = cfg.rollout.max_total_tokens
    max_new_tokens = sampling.reply_budget(cfg.data.multiplier)
    for talk in talks:
        need = tokens_needed(talk, layout, cfg.data.turn_frames, max_new_tokens, cfg.rollout.max_turns)
        if need > cap:
            hint = (
                "set data.max_talk_seconds to train on windows of whole sentences"
                if cfg.data.max_talk_seconds is None
                else "lower data.max_talk_seconds"
            )
            raise ConfigError(
                "rollout.max_total_tokens",
                f"{source}: talk {talk.talk_id!r} ({talk.seconds:.1f} s) may need {need} tokens "
                f"(frames, turn templates, {max_new_tokens} new tokens per turn at data.multiplier={cfg.data.multiplier}), "
                f"more than {cap}: "
                f"its rollouts would be truncated; {hint}, or raise rollout.max_total_tokens",
            )


def check_run_talks(cfg) -> None:
    """Preflight of `hpo-ray train`: every train and dev talk, windowed as training will run it,
    fits `rollout.max_total_tokens` (counted with the policy's own tokenizer)."""
    from transformers import AutoTokenizer

    from hpo_ray.dialogue import make_layout

    try:
        layout = make_layout(cfg, AutoTokenizer.from_pretrained(cfg.model.path, local_files_only=True))
    except (OSError, ValueError) as exc:
        raise ConfigError("model.path", f"cannot load the tokenizer and dialogue layout of {cfg.model.path}: {exc}") from None
    r = cfg.rollout
    for path, sampling in ((cfg.data.train_manifest, r.sampling), (cfg.data.dev_manifest, r.validation_sampling)):
        if path is not None:
            talks = training_talks(Manifest(path, check_values=False), cfg.data.max_talk_seconds)
            check_talks_fit(talks, layout, cfg, sampling, str(path))
