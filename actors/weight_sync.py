"""Learner → rollout-engine weight sync over the Ray object store (the CPU default).

Buckets are packed once (core `pack_buckets`), put in the object store once, and every worker
pulls and applies them; with `sync.verify` each worker's weight checksum is compared with the
learner's. NCCL broadcast and CUDA IPC (GPU) use the same buckets through the core backends in
`hpo_ray.learner.sync_collective`.
"""

import time

import ray

from hpo_ray.config import SyncConfig
from hpo_ray.learner.weight_sync import pack_buckets, state_checksum


class WeightMismatchError(RuntimeError):
    """A rollout worker's weights differ from the learner's after a sync."""


def object_store_sync(state: dict, workers: list, version: int, sync: SyncConfig) -> dict:
    """Send `state` to every worker; returns seconds, bytes and bytes/s of the sync."""
    start = time.perf_counter()
    refs, nbytes = [], 0
    for bucket in pack_buckets(state, sync.bucket_mb, version, checksum=True):
        refs.append(ray.put(bucket))
        nbytes += bucket.manifest.nbytes
    ray.get([w.receive_buckets.remote(refs, version, sync.verify) for w in workers])
    seconds = time.perf_counter() - start
    if sync.verify:
        expected = state_checksum(state)
        got = ray.get([w.weight_checksum.remote() for w in workers])
        bad = [i for i, c in enumerate(got) if c != expected]
        if bad:
            raise WeightMismatchError(f"rollout workers {bad} hold different weights after sync version {version}")
    return {"sync/seconds": seconds, "sync/bytes": float(nbytes), "sync/bytes_per_s": nbytes / max(seconds, 1e-9),
            "sync/buckets": float(len(refs)), "weight_version": float(version)}
