"""Learner → rollout-engine weight sync, bucketed and versioned.

- object store (the CPU default): buckets are packed once, put in the object store once, and every
  worker pulls and applies them;
- broadcast: learner rank 0 and the workers form a dedicated process group (NCCL on GPU, gloo on
  CPU) and the buckets are broadcast (`hpo_ray.learner.sync_collective`).
With `sync.verify` each worker's weight checksum is compared with the learner's after a sync.
"""

import time

import ray

from hpo_ray.config import RunConfig, SyncConfig
from hpo_ray.learner.weight_sync import pack_buckets, state_checksum


class WeightMismatchError(RuntimeError):
    """A rollout worker's weights differ from the learner's after a sync."""


def object_store_sync(state: dict, workers: list, version: int, sync: SyncConfig) -> dict:
    """Send `state` to every worker; returns seconds, bytes and bytes/s of the sync."""
    start = time.perf_counter()
    refs, nbytes = [], 0
    for bucket in pack_buckets(state, sync.bucket_mb, version, checksum=sync.checksum):
        refs.append(ray.put(bucket))
        nbytes += bucket.manifest.nbytes
    ray.get([w.receive_buckets.remote(refs, version, sync.checksum) for w in workers])
    seconds = time.perf_counter() - start
    if sync.verify:
        verify_workers(state, workers, version)
    return {"sync/seconds": seconds, "sync/bytes": float(nbytes), "sync/bytes_per_s": nbytes / max(seconds, 1e-9),
            "sync/buckets": float(len(refs)), "weight_version": float(version)}


def verify_workers(state: dict, workers: list, version: int) -> None:
    """Every worker's whole-state checksum equals the learner's."""
    expected = state_checksum(state)
    got = ray.get([w.weight_checksum.remote() for w in workers])
    bad = [i for i, c in enumerate(got) if c != expected]
    if bad:
        raise WeightMismatchError(f"rollout workers {bad} hold different weights after sync version {version}")


class BroadcastSync:
    """Weight sync by broadcast from learner rank 0 over its own group (re-formed after a worker restart)."""

    def __init__(self, cfg: RunConfig, learner, workers: list):
        self.cfg, self.learner, self.workers = cfg, learner, workers
        self.backend = "nccl" if cfg.sync.backend == "nccl" or (cfg.learner.device == "cuda") else "gloo"
        self.formed = False

    def form(self) -> None:
        host, port = self.learner.sync_address()
        world = 1 + len(self.workers)
        ray.get(self.learner.join_sync_group(host, port, world, self.backend)
                + [w.join_sync_group.remote(host, port, i + 1, world, self.backend) for i, w in enumerate(self.workers)])
        self.formed = True

    def sync(self, version: int, state_for_verify=None) -> dict:
        if not self.formed:
            self.form()
        start = time.perf_counter()
        sent = ray.get(self.learner.broadcast_weights(version, self.cfg.sync.bucket_mb)
                       + [w.receive_broadcast.remote(version, self.cfg.sync.checksum) for w in self.workers])[0]
        seconds = time.perf_counter() - start
        if self.cfg.sync.verify and state_for_verify is not None:
            verify_workers(state_for_verify(), self.workers, version)
        return {"sync/seconds": seconds, "sync/bytes": float(sent["bytes"]), "sync/bytes_per_s": sent["bytes"] / max(seconds, 1e-9),
                "sync/buckets": float(sent["buckets"]), "weight_version": float(version)}
