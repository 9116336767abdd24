"""Group normalisation and the final reward r = α·z(Q) − β·z(H), per group of rollouts of one talk.

z uses the population std; a group whose values are all equal is only centred. With `seqpo`, the
flat latency of each rollout is floored at chunk_seconds/3 before normalisation (the intended
semantics of the original's floor, applied per rollout and hence per group; docs/reward.md).
"""

from collections.abc import Sequence

import numpy as np

from hpo_ray.config import RewardConfig

from .types import RolloutScore


def zscore(values: np.ndarray) -> np.ndarray:
    """(x − mean)/std with the population std; only centred when the values are (numerically) equal."""
    centred = values - values.mean()
    std = float(np.sqrt(np.mean(centred**2)))
    # Equal values up to rounding count as std = 0 (dividing would blow rounding noise up to ±1).
    if std <= 1e-12 * max(1.0, float(np.abs(values).max())):
        return centred
    return centred / std


def group_rewards(scores: Sequence[RolloutScore], cfg: RewardConfig) -> list[float]:
    """One scalar reward per rollout, in input order; groups are the rollouts sharing `group`."""
    Q = np.array([s.quality for s in scores], dtype=np.float64)
    H = np.array([s.hinged_latency for s in scores], dtype=np.float64)
    if cfg.seqpo:
        H = np.maximum(H, np.array([s.chunk_seconds / 3.0 for s in scores]))
    if not cfg.normalize:
        return [float(r) for r in cfg.alpha * Q - cfg.beta * H]
    rewards = np.zeros(len(scores))
    members: dict[str, list[int]] = {}
    for i, s in enumerate(scores):
        members.setdefault(s.group, []).append(i)
    for idx in members.values():
        rewards[idx] = cfg.alpha * zscore(Q[idx]) - cfg.beta * zscore(H[idx])
    return [float(r) for r in rewards]
