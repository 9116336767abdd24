"""The HPO training job on Ray. `train()` is the algorithm; `Controller` holds the actors it drives.

One step: draw P talks → G rollouts each on the rollout workers, every finished trajectory scored
by a reward actor at once (scoring overlaps generation) → group-normalised hierarchical rewards →
advantages → learner update → weight sync. Validation and checkpoints every k steps.
"""

import json
import time
from pathlib import Path

import numpy as np
import ray
from tqdm import tqdm

from hpo_ray.config import RunConfig, sync_backend, to_yaml
from hpo_ray.data.manifest import Manifest, Talk
from hpo_ray.data.sampler import SamplerState, TalkSampler, step_seed
from hpo_ray.data.windows import training_talks
from hpo_ray.evaluation import criterion, summarize
from hpo_ray.experience import rollout_record, sequence_item
from hpo_ray.learner.advantages import dynamic_sampling_keep, group_advantages
from hpo_ray.learner.checkpoint import CheckpointStore
from hpo_ray.metrics import MetricsLog
from hpo_ray.model.build import export_policy
from hpo_ray.reward.group import group_rewards
from hpo_ray.rollout.protocol import Trajectory

from actors.learner_group import LearnerGroup
from actors.placement import make_pools
from actors.ray_metrics import RayMetrics
from actors.reward_pool import RewardPool
from actors.rollout_pool import RolloutPool
from actors.weight_sync import BroadcastSync, IpcSync, object_store_sync


def train(cfg: RunConfig, run_dir: Path, steps: int, resume: bool = False) -> list[dict]:
    """Run HPO steps until `steps` are done; returns each step's metrics."""
    ctl = Controller(cfg, run_dir, resume)
    history = []
    try:
        if ctl.step == 0 and cfg.validation.at_start:
            ctl.validate_and_checkpoint(0, save=False)
        for step in ctl.progress(range(ctl.step, steps)):
            started = time.perf_counter()
            talks = ctl.draw_talks()                                                # P talks
            trajectories, scores, timing = ctl.rollout_and_score(talks, step)       # G rollouts each, scored as they finish
            batch, batch_stats = ctl.make_batch(trajectories, scores, talks)        # hierarchical reward → advantages
            train_stats = ctl.update(batch)                                         # clipped PG + IS + KL to SFT
            sync_stats = ctl.sync_weights(version=step + 1)                         # learner → rollout engines
            ctl.step = step + 1
            metrics = {**timing, **batch_stats, **train_stats, **sync_stats}
            if ctl.step % cfg.validation.every == 0 or ctl.step == steps:
                save = ctl.step % cfg.checkpoint.every == 0 or ctl.step == steps
                metrics.update(ctl.validate_and_checkpoint(ctl.step, save=save))
            history.append(ctl.log(metrics, started))
    finally:
        ctl.close()
    return history


class Controller:
    """Actors, data and bookkeeping of one run."""

    def __init__(self, cfg: RunConfig, run_dir: Path, resume: bool):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(to_yaml(cfg))
        width = None  # the model decides; the manifest check runs before any actor starts
        fs, windowed = cfg.data.frame_seconds, cfg.data.max_talk_seconds  # long talks → windows of whole sentences
        self.train_set = training_talks(Manifest(cfg.data.train_manifest, width=width, frame_seconds=fs), windowed)
        self.dev_set = training_talks(Manifest(cfg.data.dev_manifest, width=width, frame_seconds=fs), windowed) \
            if cfg.data.dev_manifest else None
        self.store = CheckpointStore(self.run_dir / "checkpoints", keep_best=cfg.checkpoint.keep_best)
        self.step, sampler_state, latest = 0, SamplerState(), self.store.latest() if resume else None
        if latest is not None:
            state = json.loads((latest.path / "trainer_state.json").read_text())
            self.step, sampler_state = state["step"], SamplerState(**state["sampler"])
        self.sampler = TalkSampler(len(self.train_set), cfg.data.seed, cfg.data.shuffle, sampler_state)
        self.policy_path = str(cfg.model.path)
        self.pools = make_pools(cfg)
        name = cfg.run.name
        self.learner = LearnerGroup(cfg, self.policy_path, self.pools.learner)
        self.rollout = RolloutPool(cfg, self.policy_path, self.pools.rollout, name)
        self.rewards = RewardPool(cfg, self.pools.reward, name)
        direct = {"broadcast": BroadcastSync, "cuda_ipc": IpcSync}.get(sync_backend(cfg))  # None: object store
        self.direct_sync = direct(cfg, self.learner, self.rollout.workers) if direct is not None else None
        self.rollout.on_restart(self._resync_restarted)
        self.metrics = MetricsLog(self.run_dir, cfg.logging.jsonl, cfg.logging.tensorboard)
        self.ray_metrics = RayMetrics(name) if cfg.logging.ray_metrics else None
        self.version, self._state = 0, None
        if latest is not None:
            self.learner.load(str(latest.path / "deepspeed"))
            self.sync_weights(version=self.step)

    # -- the phases -----------------------------------------------------------------------------
    def draw_talks(self) -> list[Talk]:
        """The step's P talks; their ids go to `data_order.jsonl` so a resumed run can be audited."""
        talks = [self.train_set[i] for i in self.sampler.draw(self.cfg.algorithm.talks_per_step)]
        with (self.run_dir / "data_order.jsonl").open("a") as f:
            f.write(json.dumps({"step": self.step, "talks": [t.talk_id for t in talks]}) + "\n")
        return talks

    def rollout_and_score(self, talks: list[Talk], step: int, stream: bool = True, validation: bool = False,
                          samples: int | None = None) -> tuple[list[Trajectory], list, dict]:
        """Generate G dialogues per talk; each finished trajectory goes to a reward actor at once
        (`stream=False` scores only after all rollouts finish, for the bubble benchmark)."""
        by_id = {t.talk_id: t for t in talks}
        samples = samples or self.cfg.algorithm.group_size
        trajectories: list[Trajectory] = []
        refs: list = []
        inflight = [0]
        t0 = time.perf_counter()

        def on_trajectory(traj: Trajectory) -> None:
            rid = f"{traj.talk_id}#{len(trajectories)}"
            trajectories.append(traj)
            if stream:
                refs.append(self.rewards.submit([rollout_record(traj, by_id[traj.talk_id], self.cfg.data, rid)]))
                inflight[0] = max(inflight[0], len(ray.wait(refs, num_returns=len(refs), timeout=0)[1]))

        seed = step_seed(self.cfg.run.seed, step, 1 if validation else 0)
        run = self.rollout.run(talks, samples, seed, on_trajectory, validation=validation)
        t_gen = time.perf_counter()
        if not stream:
            refs = [self.rewards.submit([rollout_record(t, by_id[t.talk_id], self.cfg.data, f"{t.talk_id}#{i}")])
                    for i, t in enumerate(trajectories)]
        scores = [s for batch in ray.get(refs) for s in batch]
        t_end = time.perf_counter()
        timing = {"time/rollout": t_gen - t0, "time/reward_tail": t_end - t_gen, "time/rollout_and_reward": t_end - t0,
                  "queue/reward_inflight_max": float(inflight[0]), "rollout/retries": float(run["rollout_retries"]),
                  "actors/rollout_restarts": float(self.rollout.restarts)}
        return trajectories, scores, timing

    def make_batch(self, trajectories: list[Trajectory], scores: list, talks: list[Talk]):
        """Group-normalised hierarchical rewards → advantages per rollout. Truncated rollouts stay out
        of the normalisation and are dropped, or given `algorithm.truncated_reward` when set."""
        algo = self.cfg.algorithm
        by_id = {t.talk_id: t for t in talks}
        finished = [i for i, t in enumerate(trajectories) if not t.truncated]
        kept_scores = [scores[i] for i in finished]
        rewards = group_rewards(kept_scores, self.cfg.reward) if kept_scores else []
        adv = group_advantages(rewards, [s.group for s in kept_scores], algo.baseline).tolist() if finished else []
        keep = list(range(len(finished)))
        if algo.dynamic_sampling and finished:
            keep = dynamic_sampling_keep([s.quality for s in kept_scores], [s.group for s in kept_scores])
        items = [sequence_item(trajectories[finished[j]], by_id[trajectories[finished[j]].talk_id], adv[j]) for j in keep]
        if algo.truncated_reward is not None:
            items += [sequence_item(t, by_id[t.talk_id], algo.truncated_reward) for t in trajectories if t.truncated]
        if not items and not finished:
            raise RuntimeError(f"all {len(trajectories)} rollouts hit rollout.max_total_tokens={self.cfg.rollout.max_total_tokens} "
                               "and were truncated: nothing to learn from (set data.max_talk_seconds, or raise the cap)")
        q = np.array([s.quality for s in scores])
        stats = {
            "reward/mean": float(np.mean(rewards)) if len(rewards) else 0.0, "reward/std": float(np.std(rewards)) if len(rewards) else 0.0,
            "reward/quality": float(q.mean()), "reward/latency": float(np.mean([s.latency for s in scores])),
            "reward/hinged_latency": float(np.mean([s.hinged_latency for s in scores])),
            "reward/stream_laal": float(np.nanmean([np.nan if s.stream_laal is None else s.stream_laal for s in scores] or [np.nan])),
            "rollout/truncated": float(len(trajectories) - len(finished)), "rollout/sequences": float(len(trajectories)),
            "batch/sequences": float(len(items)),
            "tokens/generated": float(sum(t.num_generated for t in trajectories)),
            "tokens/total": float(sum(len(t.input_ids) for t in trajectories)),
            "rollout/weight_version_min": float(min(t.weight_version for t in trajectories)),
        }
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

    def _resync_restarted(self, worker) -> None:
        """A restarted worker gets the current weights streamed from the learner via the object store; a
        broadcast group is re-formed."""
        sync = self.cfg.sync
        object_store_sync(self.learner.stream_weights(self.version, sync.bucket_mb, sync.checksum), [worker], self.version, sync)
        if self.direct_sync is not None:
            self.direct_sync.reset()

    def sync_weights(self, version: int) -> dict:
        t0 = time.perf_counter()
        self.version = version
        if self.direct_sync is not None:
            stats = self.direct_sync.sync(version, self._weights)
        else:
            sync = self.cfg.sync
            stats = object_store_sync(self.learner.stream_weights(version, sync.bucket_mb, sync.checksum),
                                      self.rollout.workers, version, sync, self._weights)
        stats["time/sync"] = time.perf_counter() - t0
        return stats

    def validate_and_checkpoint(self, step: int, save: bool) -> dict:
        """Greedy (or n-sample) rollouts on the fixed dev talks: raw quality and latency, never reward."""
        if self.dev_set is None:
            return {}
        t0 = time.perf_counter()
        talks = [self.dev_set[i] for i in range(min(self.cfg.validation.talks, len(self.dev_set)))]
        trajs, scores, _ = self.rollout_and_score(talks, step, validation=True, samples=self.cfg.validation.samples)
        by_id = {t.talk_id: t for t in talks}
        chosen = [by_id[t.talk_id] for t in trajs]
        summary = summarize(scores, [t.ref_sentences for t in chosen], [t.segments for t in chosen],
                            [t.tgt_lang for t in chosen], self.cfg.reward)
        val = {f"val/{k}": v for k, v in summary.items()}
        val["time/validate"] = time.perf_counter() - t0
        if save:
            self.save_checkpoint(step, criterion(summary, self.cfg.checkpoint))
        if step == 0:
            self.log(val, step=0)
        return val

    def save_checkpoint(self, step: int, score: float | None) -> Path:
        tmp = self.store.begin(step)
        self.learner.save(str(tmp / "deepspeed"), {"step": step})
        export_policy(self._weights(), self.policy_path, tmp / "policy")
        state = {"step": step, "sampler": self.sampler.state.__dict__, "weight_version": self.version,
                 "seed": self.cfg.run.seed}
        return self.store.commit(step, state, score)

    # -- bookkeeping ----------------------------------------------------------------------------
    def log(self, metrics: dict, started: float | None = None, step: int | None = None) -> dict:
        """Write a step's metrics everywhere. The idle bubble is the reward tail: time after the last
        rollout finished during which the learner still waits for scores."""
        step = self.step if step is None else step
        if started is not None:
            metrics["time/step"] = time.perf_counter() - started
            busy = sum(metrics.get(k, 0.0) for k in ("time/rollout", "time/train", "time/sync", "time/validate"))
            metrics["time/bubble"] = metrics.get("time/reward_tail", 0.0)
            metrics["bubble_share"] = metrics["time/bubble"] / max(metrics["time/step"], 1e-9)
            metrics["time/other"] = max(0.0, metrics["time/step"] - busy - metrics["time/bubble"])
        self.metrics.log(step, metrics)
        if self.ray_metrics is not None:
            self.ray_metrics.set({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        return {"step": step, **metrics}

    def progress(self, steps: range):
        bar = tqdm(steps, desc="hpo", disable=not self.cfg.logging.progress, dynamic_ncols=True, initial=steps.start,
                   total=steps.stop)
        return bar

    def close(self) -> None:
        self.metrics.close()
        try:
            self.learner.shutdown()
            for actor in self.rollout.workers + self.rewards.actors:
                ray.kill(actor)
            self.pools.remove()
        except Exception:  # noqa: BLE001 - best effort on shutdown; Ray tears down the rest
            pass
