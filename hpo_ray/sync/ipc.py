"""CUDA-IPC weight sync between processes sharing a GPU (colocated learner and engine).

The sender packs buckets on the GPU and puts (manifest JSON, IPC handle) pairs into a channel; the
receiver opens each handle as a tensor on its own view of the same GPU and copies from it. The
sender keeps every bucket alive until `finish()`, which it must call only after the receivers have
applied them (an IPC handle to freed memory would read garbage).
"""

from collections.abc import Iterable, Iterator

import torch
from torch.multiprocessing.reductions import rebuild_cuda_tensor, reduce_tensor

from hpo_ray.sync.buckets import BucketManifest, WeightBucket
from hpo_ray.sync.transport import Channel, take_one_sync

_DEVICE_ARG = 6  # position of `storage_device` in rebuild_cuda_tensor's arguments


class CudaIpcBackend:
    """Buckets shared by CUDA IPC handles through a put/get channel; `device` is the receiver's
    CUDA index for the shared GPU (processes may number their visible GPUs differently)."""

    def __init__(self, channel: Channel, device: int | None = None):
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA-IPC weight sync needs CUDA (torch.cuda.is_available() is False); use sync.backend=object_store on CPU")
        self.channel = channel
        self.device = torch.cuda.current_device() if device is None else device
        self._held: list[torch.Tensor] = []

    def send(self, buckets: Iterable[WeightBucket]) -> None:
        """Share each bucket's GPU bytes: put (manifest JSON, IPC handle) into the channel."""
        for bucket in buckets:
            data = bucket.data if bucket.data.is_cuda else bucket.data.to(f"cuda:{self.device}")
            torch.cuda.current_stream(data.device).synchronize()  # packing must be done before another process reads
            self._held.append(data)
            self.channel.put((bucket.manifest.to_json(), reduce_tensor(data)))

    def receive(self) -> Iterator[WeightBucket]:
        """Open the shared buckets of one version (views of the sender's memory: apply, then drop)."""
        for text, (rebuild, args) in take_one_sync(self.channel.get):
            if rebuild is not rebuild_cuda_tensor:
                raise RuntimeError(f"expected a CUDA IPC handle, got a {getattr(rebuild, '__name__', rebuild)} handle")
            args = list(args)
            args[_DEVICE_ARG] = self.device
            yield WeightBucket(BucketManifest.from_json(text), rebuild(*args))

    def finish(self) -> None:
        """Release the shared buckets (call after every receiver has applied the sync)."""
        self._held.clear()
        torch.cuda.ipc_collect()
