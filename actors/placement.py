"""Placement groups for the three pools (learner, rollout, reward), colocated or separate.

Each pool is one placement group of identical bundles; with `cluster.colocate` the rollout
workers share the learner's bundles (GPU fractions split between them). Custom resources in the
bundles pin pools to node types across a multi-node cluster.
"""

from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from hpo_ray.config import RunConfig


@dataclass
class Pools:
    learner: PlacementGroup
    rollout: PlacementGroup
    reward: PlacementGroup
    colocated: bool

    def remove(self) -> None:
        for pg in {id(p): p for p in (self.learner, self.rollout, self.reward)}.values():
            remove_placement_group(pg)


def _bundle(cpus: float, gpus: float, extra: dict[str, float]) -> dict[str, float]:
    b = {"CPU": cpus, **extra}
    if gpus:
        b["GPU"] = gpus
    return b


def make_pools(cfg: RunConfig, timeout_s: float = 120.0) -> Pools:
    """Reserve every pool's bundles; a pool the cluster cannot fit fails fast, naming its config keys."""
    c = cfg.cluster
    learner = placement_group(
        [_bundle(c.cpus_per_learner + (c.cpus_per_rollout_worker if c.colocate else 0),
                 max(c.gpus_per_learner, c.gpus_per_rollout_worker if c.colocate else 0), c.learner_resources)]
        * cfg.learner.num_ranks, strategy=c.placement_strategy, name="hpo-learner-pool")
    rollout = learner if c.colocate else placement_group(
        [_bundle(c.cpus_per_rollout_worker, c.gpus_per_rollout_worker, c.rollout_resources)] * c.num_rollout_workers,
        strategy=c.placement_strategy, name="hpo-rollout-pool")
    reward = placement_group(
        [_bundle(c.cpus_per_reward_actor, c.gpus_per_reward_actor, c.reward_resources)] * c.num_reward_actors,
        strategy=c.placement_strategy, name="hpo-reward-pool")
    pools = Pools(learner, rollout, reward, c.colocate)
    for name, pg, keys in (("learner", learner, "cluster.cpus_per_learner/gpus_per_learner/learner_resources × learner.num_ranks"),
                           ("rollout", rollout, "cluster.cpus_per_rollout_worker/gpus_per_rollout_worker/rollout_resources × cluster.num_rollout_workers"),
                           ("reward", reward, "cluster.cpus_per_reward_actor/gpus_per_reward_actor/reward_resources × cluster.num_reward_actors")):
        try:
            ray.get(pg.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            pools.remove()
            raise RuntimeError(
                f"the cluster cannot place the {name} pool ({pg.bundle_specs}) within {timeout_s:.0f} s; "
                f"available: {ray.available_resources()}; adjust {keys}") from None
    return pools


def in_bundle(pg: PlacementGroup, index: int) -> PlacementGroupSchedulingStrategy:
    """Schedule an actor into bundle `index` of `pg` (its children stay in the group)."""
    return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index % pg.bundle_count,
                                            placement_group_capture_child_tasks=True)
