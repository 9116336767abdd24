"""One training step's batch: hierarchical rewards → group advantages → the learner's sequence items.

Truncated rollouts (they hit `rollout.max_total_tokens`) stay out of the group normalisation; they
are dropped, or trained on with the fixed advantage `algorithm.truncated_reward` when that is set.
"""

from collections.abc import Sequence

import numpy as np

from hpo_ray.config import RunConfig
from hpo_ray.data.manifest import Talk
from hpo_ray.experience import sequence_item
from hpo_ray.learner.advantages import dynamic_sampling_keep, group_advantages
from hpo_ray.learner.batch import SequenceItem
from hpo_ray.reward.group import group_rewards
from hpo_ray.reward.types import RolloutScore
from hpo_ray.rollout.protocol import Trajectory


def make_batch(
    trajectories: Sequence[Trajectory], scores: Sequence[RolloutScore], talks: Sequence[Talk], cfg: RunConfig
) -> tuple[list[SequenceItem], dict]:
    """The step's sequence items (scores[i] belongs to trajectories[i]) and its reward/batch metrics;
    raises when every rollout was truncated (nothing to learn from)."""
    algo = cfg.algorithm
    by_id = {t.talk_id: t for t in talks}
    finished = [i for i, t in enumerate(trajectories) if not t.truncated]
    kept_scores = [scores[i] for i in finished]
    rewards = group_rewards(kept_scores, cfg.reward) if kept_scores else []
    adv = group_advantages(rewards, [s.group for s in kept_scores], algo.baseline).tolist() if finished else []
    keep = list(range(len(finished)))
    if algo.dynamic_sampling and finished:
        keep = dynamic_sampling_keep([s.quality for s in kept_scores], [s.group for s in kept_scores])
    items = [sequence_item(trajectories[finished[j]], by_id[trajectories[finished[j]].talk_id], adv[j]) for j in keep]
    if algo.truncated_reward is not None:
        items += [sequence_item(t, by_id[t.talk_id], algo.truncated_reward) for t in trajectories if t.truncated]
    if not items and not finished:
        raise RuntimeError(
            f"all {len(trajectories)} rollouts hit rollout.max_total_tokens={cfg.rollout.max_total_tokens} "
            "and were truncated: nothing to learn from (set data.max_talk_seconds, or raise the cap)"
        )
    return items, batch_stats(trajectories, scores, rewards, len(finished), len(items))


def batch_stats(
    trajectories: Sequence[Trajectory], scores: Sequence[RolloutScore], rewards: Sequence[float], finished: int, items: int
) -> dict:
    """Reward parts over all rollouts, rewards over the finished ones, and the batch's sizes."""
    q = np.array([s.quality for s in scores])
    return {
        "reward/mean": float(np.mean(rewards)) if len(rewards) else 0.0,
        "reward/std": float(np.std(rewards)) if len(rewards) else 0.0,
        "reward/quality": float(q.mean()),
        "reward/latency": float(np.mean([s.latency for s in scores])),
        "reward/hinged_latency": float(np.mean([s.hinged_latency for s in scores])),
        "reward/stream_laal": float(np.nanmean([np.nan if s.stream_laal is None else s.stream_laal for s in scores] or [np.nan])),
        "rollout/truncated": float(len(trajectories) - finished),
        "rollout/sequences": float(len(trajectories)),
        "batch/sequences": float(items),
        "tokens/generated": float(sum(t.num_generated for t in trajectories)),
        "tokens/total": float(sum(len(t.input_ids) for t in trajectories)),
        "rollout/weight_version_min": float(min(t.weight_version for t in trajectories)),
    }
