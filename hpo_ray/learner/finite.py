"""Finite training: an optimiser step whose loss or gradient norm is not finite is skipped, never applied.

A micro-batch with a non-finite loss is back-propagated as `poisoned(logprobs)`, whose gradient is
NaN for every parameter, so DeepSpeed's own overflow check (ZeRO 1–3, bf16) drops the whole
optimiser step and clears the gradients; weights and optimiser state stay as they were. A plain
torch optimiser (ZeRO-0 in fp32) has no such check, so `guarded_step` checks its gradients itself.
After an applied step the weights are checked too (finite gradients can still overflow them).
`SkipGuard` stops the run when steps keep being skipped.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


class NonFiniteTrainingError(RuntimeError):
    """Training produced non-finite values it cannot skip past (or weights that must not be saved)."""


@dataclass(frozen=True)
class StepOutcome:
    """Whether the optimiser step changed the weights, and its global gradient norm (inf: non-finite)."""

    applied: bool
    grad_norm: float | None


def poisoned(logprobs: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient is NaN for every parameter behind `logprobs` (NaN × 0 is NaN)."""
    return logprobs.float().sum() * float("nan")


def guarded_step(engine, nonfinite_loss: bool, any_rank: Callable[[bool], bool]) -> StepOutcome:
    """`engine.step()` unless the loss (`nonfinite_loss`, already agreed over ranks) or the gradient
    norm is non-finite; then the gradients are dropped and nothing changes."""
    if not hasattr(engine.optimizer, "overflow"):  # a plain torch optimiser: no overflow check of its own
        if any_rank(nonfinite_loss or not _grads_finite(engine.module.parameters())):
            engine.zero_grad()
            return StepOutcome(False, math.inf)
    engine.step()
    norm = engine.get_global_grad_norm()
    norm = None if norm is None else float(norm)
    applied = engine.was_step_applied()
    if applied and (nonfinite_loss or (norm is not None and not math.isfinite(norm))):
        raise NonFiniteTrainingError(
            "DeepSpeed applied an optimiser step whose loss or gradient norm was not finite; "
            "the weights can no longer be trusted (nothing was saved)"
        )
    if applied and any_rank(bool(nonfinite_weights(engine.module))):  # finite gradients, non-finite update
        raise NonFiniteTrainingError(
            "the weights became non-finite in an optimiser step with a finite loss and "
            "gradient norm (is learner.optimizer.lr too large?); stopping before they are "
            "saved or synced"
        )
    return StepOutcome(applied, norm)


def _grads_finite(params: Iterable[torch.nn.Parameter]) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


def nonfinite_weights(module: torch.nn.Module) -> list[str]:
    """Names of this rank's parameters holding a non-finite value (ZeRO-3: its local partitions);
    one device sync when all are finite."""
    named = [(name, getattr(p, "ds_tensor", p).detach()) for name, p in module.named_parameters()]
    named = [(name, t) for name, t in named if t.numel()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in named])
    if bool(finite.all()):
        return []
    return [name for (name, _), ok in zip(named, finite.tolist()) if not ok]


class SkipGuard:
    """Counts skipped optimiser steps; after `limit` in a row, stops the run with a clear error."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.total = limit, 0, 0

    def record(self, outcome: StepOutcome, nonfinite_loss: bool) -> None:
        if outcome.applied:
            self.in_a_row = 0
            return
        self.total += 1
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            what = "loss" if nonfinite_loss else f"gradient norm ({outcome.grad_norm})"
            raise NonFiniteTrainingError(
                f"{self.in_a_row} optimiser steps in a row were skipped, the last for a non-finite {what}; "
                f"stopping before anything non-finite is written (learner.max_skipped_updates={self.limit})"
            )
