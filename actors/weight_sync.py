"""Learner → rollout-engine weight sync on Ray: one `WeightSync` interface, its transport chosen once.

- object store (the CPU default): learner rank 0 yields each bucket's tensors unpacked from a
  streaming generator (Ray's serializer writes them straight into shared memory: the only copy on
  the sender) and every worker is asked to apply each bucket as soon as its ref arrives, so workers
  apply bucket k while bucket k+1 is put;
- broadcast: learner rank 0 and the workers form a dedicated process group (NCCL on GPU, gloo on
  CPU) and the buckets are broadcast (`hpo_ray.sync.broadcast`);
- CUDA IPC (colocated GPUs): learner rank 0 packs the buckets on its GPU and hands out IPC handles;
  the workers on that GPU copy from the shared memory, then the learner frees it.
A restarted worker always gets the current weights through the object store. With `sync.verify`
each worker's weight checksum is compared with the learner's after a sync.
"""

import json
import time
from collections.abc import Iterable, Iterator

import ray

from hpo_ray.config import RunConfig, SyncConfig
from hpo_ray.sync.buckets import pack_buckets, state_checksum
from hpo_ray.sync.choice import choose_sync


class WeightMismatchError(RuntimeError):
    """A rollout worker's weights differ from the learner's after a sync."""


def put_buckets(state: dict, version: int, sync: SyncConfig) -> Iterator:
    """Object refs of `state`'s unpacked buckets, each put as it is packed (a sender in this process)."""
    for bucket in pack_buckets(state, sync.bucket_mb, version, checksum=sync.checksum, parts=True):
        yield ray.put(bucket)


def object_store_sync(bucket_refs: Iterable, workers: list, version: int, sync: SyncConfig, state_for_verify=None) -> dict:
    """Have every worker apply each bucket as soon as its ref arrives (from `put_buckets` or the
    learner's `stream_weights`); returns seconds, bytes and bytes/s of the sync."""
    start = time.perf_counter()
    applied = [[w.receive_bucket.remote(ref, version, sync.checksum) for w in workers] for ref in bucket_refs]
    sizes = ray.get([calls[0] for calls in applied])  # worker 0's applied bytes per bucket
    ray.get([call for calls in applied for call in calls[1:]])
    return finish_sync(start, sum(sizes), len(applied), version, sync, workers, state_for_verify)


def finish_sync(start: float, nbytes: float, buckets: int, version: int, sync: SyncConfig, workers: list, state_for_verify=None) -> dict:
    """Verify the workers when `sync.verify`; the sync's metrics (seconds up to the verify)."""
    seconds = time.perf_counter() - start
    if sync.verify and state_for_verify is not None:
        verify_workers(state_for_verify(), workers, version)
    return {
        "sync/seconds": seconds,
        "sync/bytes": float(nbytes),
        "sync/bytes_per_s": nbytes / max(seconds, 1e-9),
        "sync/buckets": float(buckets),
        "weight_version": float(version),
    }


def verify_workers(state: dict, workers: list, version: int) -> None:
    """Every worker's whole-state checksum equals the learner's."""
    expected = state_checksum(state)
    got = ray.get([w.weight_checksum.remote() for w in workers])
    bad = [i for i, c in enumerate(got) if c != expected]
    if bad:
        raise WeightMismatchError(f"rollout workers {bad} hold different weights after sync version {version}")


class WeightSync:
    """Moves the learner group's weights to the rollout workers: `sync` after each update, `resync`
    one restarted worker. Subclasses differ only in the transport of `sync`."""

    def __init__(self, cfg: RunConfig, learner, workers: list):
        self.cfg, self.learner, self.workers = cfg, learner, workers

    def sync(self, version: int, state_for_verify=None) -> dict:
        """Every worker gets weight `version`; the sync's metrics (`finish_sync`)."""
        sync = self.cfg.sync
        return object_store_sync(
            self.learner.stream_weights(version, sync.bucket_mb, sync.checksum), self.workers, version, sync, state_for_verify
        )

    def resync(self, worker, version: int) -> None:
        """A restarted worker gets the current weights streamed from the learner via the object store."""
        sync = self.cfg.sync
        object_store_sync(self.learner.stream_weights(version, sync.bucket_mb, sync.checksum), [worker], version, sync)


class BroadcastSync(WeightSync):
    """Weight sync by broadcast from learner rank 0 over its own group (re-formed after a worker restart)."""

    def __init__(self, cfg: RunConfig, learner, workers: list):
        super().__init__(cfg, learner, workers)
        self.group = choose_sync(cfg).group or "gloo"
        self.formed = False

    def form(self) -> None:
        host, port = self.learner.sync_address()
        world = 1 + len(self.workers)
        ray.get(
            self.learner.join_sync_group(host, port, world, self.group)
            + [w.join_sync_group.remote(host, port, i + 1, world, self.group) for i, w in enumerate(self.workers)]
        )
        self.formed = True

    def resync(self, worker, version: int) -> None:
        """Object-store resync, then form the group anew before the next sync."""
        super().resync(worker, version)
        self.formed = False

    def sync(self, version: int, state_for_verify=None) -> dict:
        if not self.formed:
            self.form()
        start = time.perf_counter()
        sent = ray.get(
            self.learner.broadcast_weights(version, self.cfg.sync.bucket_mb)
            + [w.receive_broadcast.remote(version, self.cfg.sync.checksum) for w in self.workers]
        )[0]
        return finish_sync(start, sent["bytes"], sent["buckets"], version, self.cfg.sync, self.workers, state_for_verify)


class IpcSync(WeightSync):
    """Weight sync by CUDA IPC between learner rank 0 and the rollout workers colocated on its GPU."""

    def sync(self, version: int, state_for_verify=None) -> dict:
        start = time.perf_counter()
        handles = ray.get(self.learner.share_weights_ipc(version, self.cfg.sync.bucket_mb))[0]
        try:
            ray.get([w.receive_ipc.remote(handles, version, self.cfg.sync.checksum) for w in self.workers])
        finally:
            ray.get(self.learner.release_ipc())
        nbytes = sum(json.loads(text)["nbytes"] for text, _ in handles)
        return finish_sync(start, nbytes, len(handles), version, self.cfg.sync, self.workers, state_for_verify)


TRANSPORTS: dict[str, type[WeightSync]] = {"object_store": WeightSync, "broadcast": BroadcastSync, "cuda_ipc": IpcSync}


def make_weight_sync(cfg: RunConfig, learner, workers: list) -> WeightSync:
    """The run's weight sync, its transport chosen once from `sync.backend` (`choose_sync`)."""
    return TRANSPORTS[choose_sync(cfg).transport](cfg, learner, workers)
