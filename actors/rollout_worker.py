"""Rollout worker actor: one engine (torch or vLLM) that streams finished trajectories back."""

import ray

from hpo_ray.config import parse_config
from hpo_ray.data.manifest import Talk
from hpo_ray.env import apply_defaults
from hpo_ray.experience import talk_input


@ray.remote
class RolloutWorker:
    """Holds one copy of the policy; `generate` is a streaming generator of Trajectory objects."""

    def __init__(self, cfg: dict, model_path: str, index: int):
        apply_defaults()
        from hpo_ray.rollout.factory import make_engine

        self.cfg = parse_config(cfg)
        self.index = index
        self.engine = make_engine(self.cfg, model_path)
        from hpo_ray.sync.receiver import BucketReceiver

        self.buckets = BucketReceiver(whole_state=self.engine.loads_whole_state)

    def ready(self) -> int:
        return self.index

    def generate(self, talks: list[Talk], samples: int, seed: int, validation: bool = False):
        sampling = self.cfg.rollout.validation_sampling if validation else self.cfg.rollout.sampling
        inputs = [talk_input(t, self.cfg.data, self.cfg.rollout.max_turns) for t in talks]
        version = self.engine.weight_version  # a sync is a later call on this actor: never inside a talk
        for traj in self.engine.generate(inputs, samples, sampling, seed):
            if traj.weight_version != version:
                raise RuntimeError(f"worker {self.index}: weights changed from version {version} to {traj.weight_version} inside a talk")
            traj.stats["worker"] = self.index
            yield traj

    def receive_bucket(self, bucket, version: int, verify: bool) -> int:
        """Apply one object-store bucket of weight `version` (a sync sends them in index order); its bytes."""
        self._apply(bucket, version, verify)
        return bucket.manifest.nbytes

    def _apply(self, bucket, version: int, verify: bool) -> None:
        """Check one bucket (order, version, checksum) and load what it completes into the engine."""
        for named in self.buckets.add(bucket, version, verify):
            self.engine.load_weights(named, version)

    def join_sync_group(self, host: str, port: int, rank: int, world: int, backend: str) -> None:
        """Join the learner's weight-sync broadcast group as receiver `rank`."""
        from hpo_ray.sync.broadcast import BroadcastBackend, make_sync_group

        device = "cuda" if backend == "nccl" else "cpu"
        self.sync = BroadcastBackend(make_sync_group(host, port, rank, world, backend, 600.0), 0, rank, device)

    def receive_broadcast(self, version: int, verify: bool) -> int:
        for bucket in self.sync.receive():
            self._apply(bucket, version, verify)
        return version

    def receive_ipc(self, handles: list, version: int, verify: bool) -> int:
        """Apply a CUDA-IPC sync: open the learner's shared GPU buckets, copy them in, then let go."""
        import torch

        from hpo_ray.sync.ipc import CudaIpcBackend
        from hpo_ray.sync.transport import ListChannel

        for bucket in CudaIpcBackend(ListChannel(handles)).receive():
            self._apply(bucket, version, verify)
        torch.cuda.synchronize()  # the copies must be done before the learner frees the buckets
        return version

    def weight_checksum(self) -> str:
        from hpo_ray.sync.buckets import state_checksum

        return state_checksum(dict(self.engine.named_weights()))

    def engine_stats(self) -> dict:
        return dict(self.engine.stats)
