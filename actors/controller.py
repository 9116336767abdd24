"""The HPO training job on Ray. `train()` is the algorithm; `Controller` holds the actors it drives.

One step: draw P talks → G rollouts each on the rollout workers, every finished trajectory scored
by a reward actor at once (scoring overlaps generation) → group-normalised hierarchical rewards →
advantages → learner update → weight sync. With `algorithm.max_staleness` k ≥ 1 the rollouts of
the next k steps are already running on the workers while the learner trains (a sync queued on a
worker lands between two steps' talks), so a step trains on trajectories at most k versions old.
Validation (`validation.every`) and checkpoints (`checkpoint.every`) are separate phases with their
own cadence; both also run after the last step. Step k's log lines and its checkpoint all carry k
(hpo_ray/run_dir.py), and the checkpoint holds the sampler as it was right after drawing step k.
"""

import json
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import ray
from tqdm import tqdm

from actors.learner_group import LearnerGroup
from actors.placement import make_pools
from actors.ray_metrics import RayMetrics
from actors.reward_pool import RewardPool
from actors.rollout_pool import RolloutPool
from actors.weight_sync import make_weight_sync
from hpo_ray.config import RunConfig, to_yaml
from hpo_ray.data.manifest import Manifest, Talk
from hpo_ray.data.sampler import SamplerState, TalkSampler, step_seed
from hpo_ray.data.windows import training_talks
from hpo_ray.experience import rollout_record
from hpo_ray.learner.checkpoint import CheckpointStore
from hpo_ray.learner.step_batch import make_batch
from hpo_ray.metrics import MetricsLog
from hpo_ray.mlflow_run import MlflowRun
from hpo_ray.model.build import export_policy
from hpo_ray.rollout.protocol import Trajectory
from hpo_ray.rollout_summary import criterion, summarize
from hpo_ray.run_dir import cut_logs, prepare_run_dir
from hpo_ray.staleness import check_staleness


def train(cfg: RunConfig, run_dir: Path, steps: int, resume: bool = False) -> list[dict]:
    """Run HPO steps until `steps` are done; returns each step's metrics."""
    ctl = Controller(cfg, run_dir, resume)
    history, ok = [], False
    try:
        if ctl.step == 0 and cfg.validation.at_start and ctl.dev_set is not None:
            ctl.log(ctl.validate(0), step=0)
        ahead: deque[PendingRollout] = deque()  # rollouts already running for this and the coming steps
        for step in ctl.progress(range(ctl.step, steps)):
            started = time.perf_counter()
            while len(ahead) <= cfg.algorithm.max_staleness and step + len(ahead) < steps:
                ahead.append(ctl.start_rollout(ctl.draw_talks(), step + len(ahead)))  # P talks × G rollouts, current weights
            pending = ahead.popleft()
            trajectories, scores, timing = ctl.finish_rollout(pending)  # scored as they finished; staleness checked
            batch, batch_stats = ctl.make_batch(trajectories, scores, pending.talks)  # hierarchical reward → advantages
            train_stats = ctl.update(batch)  # clipped PG + IS + KL to SFT
            sync_stats = ctl.sync_weights(version=step + 1)  # learner → rollout engines, between talks
            ctl.step = step + 1
            metrics = {**timing, **batch_stats, **train_stats, **sync_stats}
            if ctl.due(cfg.validation.every, steps) and ctl.dev_set is not None:
                metrics.update(ctl.validate(ctl.step))  # dev talks: quality, latency
            if ctl.due(cfg.checkpoint.every, steps):
                metrics.update(ctl.save_checkpoint(ctl.step))  # ranked by the step's validation
            history.append(ctl.log(metrics, started))
        ctl.publish()
        ok = True
    finally:
        ctl.close(ok)
    return history


@dataclass
class PendingRollout:
    """One step's rollouts, queued on the workers: its talks and the future of (trajectories, scores, timing)."""

    step: int
    talks: list[Talk]
    result: Future
    validation: bool = False


class Controller:
    """Actors, data and bookkeeping of one run."""

    def __init__(self, cfg: RunConfig, run_dir: Path, resume: bool):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        if not resume:
            prepare_run_dir(self.run_dir, "new")  # one run per run dir: a used one needs resume or clearing
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(to_yaml(cfg))
        width = None  # the model decides; the manifest check runs before any actor starts
        fs, windowed = cfg.data.frame_seconds, cfg.data.max_talk_seconds  # long talks → windows of whole sentences
        self.train_set = training_talks(Manifest(cfg.data.train_manifest, width=width, frame_seconds=fs), windowed)
        self.dev_set = (
            training_talks(Manifest(cfg.data.dev_manifest, width=width, frame_seconds=fs), windowed) if cfg.data.dev_manifest else None
        )
        self.store = CheckpointStore(self.run_dir / "checkpoints", keep_best=cfg.checkpoint.keep_best, keep_last=cfg.checkpoint.keep_last)
        # the newest checkpoint that verifies (manifest + allow-listed pickles); newer damaged ones are warned about
        self.step, sampler_state, latest = 0, SamplerState(), self.store.latest_verified().info if resume else None
        if latest is not None:
            state = json.loads((latest.path / "trainer_state.json").read_text())
            self.step, sampler_state = state["step"], SamplerState(**state["sampler"])
        self.sampler = TalkSampler(len(self.train_set), cfg.data.seed, cfg.data.shuffle, sampler_state)
        self.drawn, self.sampler_after = self.step, {self.step: replace(sampler_state)}
        tracking = cfg.logging.mlflow
        self.mlflow = MlflowRun(tracking, self.run_dir, cfg.model_dump(mode="json"), cfg.run.name, resume) if tracking.enabled else None
        self.policy_path = str(cfg.model.path)
        self.pools = make_pools(cfg)
        name = cfg.run.name
        self.learner = LearnerGroup(cfg, self.policy_path, self.pools.learner)
        self.rollout = RolloutPool(cfg, self.policy_path, self.pools.rollout, name)
        self.rewards = RewardPool(cfg, self.pools.reward, name)
        self.weight_sync = make_weight_sync(cfg, self.learner, self.rollout.workers)
        self.rollout.on_restart(lambda worker: self.weight_sync.resync(worker, self.version))
        kept = self.step if latest is not None else -1  # the steps after the checkpoint are re-run and re-logged
        cut_logs(self.run_dir, kept)
        self.metrics = MetricsLog(self.run_dir, cfg.logging.jsonl, cfg.logging.tensorboard, purge_after=kept)
        self.ray_metrics = RayMetrics(name, cfg.reward.quality) if cfg.logging.ray_metrics else None
        self.version, self._state, self.validated = 0, None, (-1, {})
        self._collector = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpo-rollout")  # one rollout at a time, in order
        self.rollout_busy: list[tuple[float, float]] = []  # wall intervals in which the rollout workers generated
        self.generating: list[threading.Event] = []  # set when a started rollout's generation has finished
        if latest is not None:
            self.learner.load(str(latest.path / "deepspeed"))
            self.sync_weights(version=self.step)

    # -- the phases -----------------------------------------------------------------------------
    def draw_talks(self) -> list[Talk]:
        """The next step's P talks; their ids go to `data_order.jsonl` under that step's number (the one
        its metrics line and checkpoint carry), so a resumed run can be audited."""
        talks = [self.train_set[i] for i in self.sampler.draw(self.cfg.algorithm.talks_per_step)]
        self.drawn += 1
        self.sampler_after[self.drawn] = replace(self.sampler.state)  # what a checkpoint of this step stores
        with (self.run_dir / "data_order.jsonl").open("a") as f:
            f.write(json.dumps({"step": self.drawn, "talks": [t.talk_id for t in talks]}) + "\n")
        return talks

    def start_rollout(
        self, talks: list[Talk], step: int, stream: bool = True, validation: bool = False, samples: int | None = None
    ) -> "PendingRollout":
        """Queue G dialogues per talk on the workers now (they sample with the weights they hold when
        these calls come up); a collector thread streams each finished trajectory to a reward actor."""
        samples = samples or self.cfg.algorithm.group_size
        seed = step_seed(self.cfg.run.seed, step, 1 if validation else 0)
        job = self.rollout.submit(talks, samples, seed, validation=validation)
        generated = threading.Event()
        self.generating.append(generated)
        return PendingRollout(step, talks, self._collector.submit(self._collect, job, talks, stream, generated), validation)

    def finish_rollout(self, pending: "PendingRollout") -> tuple[list[Trajectory], list, dict]:
        """Wait for a started rollout's trajectories and scores; each trajectory's weight version must be
        within `algorithm.max_staleness` of the learner's (validation runs after a sync: on-policy)."""
        t0 = time.perf_counter()
        trajectories, scores, timing = pending.result.result()
        bound = 0 if pending.validation else self.cfg.algorithm.max_staleness
        staleness = check_staleness(self.version, [t.weight_version for t in trajectories], bound, pending.step + 1)
        timing["time/wait_rollout"] = time.perf_counter() - t0
        timing["rollout/staleness_mean"] = sum(staleness) / max(len(staleness), 1)
        timing["rollout/staleness_max"] = float(max(staleness, default=0))
        return trajectories, scores, timing

    def staleness(self, trajectories: list[Trajectory]) -> list[int]:
        """Weight versions each trajectory is behind the learner (0: sampled with the learner's weights)."""
        return [self.version - t.weight_version for t in trajectories]

    def rollout_and_score(
        self, talks: list[Talk], step: int, stream: bool = True, validation: bool = False, samples: int | None = None
    ) -> tuple[list[Trajectory], list, dict]:
        """Generate G dialogues per talk and score them, start to finish (`stream=False` scores only
        after all rollouts finish, for the bubble benchmark)."""
        return self.finish_rollout(self.start_rollout(talks, step, stream, validation, samples))

    def _collect(self, job, talks: list[Talk], stream: bool, generated: threading.Event) -> tuple[list[Trajectory], list, dict]:
        """On the collector thread: each trajectory to a reward actor as it arrives; then all scores."""
        by_id = {t.talk_id: t for t in talks}
        trajectories: list[Trajectory] = []
        refs: list = []
        inflight = [0]

        def on_trajectory(traj: Trajectory) -> None:
            rid = f"{traj.talk_id}#{len(trajectories)}"
            trajectories.append(traj)
            if stream:
                refs.append(self.rewards.submit([rollout_record(traj, by_id[traj.talk_id], self.cfg.data, rid)]))
                inflight[0] = max(inflight[0], len(ray.wait(refs, num_returns=len(refs), timeout=0)[1]))

        try:
            run = self.rollout.collect(job, on_trajectory)
        finally:
            generated.set()
        t_gen = time.perf_counter()
        t0 = max(job.submitted, self.rollout_busy[-1][1] if self.rollout_busy else 0.0)  # workers run queued calls in order
        self.rollout_busy.append((t0, t_gen))
        if not stream:
            refs = [
                self.rewards.submit([rollout_record(t, by_id[t.talk_id], self.cfg.data, f"{t.talk_id}#{i}")])
                for i, t in enumerate(trajectories)
            ]
        scores = [s for batch in ray.get(refs) for s in batch]
        t_end = time.perf_counter()
        timing = {
            "time/rollout": t_gen - t0,
            "time/reward_tail": t_end - t_gen,
            "time/rollout_and_reward": t_end - t0,
            "queue/reward_inflight_max": float(inflight[0]),
            "rollout/retries": float(run["rollout_retries"]),
            "actors/rollout_restarts": float(self.rollout.restarts),
            "actors/reward_restarts": float(self.rewards.count_restarts()),
        }
        return trajectories, scores, timing

    def make_batch(self, trajectories: list[Trajectory], scores: list, talks: list[Talk]):
        """Group-normalised hierarchical rewards → advantages per rollout (`hpo_ray.learner.step_batch`)."""
        items, stats = make_batch(trajectories, scores, talks, self.cfg)
        if self.ray_metrics is not None:
            self.ray_metrics.observe(
                [s.quality for s in scores],
                [s.latency for s in scores],
                [float(t.num_generated) for t in trajectories],
                [float(v) for v in self.staleness(trajectories)],
            )
        return items, stats

    def update(self, batch: list) -> dict:
        t0 = time.perf_counter()
        stats = self.learner.train(batch) if batch else {}
        stats["time/train"] = time.perf_counter() - t0
        return stats

    def _weights(self) -> dict:
        if self._state is None or self._state[0] != self.version:
            self._state = (self.version, self.learner.state_dict())
        return self._state[1]

    def sync_weights(self, version: int) -> dict:
        """Every worker gets weight `version`. A worker applies it after the talks already queued on it,
        so first wait for those to be generated: that wait is the learner idling, not the sync."""
        t0 = time.perf_counter()
        for generated in self.generating:
            generated.wait()
        self.generating = [g for g in self.generating if not g.is_set()]
        t1 = time.perf_counter()
        self.version = version
        stats = self.weight_sync.sync(version, self._weights)
        stats["time/sync"] = time.perf_counter() - t1
        stats["time/wait_workers"] = t1 - t0
        return stats

    def validate(self, step: int) -> dict:
        """Greedy (or n-sample) rollouts on the fixed dev talks: raw quality and latency, never reward."""
        t0 = time.perf_counter()
        talks = [self.dev_set[i] for i in range(min(self.cfg.validation.talks, len(self.dev_set)))]
        trajs, scores, _ = self.rollout_and_score(talks, step, validation=True, samples=self.cfg.validation.samples)
        by_id = {t.talk_id: t for t in talks}
        chosen = [by_id[t.talk_id] for t in trajs]
        summary = summarize(
            scores, [t.ref_sentences for t in chosen], [t.segments for t in chosen], [t.tgt_lang for t in chosen], self.cfg.reward
        )
        self.validated = (step, summary)
        val = {f"val/{k}": v for k, v in summary.items()}
        val["time/validate"] = time.perf_counter() - t0
        (self.run_dir / "validation_report.json").write_text(json.dumps({"step": step, **summary}, indent=1) + "\n")
        return val

    def save_checkpoint(self, step: int) -> dict:
        """Learner state, the HF policy and the data position of `step`; ranked by this step's
        validation when there was one (else unranked)."""
        t0 = time.perf_counter()
        score = criterion(self.validated[1], self.cfg.checkpoint) if self.validated[0] == step else None
        tmp = self.store.begin(step)
        self.learner.save(str(tmp / "deepspeed"), {"step": step})
        export_policy(self._weights(), self.policy_path, tmp / "policy")
        sampler = self.sampler_after[step]  # not the live sampler: it may have drawn the prefetched steps already
        self.sampler_after = {k: v for k, v in self.sampler_after.items() if k >= step}
        state = {"step": step, "sampler": sampler.__dict__, "weight_version": self.version, "seed": self.cfg.run.seed}
        self.store.commit(step, state, score)
        return {"time/checkpoint": time.perf_counter() - t0}

    def due(self, every: int, steps: int) -> bool:
        """Whether a phase run every `every` steps is due after the current step (always after the last)."""
        return self.step % every == 0 or self.step == steps

    # -- bookkeeping ----------------------------------------------------------------------------
    def log(self, metrics: dict, started: float | None = None, step: int | None = None) -> dict:
        """Write a step's metrics everywhere. The idle bubble is the reward tail: time after the last
        rollout finished during which the learner still waits for scores."""
        step = self.step if step is None else step
        if started is not None:
            metrics["time/step"] = time.perf_counter() - started
            busy = sum(metrics.get(k, 0.0) for k in ("time/rollout", "time/train", "time/sync", "time/validate", "time/checkpoint"))
            metrics["time/bubble"] = metrics.get("time/reward_tail", 0.0)
            metrics["bubble_share"] = metrics["time/bubble"] / max(metrics["time/step"], 1e-9)
            metrics["time/other"] = max(0.0, metrics["time/step"] - busy - metrics["time/bubble"])
            metrics.update(self._utilisation(metrics, started))
        self.metrics.log(step, metrics)
        if self.ray_metrics is not None:
            numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            self.ray_metrics.record(numbers, trained=started is not None)
        if self.mlflow is not None:
            self.mlflow.log_metrics(step, metrics)
        return {"step": step, **metrics}

    def _utilisation(self, metrics: dict, started: float) -> dict:
        """Idle shares of the rollout pool (wall time of the step without generation) and the learner
        (without train, sync or checkpoint), and the step's trajectories and tokens per second."""
        wall, now = max(metrics["time/step"], 1e-9), time.perf_counter()
        generating = sum(max(0.0, min(b, now) - max(a, started)) for a, b in self.rollout_busy)
        del self.rollout_busy[:-64]  # in place: the collector thread appends to this list
        learning = sum(metrics.get(k, 0.0) for k in ("time/train", "time/sync", "time/checkpoint"))
        out = {"idle/rollout_share": max(0.0, 1.0 - generating / wall), "idle/learner_share": max(0.0, 1.0 - learning / wall)}
        if "rollout/sequences" in metrics:
            out["throughput/trajectories_per_s"] = metrics["rollout/sequences"] / wall
            out["throughput/tokens_per_s"] = metrics["tokens/generated"] / wall
        return out

    def publish(self) -> None:
        """The finished run's outputs to MLflow: the latest exported policy and the validation report."""
        if self.mlflow is None:
            return
        latest = self.store.latest()
        if self.cfg.logging.mlflow.log_policy and latest is not None:
            self.mlflow.log_artifact(latest.path / "policy", "policy")
        report = self.run_dir / "validation_report.json"
        if report.is_file():
            self.mlflow.log_artifact(report)

    def progress(self, steps: range):
        bar = tqdm(steps, desc="hpo", disable=not self.cfg.logging.progress, dynamic_ncols=True, initial=steps.start, total=steps.stop)
        return bar

    def close(self, ok: bool = False) -> None:
        self.rollout.stopping = True  # a rollout still being collected (a failed run's prefetch) gives up
        self.metrics.close()
        if self.mlflow is not None:
            self.mlflow.finish(ok)
        try:
            self.learner.shutdown()
            for actor in self.rollout.workers + self.rewards.actors:
                ray.kill(actor)
            self._collector.shutdown(wait=True, cancel_futures=True)
            self.pools.remove()
        except Exception:  # noqa: BLE001 - best effort on shutdown; Ray tears down the rest
            pass
