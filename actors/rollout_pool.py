"""The rollout pool: talks sharded over workers, trajectories streamed back as they finish.

A worker that dies mid-step is restarted by Ray (`max_restarts`); the pool re-syncs its weights
and re-runs that worker's unfinished talks, so a step still returns every trajectory.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from actors.placement import in_bundle
from actors.rollout_worker import RolloutWorker
from hpo_ray.config import RunConfig
from hpo_ray.data.manifest import Talk
from hpo_ray.rollout.protocol import Trajectory

_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


@dataclass
class Submitted:
    """A rollout whose generate calls are queued on the workers: its shards and what each talk still owes."""

    shards: dict[int, list[Talk]]
    need: dict[str, int]
    samples: int
    seed: int
    validation: bool
    submitted: float
    streams: dict = field(default_factory=dict)


class RolloutPool:
    """N named RolloutWorker actors in the rollout pool's bundles."""

    def __init__(self, cfg: RunConfig, model_path: str, pool, run_name: str):
        c = cfg.cluster
        self.cfg = cfg
        self.restarts = 0
        self.workers = [
            RolloutWorker.options(
                name=f"{run_name}-rollout-{i}",
                num_cpus=c.cpus_per_rollout_worker,
                num_gpus=c.gpus_per_rollout_worker,
                max_restarts=c.max_restarts,
                max_task_retries=0,
                scheduling_strategy=in_bundle(pool, i),
            ).remote(cfg.model_dump(mode="json"), model_path, i)
            for i in range(c.num_rollout_workers)
        ]
        ray.get([w.ready.remote() for w in self.workers])
        self._resync: Callable[[object], None] | None = None
        self.stopping = False  # set on close: a collect still running gives up instead of waiting for restarts

    def on_restart(self, resync: Callable[[object], None]) -> None:
        """`resync(worker)` brings a restarted worker to the current weights before it is reused."""
        self._resync = resync

    def run(
        self, talks: list[Talk], samples: int, seed: int, on_trajectory: Callable[[Trajectory], None], validation: bool = False
    ) -> dict:
        """Generate `samples` dialogues per talk; `on_trajectory` is called for each as it arrives."""
        return self.collect(self.submit(talks, samples, seed, validation), on_trajectory)

    def submit(self, talks: list[Talk], samples: int, seed: int, validation: bool = False) -> "Submitted":
        """Queue the talks' generate calls on the workers now (each worker runs its calls and weight
        syncs in the order they were sent, so a later sync lands between these talks and the next)."""
        shards: dict[int, list[Talk]] = {}
        for k, talk in enumerate(talks):
            shards.setdefault(k % len(self.workers), []).append(talk)
        job = Submitted(shards, {t.talk_id: samples for t in talks}, samples, seed, validation, time.perf_counter())
        job.streams = self._generate(job, shards)
        return job

    def _generate(self, job: "Submitted", shards: dict[int, list[Talk]]) -> dict:
        return {
            i: self.workers[i].generate.options(num_returns="streaming").remote(shard, job.samples, job.seed, job.validation)
            for i, shard in shards.items()
        }

    def collect(self, job: "Submitted", on_trajectory: Callable[[Trajectory], None]) -> dict:
        """Stream a submitted job's trajectories to `on_trajectory`; a lost worker's unfinished talks are re-run."""
        pending, need, attempts = job.shards, job.need, 0
        while pending:
            streams = job.streams if attempts == 0 else self._generate(job, pending)
            failed: dict[int, list[Talk]] = {}
            live = dict(streams)
            while live:
                if self.stopping:
                    raise RuntimeError("the rollout pool was closed while a rollout was still running")
                ready, _ = ray.wait(list(live.values()), num_returns=1, timeout=self.cfg.rollout.timeout_s, fetch_local=False)
                if not ready:
                    raise TimeoutError(f"no trajectory within rollout.timeout_s={self.cfg.rollout.timeout_s} s")
                i = next(k for k, s in live.items() if s is ready[0])
                try:
                    ref = next(live[i])
                    traj = ray.get(ref)
                except StopIteration:
                    del live[i]
                    continue
                except _LOST:
                    del live[i]
                    failed[i] = [t for t in pending[i] if need[t.talk_id] > 0]
                    continue
                if need[traj.talk_id] > 0:  # a re-run talk may yield more than it still owes
                    need[traj.talk_id] -= 1
                    on_trajectory(traj)
            attempts += 1
            if failed and (attempts > self.cfg.cluster.max_restarts + 1 or self.stopping):
                raise RuntimeError(f"rollout workers {sorted(failed)} kept failing; gave up after {attempts} attempts")
            for i in failed:
                self.restarts += 1
                self._wait_restarted(i)
            pending = {i: shard for i, shard in failed.items() if shard}
        return {"rollout_seconds": time.perf_counter() - job.submitted, "rollout_retries": attempts - 1}

    def _wait_restarted(self, i: int) -> None:
        deadline = time.time() + 300
        while True:
            try:
                ray.get(self.workers[i].ready.remote(), timeout=60)
                break
            except _LOST:
                if time.time() > deadline or self.stopping:
                    raise
                time.sleep(1.0)
        if self._resync is not None:
            self._resync(self.workers[i])

    def stats(self) -> list[dict]:
        return ray.get([w.engine_stats.remote() for w in self.workers])
