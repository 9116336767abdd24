"""Bounded staleness: how many weight versions a step's trajectories are behind the learner.

With `algorithm.max_staleness` k the controller trains step n on trajectories sampled with weights
of version ≥ n − 1 − k (the learner holds version n − 1 before step n's update); a trajectory older
than that means the rollout schedule is broken, so it stops the run rather than train on it.
"""

from collections.abc import Sequence


class StalenessError(RuntimeError):
    """A trajectory is more weight versions behind the learner than `algorithm.max_staleness` allows."""


def check_staleness(learner_version: int, sampled_versions: Sequence[int], bound: int, step: int) -> list[int]:
    """Each trajectory's staleness (learner version − the version it was sampled with); raises
    `StalenessError` naming the step when one exceeds `bound` or is ahead of the learner."""
    staleness = [learner_version - v for v in sampled_versions]
    worst = max(staleness, default=0)
    if worst > bound or min(staleness, default=0) < 0:
        bad = next(v for v, s in zip(sampled_versions, staleness) if s > bound or s < 0)
        raise StalenessError(
            f"step {step}: a trajectory was sampled with weight version {bad} while the learner holds version "
            f"{learner_version}; allowed: 0 to algorithm.max_staleness={bound} versions behind"
        )
    return staleness
