"""Both ends of one sync: the sender packs a state into buckets for a transport; the receiver checks
version, order and completeness and applies (or hands out) what arrived."""

import time
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from hpo_ray.sync.buckets import (
    BucketBuffer,
    BucketCorruptError,
    SyncStats,
    WeightBucket,
    apply_bucket,
    pack_buckets,
    unpack_bucket,
)
from hpo_ray.sync.transport import WeightSyncBackend


class BucketReceiver:
    """Receiver side of a sync whose buckets arrive one call at a time (object store): checks version
    and order, and says what to load. With `whole_state` the tensors of a version are held until its
    last bucket, for engines whose partial loads are costly (vLLM's CPU build repacks whole layers)."""

    def __init__(self, whole_state: bool = False):
        self.whole_state = whole_state
        self.version: int | None = None
        self.next_index = 0
        self.pending: list[tuple[str, Tensor]] = []

    def add(self, bucket: WeightBucket, version: int, verify: bool = True) -> list[list[tuple[str, Tensor]]]:
        """Check and unpack one bucket; returns the named-tensor batches to load now (maybe none)."""
        m = bucket.manifest
        if m.version != version:
            raise BucketCorruptError(f"bucket {m.index + 1}/{m.count} is of weight version {m.version}, sent as {version}")
        if m.index == 0:
            self.version, self.next_index, self.pending = version, 0, []
        if m.version != self.version or m.index != self.next_index:
            raise BucketCorruptError(
                f"out-of-order bucket: got #{m.index} of version {m.version}, expected #{self.next_index} of version {self.version}"
            )
        named = list(unpack_bucket(bucket, verify).items())
        self.next_index += 1
        if not self.whole_state:
            return [named]
        self.pending.extend(named)
        if self.next_index < m.count:
            return []
        batch, self.pending = self.pending, []
        return [batch]


def send_state(
    state: Mapping[str, Tensor],
    backend: WeightSyncBackend,
    bucket_mb: float,
    version: int,
    checksum: bool = True,
    device: torch.device | str | None = None,
    buffer: BucketBuffer | None = None,
) -> SyncStats:
    """Sender side of one sync: pack `state` into buckets and hand them to the backend (call
    `backend.finish()` once the receivers are done). `buffer`: see `pack_buckets`."""
    stats = SyncStats(version)
    start = time.perf_counter()

    def counted() -> Iterator[WeightBucket]:
        for b in pack_buckets(state, bucket_mb, version, checksum, device, buffer):
            stats.buckets += 1
            stats.bytes += b.manifest.nbytes
            stats.names.extend(s.name for s in b.manifest.specs)
            yield b

    backend.send(counted())
    stats.seconds = time.perf_counter() - start
    return stats


def receive_into(
    target: nn.Module | Mapping[str, Tensor],
    backend: WeightSyncBackend,
    verify: bool = True,
    expected_version: int | None = None,
    strict: bool = True,
) -> SyncStats:
    """Receiver side of one sync: apply every bucket of one version; check order, version and
    (with `strict`) that every tensor of the target was updated."""
    start = time.perf_counter()
    stats: SyncStats | None = None
    for i, bucket in enumerate(backend.receive()):
        m = bucket.manifest
        if stats is None:
            if expected_version is not None and m.version != expected_version:
                raise ValueError(f"received weight version {m.version}, expected {expected_version}")
            stats = SyncStats(m.version)
        if m.version != stats.version or m.index != i:
            raise BucketCorruptError(
                f"out-of-order bucket: got #{m.index} of version {m.version}, expected #{i} of version {stats.version}"
            )
        stats.names.extend(apply_bucket(target, bucket, verify))
        stats.buckets += 1
        stats.bytes += m.nbytes
        count = m.count
    if stats is None:
        raise BucketCorruptError("the backend delivered no bucket")
    if stats.buckets != count:
        raise BucketCorruptError(f"weight version {stats.version}: got {stats.buckets} of {count} buckets")
    if strict:
        keys = target.state_dict().keys() if isinstance(target, nn.Module) else target.keys()
        missing = sorted(set(keys) - set(stats.names))
        if missing:
            raise KeyError(f"weight version {stats.version} did not update {len(missing)} tensors, e.g. {missing[:3]}")
    stats.seconds = time.perf_counter() - start
    return stats
