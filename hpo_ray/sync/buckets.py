"""The weight-sync bucket format: learner state dict → contiguous, versioned, checksummed buckets.

A bucket is one contiguous uint8 tensor holding several named tensors at 16-byte-aligned offsets,
plus a manifest (names, dtypes, shapes, offsets, weight version, position in the sync) and a
checksum of its bytes. A *parts* bucket carries the same manifest but its tensors as they are (no
packing copy): for transports that copy anyway, such as the Ray object store, whose serializer
writes each tensor straight into shared memory. Transports (`transport.py`, `broadcast.py`,
`ipc.py`) only move buckets; this module packs, checks and applies them. A bucket in host memory
is checksummed with xxh3-128 (`xxh3:` prefix; about 3× faster than the torch sums on CPU), one on a
GPU with the torch-native sums (no host copy); the receiver recomputes whichever the manifest names.
`state_checksum`, which compares an engine's weights with the learner's across devices, stays
torch-native. Neither is cryptographic: they detect corruption and truncation.
"""

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
import xxhash
from torch import Tensor, nn

ALIGN = 16  # byte alignment of every tensor inside a bucket (any dtype can be viewed in place)
_BLOCK = 512  # int64 words per checksum block
_MASK = (1 << 64) - 1
XXH3 = "xxh3:"  # prefix of a host-memory bucket's checksum


class BucketCorruptError(ValueError):
    """A received bucket's bytes do not match its checksum (or its manifest does not fit its data)."""


@dataclass(frozen=True)
class TensorSpec:
    """Where one named tensor lives inside a bucket."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * self.dtype.itemsize


@dataclass(frozen=True)
class BucketManifest:
    """Everything about a bucket except its bytes: weight version, position in the sync, layout, checksum."""

    version: int
    index: int
    count: int
    nbytes: int
    specs: tuple[TensorSpec, ...]
    checksum: str | None = None
    parts: bool = False

    def to_json(self) -> str:
        """The manifest as JSON (no pickle on the wire)."""
        return json.dumps(
            {
                "version": self.version,
                "index": self.index,
                "count": self.count,
                "nbytes": self.nbytes,
                "checksum": self.checksum,
                "parts": self.parts,
                "tensors": [[s.name, str(s.dtype).removeprefix("torch."), list(s.shape), s.offset] for s in self.specs],
            }
        )

    @staticmethod
    def from_json(text: str) -> "BucketManifest":
        """Parse and validate a manifest produced by `to_json`."""
        try:
            d = json.loads(text)
            specs = tuple(TensorSpec(str(n), _dtype(dt), tuple(int(x) for x in shape), int(off)) for n, dt, shape, off in d["tensors"])
            return BucketManifest(
                int(d["version"]), int(d["index"]), int(d["count"]), int(d["nbytes"]), specs, d["checksum"], bool(d.get("parts", False))
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BucketCorruptError(f"unreadable bucket manifest: {exc}") from None


@dataclass(frozen=True)
class WeightBucket:
    """A manifest and its bytes: one 1-D uint8 tensor on any device, or (parts bucket) one tensor per spec."""

    manifest: BucketManifest
    data: Tensor | tuple[Tensor, ...]


@dataclass
class SyncStats:
    """What one sync moved: version, buckets, bytes, wall seconds and the tensor names."""

    version: int
    buckets: int = 0
    bytes: int = 0
    seconds: float = 0.0
    names: list[str] = field(default_factory=list)

    @property
    def gbytes_per_s(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else float("inf")


def plan_buckets(shapes: Iterable[tuple[str, torch.Size | tuple[int, ...], torch.dtype]], bucket_bytes: int) -> list[list[TensorSpec]]:
    """Greedy, order-preserving layout: tensors fill a bucket up to `bucket_bytes`; a larger tensor gets its own."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket size must be > 0 bytes, got {bucket_bytes}")
    plans: list[list[TensorSpec]] = []
    current: list[TensorSpec] = []
    offset = 0
    seen: set[str] = set()
    for name, shape, dtype in shapes:
        if name in seen:
            raise ValueError(f"tensor name {name!r} appears twice in the state to sync")
        seen.add(name)
        spec = TensorSpec(name, dtype, tuple(int(d) for d in shape), 0)
        if current and offset + spec.nbytes > bucket_bytes:
            plans.append(current)
            current, offset = [], 0
        current.append(TensorSpec(name, dtype, spec.shape, offset))
        offset = _align(offset + spec.nbytes)
    if current:
        plans.append(current)
    return plans


class BucketBuffer:
    """One reusable byte buffer for packing: fresh CPU memory costs page faults (filling it is ~4×
    slower than refilling warm memory), so a sender that syncs repeatedly keeps one of these."""

    def __init__(self) -> None:
        self._data: Tensor | None = None

    def take(self, nbytes: int, device: torch.device) -> Tensor:
        """The first `nbytes` bytes of the buffer on `device`, grown when too small."""
        if self._data is None or self._data.device != device or self._data.numel() < nbytes:
            self._data = torch.empty(nbytes, dtype=torch.uint8, device=device)
        return self._data[:nbytes]


def pack_buckets(
    state: Mapping[str, Tensor],
    bucket_mb: float,
    version: int,
    checksum: bool = True,
    device: torch.device | str | None = None,
    buffer: BucketBuffer | None = None,
    parts: bool = False,
) -> Iterator[WeightBucket]:
    """Yield the buckets of `state` one at a time, allocated on `device` (default: the first tensor's).

    With a `buffer`, every bucket is packed into it: a bucket is then valid only until the next one
    is requested, which suits backends that copy or transmit it at once (object-store put,
    broadcast) but not ones that hold it (a queue, CUDA IPC). With `parts`, nothing is copied: each
    bucket holds the state's own (detached, contiguous) tensors, valid while the state is unchanged.
    """
    if not state:
        raise ValueError("nothing to sync: the state dict is empty")
    plans = plan_buckets(((n, t.shape, t.dtype) for n, t in state.items()), int(bucket_mb * 2**20))
    dev = torch.device(device) if device is not None else next(iter(state.values())).device
    for index, specs in enumerate(plans):
        nbytes = _align(specs[-1].offset + specs[-1].nbytes)
        if parts:
            tensors = tuple(_contiguous(state[s.name]) for s in specs)
            yield WeightBucket(
                BucketManifest(
                    version, index, len(plans), nbytes, tuple(specs), bucket_checksum(tensors, parts=True) if checksum else None, parts=True
                ),
                tensors,
            )
            continue
        data = buffer.take(nbytes, dev) if buffer is not None else torch.empty(nbytes, dtype=torch.uint8, device=dev)
        for s in specs:
            end = s.offset + s.nbytes
            data[s.offset : end].copy_(_bytes_of(state[s.name]))
            data[end : _align(end)].zero_()
        manifest = BucketManifest(
            version, index, len(plans), nbytes, tuple(specs), bucket_checksum((data,), parts=False) if checksum else None
        )
        yield WeightBucket(manifest, data)


def unpack_bucket(bucket: WeightBucket, verify: bool = True) -> dict[str, Tensor]:
    """Named views into the bucket's bytes; with `verify`, check the checksum first."""
    m, data = bucket.manifest, bucket.data
    where = f"bucket {m.index + 1}/{m.count} of weight version {m.version}"
    if m.parts:
        return _unpack_parts(m, data, verify, where)
    if not isinstance(data, Tensor):
        raise BucketCorruptError(f"{where}: expected one uint8 tensor, got {type(data).__name__}")
    if data.dtype != torch.uint8 or data.dim() != 1 or data.numel() != m.nbytes:
        raise BucketCorruptError(f"{where}: expected {m.nbytes} uint8 bytes, got {data.dtype} {tuple(data.shape)}")
    if verify:
        _check_sum(m, (data,), where)
    out = {}
    for s in m.specs:
        if s.offset % ALIGN or s.offset + s.nbytes > m.nbytes:
            raise BucketCorruptError(f"{where}: tensor {s.name!r} at offset {s.offset} (+{s.nbytes} bytes) does not fit")
        out[s.name] = data[s.offset : s.offset + s.nbytes].view(s.dtype).view(s.shape)
    return out


def _unpack_parts(m: BucketManifest, data, verify: bool, where: str) -> dict[str, Tensor]:
    """Named tensors of a parts bucket, each checked against its spec (and the checksum with `verify`)."""
    if not isinstance(data, (tuple, list)) or len(data) != len(m.specs):
        raise BucketCorruptError(
            f"{where}: expected {len(m.specs)} tensors, got {type(data).__name__}"
            + (f" of {len(data)}" if isinstance(data, (tuple, list)) else "")
        )
    for s, t in zip(m.specs, data):
        if not isinstance(t, Tensor) or t.dtype != s.dtype or tuple(t.shape) != s.shape:
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise BucketCorruptError(f"{where}: tensor {s.name!r} should be {s.dtype} {s.shape}, got {got}")
    if verify:
        _check_sum(m, tuple(data), where)
    return {s.name: t for s, t in zip(m.specs, data)}


def _check_sum(m: BucketManifest, tensors: tuple[Tensor, ...], where: str) -> None:
    """Raise unless the manifest carries a checksum and the bucket's bytes reproduce it (with the
    algorithm it names: xxh3 over host bytes, else the torch-native sums)."""
    if m.checksum is None:
        raise BucketCorruptError(f"{where} carries no checksum to verify (packed with checksum=False)")
    if m.checksum.startswith(XXH3):
        got = _xxh3(tuple(t.cpu() for t in tensors))
    else:
        got = bytes_checksum(tensors[0]) if not m.parts else parts_checksum(tensors)
    if got != m.checksum:
        raise BucketCorruptError(f"{where} is corrupted: checksum {got} != expected {m.checksum}")


def apply_bucket(target: nn.Module | Mapping[str, Tensor], bucket: WeightBucket, verify: bool = True) -> list[str]:
    """Copy a bucket's tensors into a model's (or state dict's) tensors in place; return the names."""
    state = target.state_dict() if isinstance(target, nn.Module) else target
    m = bucket.manifest
    names = []
    with torch.no_grad():
        for name, src in unpack_bucket(bucket, verify).items():
            dst = state.get(name)
            if dst is None:
                raise KeyError(
                    f"weight version {m.version}: tensor {name!r} is not in the target ({len(state)} tensors, e.g. {sorted(state)[:3]})"
                )
            if dst.shape != src.shape:
                raise ValueError(f"weight version {m.version}: tensor {name!r} has shape {tuple(src.shape)}, target has {tuple(dst.shape)}")
            dst.copy_(src)
            names.append(name)
    return names


def bytes_checksum(data: Tensor) -> str:
    """Checksum of a tensor's bytes, identical on CPU and GPU: byte count plus three sums mod 2⁶⁴ of
    the int64 words (plain, block-position weighted, in-block-position weighted)."""
    words, tail = _words(data)
    n_rows = words.numel() // _BLOCK
    main = words[: n_rows * _BLOCK].view(n_rows, _BLOCK)
    rows = main.sum(1)
    cols = main.sum(0)
    rest = torch.cat([words[n_rows * _BLOCK :], tail])  # < _BLOCK + 1 words: the last, partial row
    k = torch.arange(1, 2 * _BLOCK + 1, 2, dtype=torch.int64, device=words.device)
    j = torch.arange(1, 2 * n_rows + 1, 2, dtype=torch.int64, device=words.device)
    s1 = rows.sum() + rest.sum()
    s2 = (rows * j).sum() + rest.sum() * (2 * n_rows + 1)
    s3 = (cols * k).sum() + (rest * k[: rest.numel()]).sum()
    a, b, c = (v & _MASK for v in torch.stack([s1, s2, s3]).tolist())
    return f"{data.numel() * data.element_size():x}:{a:016x}{b:016x}{c:016x}"


def bucket_checksum(tensors: tuple[Tensor, ...], parts: bool) -> str:
    """Checksum of a bucket's bytes (its one packed tensor, or a parts bucket's tensors in order):
    xxh3-128 when all are in host memory, else the torch-native sums of `bytes_checksum`."""
    if all(t.device.type == "cpu" for t in tensors):
        return _xxh3(tensors)
    return parts_checksum(tensors) if parts else bytes_checksum(tensors[0])


def _xxh3(tensors: tuple[Tensor, ...]) -> str:
    """`xxh3:` + byte count + xxh3-128 of the tensors' bytes in order (host memory, read in place)."""
    h, n = xxhash.xxh3_128(), 0
    for t in tensors:
        b = _bytes_of(t)
        if b.numel():
            h.update(memoryview(b.numpy()))
            n += b.numel()
    return f"{XXH3}{n:x}:{h.hexdigest()}"


def parts_checksum(tensors: Iterable[Tensor]) -> str:
    """Checksum of a parts bucket: `bytes_checksum` over the tensors' own checksums, in order."""
    text = "\n".join(bytes_checksum(t) for t in tensors)
    return bytes_checksum(torch.frombuffer(bytearray(text.encode() or b"\0"), dtype=torch.uint8))


def state_checksum(target: nn.Module | Mapping[str, Tensor], names: Iterable[str] | None = None) -> str:
    """One checksum over names, dtypes, shapes and bytes of a state (optionally only `names`), to
    compare an engine's weights with the learner's after a sync."""
    state = target.state_dict() if isinstance(target, nn.Module) else target
    keys = sorted(state) if names is None else sorted(names)
    missing = [k for k in keys if k not in state]
    if missing:
        raise KeyError(f"state has no tensor {missing[0]!r} ({len(missing)} missing)")
    lines = [f"{k}|{str(state[k].dtype)}|{tuple(state[k].shape)}|{bytes_checksum(state[k])}" for k in keys]
    return bytes_checksum(torch.frombuffer(bytearray("\n".join(lines).encode() or b"\0"), dtype=torch.uint8))


def _words(data: Tensor) -> tuple[Tensor, Tensor]:
    """The tensor's bytes as int64 words (a view when aligned) plus a zero-padded tail word (maybe empty)."""
    b = data.detach().reshape(-1)
    if not b.is_contiguous():
        b = b.contiguous()
    if b.dtype != torch.uint8:
        b = b.view(torch.uint8) if b.numel() else torch.empty(0, dtype=torch.uint8, device=b.device)
    if b.data_ptr() % 8:
        b = b.clone()
    n8 = b.numel() // 8 * 8
    words = b[:n8].view(torch.int64)
    tail = torch.zeros(8 if n8 < b.numel() else 0, dtype=torch.uint8, device=b.device)
    tail[: b.numel() - n8] = b[n8:]
    return words, tail.view(torch.int64)


def _contiguous(t: Tensor) -> Tensor:
    t = t.detach()
    return t if t.is_contiguous() else t.contiguous()


def _bytes_of(t: Tensor) -> Tensor:
    t = t.detach().reshape(-1)
    if not t.is_contiguous():
        t = t.contiguous()
    return t.view(torch.uint8) if t.dtype != torch.uint8 else t


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _dtype(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dt
