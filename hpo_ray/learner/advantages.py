"""Advantages: a rollout's reward on each of its assistant tokens, with optional GRPO baselines.

HPO itself uses A_i = r_i (the reward is already group-normalised, docs/method.md §4);
the baselines (group mean, group mean/std, leave-one-out) and dynamic sampling (drop groups whose raw
quality has zero variance) are the standard GRPO options. A group is the G rollouts of one talk,
keyed by a stable group id (e.g. "path:row").
"""

from collections.abc import Hashable, Sequence
from typing import Literal

import torch
from torch import Tensor

Baseline = Literal["none", "group_mean", "group_norm", "leave_one_out"]

# A group std below this (relative to the mean's magnitude) counts as zero: only centre, never divide.
_STD_RTOL = 1e-8


def token_advantages(advantages: Tensor, mask: Tensor) -> Tensor:
    """[B] per-rollout advantages → [B, T]: the rollout's value on each assistant token, 0 elsewhere."""
    if advantages.dim() != 1 or mask.dim() != 2 or advantages.shape[0] != mask.shape[0]:
        raise ValueError(f"expected advantages [B] and mask [B, T], got {tuple(advantages.shape)} and {tuple(mask.shape)}")
    return torch.where(mask.bool(), advantages.unsqueeze(-1), torch.zeros((), dtype=advantages.dtype, device=advantages.device))


def group_advantages(rewards: Sequence[float] | Tensor, group_ids: Sequence[Hashable], baseline: Baseline) -> Tensor:
    """Per-rollout advantages (float64 [B]) from rewards, with the chosen baseline per group.

    group_mean: r − mean_g; group_norm: (r − mean_g) / std_g (population std; when std_g is 0 the
    values are only centred); leave_one_out: r_i − mean of the other rollouts of its group (0 for a
    group of one, which carries no comparison).
    """
    r = _as_float64(rewards, "rewards")
    if len(group_ids) != r.numel():
        raise ValueError(f"got {r.numel()} rewards but {len(group_ids)} group ids")
    if baseline == "none":
        return r.clone()
    out = torch.empty_like(r)
    for gid, idx in _groups(group_ids).items():
        g = r[idx]
        mean = g.mean()
        if baseline == "group_mean":
            out[idx] = g - mean
        elif baseline == "group_norm":
            std = g.std(correction=0)
            out[idx] = (g - mean) / std if std > _STD_RTOL * max(1.0, abs(float(mean))) else g - mean
        elif baseline == "leave_one_out":
            n = g.numel()
            out[idx] = (g - (g.sum() - g) / (n - 1)) if n > 1 else torch.zeros_like(g)
        else:
            raise ValueError(f"unknown baseline {baseline!r} (algorithm.baseline): expected none, group_mean, group_norm or leave_one_out")
    return out


def zero_variance_groups(quality: Sequence[float] | Tensor, group_ids: Sequence[Hashable], atol: float = 0.0) -> set[Hashable]:
    """Group ids whose raw quality spread (max − min) is ≤ atol: they carry no learning signal."""
    q = _as_float64(quality, "quality")
    if len(group_ids) != q.numel():
        raise ValueError(f"got {q.numel()} quality values but {len(group_ids)} group ids")
    return {gid for gid, idx in _groups(group_ids).items() if float(q[idx].max() - q[idx].min()) <= atol}


def dynamic_sampling_keep(quality: Sequence[float] | Tensor, group_ids: Sequence[Hashable], atol: float = 0.0) -> list[int]:
    """Indices of the rollouts to train on: every rollout whose group's raw quality varies."""
    dropped = zero_variance_groups(quality, group_ids, atol)
    return [i for i, gid in enumerate(group_ids) if gid not in dropped]


def _groups(group_ids: Sequence[Hashable]) -> dict[Hashable, Tensor]:
    idx: dict[Hashable, list[int]] = {}
    for i, gid in enumerate(group_ids):
        idx.setdefault(gid, []).append(i)
    return {gid: torch.tensor(rows, dtype=torch.long) for gid, rows in idx.items()}


def _as_float64(values: Sequence[float] | Tensor, name: str) -> Tensor:
    x = torch.as_tensor(values, dtype=torch.float64).detach().cpu().flatten()
    bad = (~torch.isfinite(x)).nonzero()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] = {x[i].item()} is not finite")
    return x
