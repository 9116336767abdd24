"""The reward pool: M reward actors; each finished trajectory is scored as soon as it arrives."""

import itertools

import ray

from actors.placement import in_bundle
from actors.reward_actor import RewardActor
from hpo_ray.config import RunConfig


class RewardPool:
    """Round-robin submission; a crashed actor restarts and its calls are retried by Ray (the retry is
    invisible to the caller, so `count_restarts` asks each actor which start of it is answering)."""

    def __init__(self, cfg: RunConfig, pool, run_name: str):
        c = cfg.cluster
        self.actors = [
            RewardActor.options(
                name=f"{run_name}-reward-{i}",
                num_cpus=c.cpus_per_reward_actor,
                num_gpus=c.gpus_per_reward_actor,
                max_restarts=c.max_restarts,
                max_task_retries=c.max_task_retries,
                scheduling_strategy=in_bundle(pool, i),
            ).remote(cfg.model_dump(mode="json"), i)
            for i in range(c.num_reward_actors)
        ]
        ray.get([a.ready.remote() for a in self.actors])
        self._next = itertools.cycle(range(len(self.actors)))
        self._starts = ray.get([a.started_as.remote() for a in self.actors])
        self.restarts = 0

    def count_restarts(self) -> int:
        """Restarts seen so far (several restarts of one actor between two calls count once)."""
        starts = ray.get([a.started_as.remote() for a in self.actors])
        self.restarts += sum(a != b for a, b in zip(starts, self._starts))
        self._starts = starts
        return self.restarts

    def submit(self, records: list[dict]) -> ray.ObjectRef:
        """Score `records` on the next actor; the ref resolves to a list of RolloutScore."""
        return self.actors[next(self._next)].score.remote(records)
