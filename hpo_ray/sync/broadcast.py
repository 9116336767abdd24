"""Broadcast weight sync over a dedicated process group: NCCL between separate GPU pools, gloo on CPU.

The group is independent of the learner's DeepSpeed group (its own TCPStore rendezvous), so the
learner's rank 0 and every engine can join it: rank `src` sends, all others receive. Per bucket it
broadcasts a small header, the manifest as JSON bytes, then the bucket bytes.
"""

from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Literal

import torch
import torch.distributed as dist

from hpo_ray.learner.distributed import rendezvous_store
from hpo_ray.sync.buckets import BucketManifest, WeightBucket

_MAGIC = 0x48504F57  # "HPOW": guards against a receiver joining a stream at the wrong place


def make_sync_group(host: str, port: int, rank: int, world: int, backend: Literal["gloo", "nccl"], timeout_s: float) -> dist.ProcessGroup:
    """A process group for weight sync only (rank 0 hosts the store at host:port)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside sync-group size {world}")
    if backend == "nccl" and (not torch.cuda.is_available() or not hasattr(dist, "ProcessGroupNCCL")):
        raise RuntimeError("the NCCL weight-sync group needs CUDA and a torch build with NCCL; use sync.backend=object_store on CPU")
    timeout = timedelta(seconds=timeout_s)
    store = rendezvous_store(host, port, rank, world, timeout)  # listens on host only, not all interfaces
    store = dist.PrefixStore("hpo-weight-sync", store)
    if backend == "nccl":
        return dist.ProcessGroupNCCL(store, rank, world)
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world, timeout)
    raise ValueError(f"unknown sync-group backend {backend!r} (gloo or nccl)")


class BroadcastBackend:
    """Weight sync by broadcast from rank `src` of `group`; buffers live on `device`
    (CUDA for NCCL, CPU for gloo)."""

    def __init__(self, group: dist.ProcessGroup, src: int, rank: int, device: torch.device | str):
        self.group, self.src, self.rank = group, src, rank
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("BroadcastBackend on a CUDA device needs CUDA")

    def send(self, buckets: Iterable[WeightBucket]) -> None:
        """Broadcast every bucket (header, manifest JSON, bytes) from this rank, which must be `src`."""
        if self.rank != self.src:
            raise RuntimeError(f"rank {self.rank} cannot send: the sync group's sender is rank {self.src}")
        for bucket in buckets:
            m = bucket.manifest
            text = torch.frombuffer(bytearray(m.to_json().encode()), dtype=torch.uint8).to(self.device)
            self._broadcast(self._header(m.version, m.index, m.count, m.nbytes, text.numel()))
            self._broadcast(text)
            self._broadcast(bucket.data.to(self.device))

    def receive(self) -> Iterator[WeightBucket]:
        """Receive the buckets of one version broadcast by `src`."""
        if self.rank == self.src:
            raise RuntimeError(f"rank {self.rank} is the sender of this sync group; it cannot receive")
        index, count = 0, 1
        while index < count:
            header = self._header(0, 0, 0, 0, 0, magic=0)
            self._broadcast(header)
            magic, version, index_got, count, nbytes, text_len = header.tolist()
            if magic != _MAGIC or index_got != index:
                raise RuntimeError(f"weight-sync stream out of step: header {header.tolist()} at bucket #{index}")
            text = torch.empty(text_len, dtype=torch.uint8, device=self.device)
            self._broadcast(text)
            manifest = BucketManifest.from_json(text.cpu().numpy().tobytes().decode())
            if (manifest.version, manifest.index, manifest.count, manifest.nbytes) != (version, index, count, nbytes):
                raise RuntimeError(f"weight-sync header {header.tolist()} disagrees with its manifest")
            data = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
            self._broadcast(data)
            yield WeightBucket(manifest, data)
            index += 1

    def finish(self) -> None:
        """Nothing held after the broadcasts complete."""

    def _header(self, version: int, index: int, count: int, nbytes: int, text_len: int, magic: int = _MAGIC) -> torch.Tensor:
        return torch.tensor([magic, version, index, count, nbytes, text_len], dtype=torch.int64, device=self.device)

    def _broadcast(self, t: torch.Tensor) -> None:
        opts = dist.BroadcastOptions()
        opts.rootRank = self.src
        opts.rootTensor = 0
        self.group.broadcast([t], opts).wait()
