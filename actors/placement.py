"""Placement groups for the three pools (learner, rollout, reward), colocated or separate.

Each pool is one placement group of identical bundles; with `cluster.colocate` the rollout
workers share the learner's bundles (GPU fractions split between them). Custom resources in the
bundles pin pools to node types across a multi-node cluster.
"""

from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from hpo_ray.cluster_plan import pool_specs
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


def make_pools(cfg: RunConfig, timeout_s: float = 120.0) -> Pools:
    """Reserve every pool's bundles (as `hpo_ray.cluster_plan.pool_specs` defines them); a pool the
    cluster cannot fit fails fast, naming its config keys."""
    specs = {p.name: p for p in pool_specs(cfg)}
    groups = {name: placement_group(p.bundles, strategy=p.strategy, name=f"hpo-{name}-pool") for name, p in specs.items()}
    pools = Pools(groups["learner"], groups.get("rollout", groups["learner"]), groups["reward"], cfg.cluster.colocate)
    for name, pg in groups.items():
        try:
            ray.get(pg.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            pools.remove()
            raise RuntimeError(
                f"the cluster cannot place the {name} pool ({pg.bundle_specs}) within {timeout_s:.0f} s; "
                f"available: {ray.available_resources()}; adjust {specs[name].keys}"
            ) from None
    return pools


def in_bundle(pg: PlacementGroup, index: int) -> PlacementGroupSchedulingStrategy:
    """Schedule an actor into bundle `index` of `pg` (its children stay in the group)."""
    return PlacementGroupSchedulingStrategy(
        pg, placement_group_bundle_index=index % pg.bundle_count, placement_group_capture_child_tasks=True
    )
