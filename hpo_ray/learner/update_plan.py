"""How one update's sequences are spread over learner ranks and optimiser steps, and each step's
loss normaliser (global over ranks, so every rank divides by the same count)."""

from hpo_ray.config import RunConfig
from hpo_ray.learner.batch import SequenceItem


class UpdatePlan:
    """Which rank and optimiser step each sequence goes to, and each step's global normaliser."""

    def __init__(self, assignment: list[tuple[int, int]], normalisers: list[float]):
        self.assignment, self.normalisers = assignment, normalisers


def plan_update(items: list[SequenceItem], cfg: RunConfig) -> UpdatePlan:
    """Split items into optimiser steps of `learner.global_batch_size` sequences (all of them when
    unset), each step's sequences balanced over the ranks by token count."""
    world = cfg.learner.num_ranks
    size = cfg.learner.global_batch_size or len(items)
    n_steps = max(1, -(-len(items) // size))
    assignment: list[tuple[int, int]] = [(0, 0)] * len(items)
    normalisers: list[float] = []
    for k in range(n_steps):
        idx = list(range(k * size, min(len(items), (k + 1) * size)))
        load = [0] * world
        for i in sorted(idx, key=lambda i: -len(items[i].input_ids)):
            r = load.index(min(load))
            load[r] += len(items[i].input_ids)
            assignment[i] = (r, k)
        if cfg.algorithm.loss_agg == "token":
            normalisers.append(float(sum(sum(items[i].assistant_mask[1:]) for i in idx) or 1))
        else:
            normalisers.append(float(len(idx) or 1))
    return UpdatePlan(assignment, normalisers)
