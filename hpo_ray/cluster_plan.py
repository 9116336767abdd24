"""Will a config's pools fit a cluster? The bundles each pool reserves, and a placement check of them
against node shapes (read from a launcher file, or from a live cluster by the CLI).

`pool_specs` is the one definition of the pools' bundles: the actors' placement groups are built
from it, so the plan and the run cannot disagree about what is asked for.
"""

from dataclasses import dataclass, field

from hpo_ray.config import RunConfig

_KEYS = {
    "learner": "cluster.cpus_per_learner / gpus_per_learner / learner_resources × learner.num_ranks",
    "rollout": "cluster.cpus_per_rollout_worker / gpus_per_rollout_worker / rollout_resources × cluster.num_rollout_workers",
    "reward": "cluster.cpus_per_reward_actor / gpus_per_reward_actor / reward_resources × cluster.num_reward_actors",
}
_EPS = 1e-9


@dataclass(frozen=True)
class PoolSpec:
    """One pool's placement group: identical bundles, a strategy, and the config keys that size it."""

    name: str
    bundles: list[dict[str, float]]
    strategy: str

    @property
    def keys(self) -> str:
        return _KEYS[self.name]


@dataclass(frozen=True)
class NodeShape:
    """`count` identical nodes offering `resources` (CPU, GPU, custom) to placement groups."""

    name: str
    resources: dict[str, float]
    count: int = 1


@dataclass(frozen=True)
class Shortfall:
    """Why bundle `bundle` of `pool` has no place: `resource` is needed `needed`, at most `largest_free` is free
    on one node (`resource` names several, joined by '+', when each is free somewhere but never together)."""

    pool: str
    bundle: int
    resource: str
    needed: float
    largest_free: float
    keys: str

    def __str__(self) -> str:
        if "+" in self.resource:
            what = f"no node has {self.resource.replace('+', ' and ')} free together"
        else:
            what = f"needs {self.resource}={self.needed:g} but at most {self.largest_free:g} is free on any node"
        return f"pool {self.pool}: bundle {self.bundle} {what} (adjust {self.keys}, or add nodes)"


@dataclass
class Plan:
    """Where each pool's bundles go (node instance names), or the first shortfall per pool."""

    placements: dict[str, list[str]] = field(default_factory=dict)
    shortfalls: list[Shortfall] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.shortfalls


def _bundle(cpus: float, gpus: float, extra: dict[str, float]) -> dict[str, float]:
    b = {"CPU": float(cpus), **{k: float(v) for k, v in extra.items()}}
    if gpus:
        b["GPU"] = float(gpus)
    return b


def pool_specs(cfg: RunConfig) -> list[PoolSpec]:
    """The learner, rollout (absent when colocated: it shares the learner's bundles) and reward pools."""
    c = cfg.cluster
    learner = _bundle(
        c.cpus_per_learner + (c.cpus_per_rollout_worker if c.colocate else 0),
        max(c.gpus_per_learner, c.gpus_per_rollout_worker if c.colocate else 0),
        c.learner_resources,
    )
    pools = [PoolSpec("learner", [learner] * cfg.learner.num_ranks, c.placement_strategy)]
    if not c.colocate:
        rollout = _bundle(c.cpus_per_rollout_worker, c.gpus_per_rollout_worker, c.rollout_resources)
        pools.append(PoolSpec("rollout", [rollout] * c.num_rollout_workers, c.placement_strategy))
    reward = _bundle(c.cpus_per_reward_actor, c.gpus_per_reward_actor, c.reward_resources)
    pools.append(PoolSpec("reward", [reward] * c.num_reward_actors, c.placement_strategy))
    return pools


def _fits(bundle: dict[str, float], free: dict[str, float]) -> bool:
    return all(free.get(k, 0.0) + _EPS >= v for k, v in bundle.items() if v > 0)


def _take(bundle: dict[str, float], free: dict[str, float]) -> None:
    for k, v in bundle.items():
        free[k] = free.get(k, 0.0) - v


def _shortfall(pool: PoolSpec, index: int, free: list[dict[str, float]]) -> Shortfall:
    bundle = pool.bundles[index]
    for resource, needed in sorted(bundle.items()):
        largest = max((f.get(resource, 0.0) for f in free), default=0.0)
        if needed > 0 and largest + _EPS < needed:
            return Shortfall(pool.name, index, resource, needed, largest, pool.keys)
    # every resource is free somewhere, but no single node has all of them together
    together = "+".join(f"{k}={v:g}" for k, v in sorted(bundle.items()) if v > 0)
    return Shortfall(pool.name, index, together, 0.0, 0.0, pool.keys)


def _place_pool(pool: PoolSpec, names: list[str], free: list[dict[str, float]]) -> list[str] | Shortfall:
    """Place one pool's bundles (first fit, in Ray's strategy semantics); `free` is updated only on success."""
    trial = [dict(f) for f in free]
    if pool.strategy == "STRICT_PACK":
        total: dict[str, float] = {}
        for b in pool.bundles:
            for k, v in b.items():
                total[k] = total.get(k, 0.0) + v
        for i, f in enumerate(trial):
            if _fits(total, f):
                _take(total, f)
                free[:] = trial
                return [names[i]] * len(pool.bundles)
        return _shortfall(PoolSpec(pool.name, [total], pool.strategy), 0, free)
    where: list[str] = []
    used: set[int] = set()
    for index, bundle in enumerate(pool.bundles):
        candidates = [i for i in range(len(trial)) if not (pool.strategy == "STRICT_SPREAD" and i in used)]
        chosen = next((i for i in candidates if _fits(bundle, trial[i])), None)
        if chosen is None:
            return _shortfall(pool, index, [trial[i] for i in candidates])
        _take(bundle, trial[chosen])
        used.add(chosen)
        where.append(names[chosen])
    free[:] = trial
    return where


def plan(pools: list[PoolSpec], nodes: list[NodeShape]) -> Plan:
    """Place the pools in the order the run reserves them; report the first unplaceable bundle of each."""
    names = [f"{n.name}[{k}]" if n.count > 1 else n.name for n in nodes for k in range(n.count)]
    free = [dict(n.resources) for n in nodes for _ in range(n.count)]
    result = Plan()
    for pool in pools:
        placed = _place_pool(pool, names, free)
        if isinstance(placed, Shortfall):
            result.shortfalls.append(placed)
        else:
            result.placements[pool.name] = placed
    return result


def describe(pools: list[PoolSpec], nodes: list[NodeShape], result: Plan) -> list[str]:
    """Human-readable lines: the nodes, each pool's ask and where it goes, then the verdict."""
    lines = [f"node {n.name} × {n.count}: " + ", ".join(f"{k}={v:g}" for k, v in sorted(n.resources.items())) for n in nodes]
    for pool in pools:
        ask = ", ".join(f"{k}={v:g}" for k, v in sorted(pool.bundles[0].items()))
        where = result.placements.get(pool.name)
        placed = "placed on " + ", ".join(sorted(set(where))) if where else "does not fit"
        lines.append(f"pool {pool.name}: {len(pool.bundles)} × {{{ask}}} ({pool.strategy}) → {placed}")
    lines += [str(s) for s in result.shortfalls]
    lines.append("fits" if result.fits else f"does not fit: {len(result.shortfalls)} pool(s) cannot be placed")
    return lines
