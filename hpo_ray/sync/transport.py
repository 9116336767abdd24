"""How weight buckets travel from the learner to rollout engines: the transport protocol and the
in-process / channel transport. Packing, checking and applying buckets live in `buckets.py`.

Transports: `InProcessBackend` (buckets as objects through a put/get channel, e.g. a `queue.Queue`
in one process), `BroadcastBackend` (`broadcast.py`, NCCL on GPU / gloo on CPU) and
`CudaIpcBackend` (`ipc.py`, colocated GPUs). The object store of a Ray run moves buckets as Ray
objects (actors/weight_sync.py).
"""

import queue
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from hpo_ray.sync.buckets import BucketManifest, WeightBucket


class Channel(Protocol):
    """A FIFO between the sender and the receiver (queue.Queue, a Ray queue, ...)."""

    def put(self, item: Any) -> None:
        """Append one item; may block while the channel is full."""

    def get(self) -> Any:
        """Remove and return the oldest item, blocking until there is one."""


class WeightSyncBackend(Protocol):
    """Moves the buckets of one weight version from the learner to one or more engines.

    Sender: `send(buckets); ...; finish()`. Receiver: `for b in receive(): ...`.
    """

    def send(self, buckets: Iterable[WeightBucket]) -> None:
        """Sender: ship every bucket of one weight version, in index order."""

    def receive(self) -> Iterator[WeightBucket]:
        """Receiver: yield the buckets of one weight version in index order; stop after the last."""

    def finish(self) -> None:
        """Sender: release what the sync still holds (e.g. shared GPU buffers) once receivers are done."""


def take_one_sync(get: Any) -> Iterator[Any]:
    """Call `get()` for items until the first item's bucket count is reached (items are buckets, or
    tuples whose first element is a manifest JSON string — see the IPC backend)."""
    first = get()
    yield first
    count = _count_of(first)
    for _ in range(count - 1):
        yield get()


def _count_of(item: Any) -> int:
    if isinstance(item, WeightBucket):
        return item.manifest.count
    return BucketManifest.from_json(item[0]).count


class ListChannel:
    """A channel over a list: what a sender put, shipped whole (e.g. IPC handles through one Ray call)."""

    def __init__(self, items: list | None = None):
        self.items: list = list(items or [])
        self._next = 0

    def put(self, item: Any) -> None:
        self.items.append(item)

    def get(self) -> Any:
        if self._next >= len(self.items):
            raise RuntimeError(f"channel exhausted after {len(self.items)} items: the sync is incomplete")
        item = self.items[self._next]
        self._next += 1
        return item


class InProcessBackend:
    """Buckets travel as objects through a channel; no copy on the way in one process."""

    def __init__(self, channel: Channel | None = None):
        self.channel: Channel = channel if channel is not None else queue.Queue()

    def send(self, buckets: Iterable[WeightBucket]) -> None:
        """Put each bucket into the channel."""
        for bucket in buckets:
            self.channel.put(bucket)

    def receive(self) -> Iterator[WeightBucket]:
        """Take the buckets of one version out of the channel."""
        yield from take_one_sync(self.channel.get)

    def finish(self) -> None:
        """Nothing held."""
