"""Check a policy directory's files before anything loads them: config.json parses, and every
safetensors file has a readable header whose tensors exactly fill the file (a truncated or missing
weight file is named here instead of failing inside an actor later)."""

import json
import math
import struct
from pathlib import Path

from hpo_ray.errors import InputError

INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}


class ModelFilesError(InputError):
    """A policy directory's config or weight file is missing or unreadable; the message names the file."""


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or a ModelFilesError naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelFilesError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFilesError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFilesError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_policy_dir(path: str | Path) -> dict:
    """The model config of HF directory `path` after checking its weight files; raises ModelFilesError."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFilesError(f"{path}: not a directory (model.path must be an HF model directory)")
    config = read_json(path / "config.json")
    if (path / INDEX_FILE).is_file():
        weight_map = read_json(path / INDEX_FILE).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelFilesError(f"{path / INDEX_FILE}: no `weight_map` of tensor → shard file")
        shards = sorted(set(weight_map.values()))
    elif (path / WEIGHTS_FILE).is_file():
        shards = [WEIGHTS_FILE]
    else:
        raise ModelFilesError(f"{path}: no {WEIGHTS_FILE} or {INDEX_FILE} (weights are loaded from safetensors only)")
    for shard in shards:
        check_safetensors(path / shard)
    return config


def check_safetensors(path: Path) -> int:
    """Validate one safetensors file's header against its size; returns the number of tensors."""
    if not path.is_file():
        raise ModelFilesError(f"{path}: missing (named by {INDEX_FILE})")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFilesError(f"{path}: {size} bytes, too short for a safetensors header")
        n = struct.unpack("<Q", head)[0]
        if 8 + n > size:
            raise ModelFilesError(f"{path}: header of {n} bytes does not fit the file's {size} bytes (truncated?)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFilesError(f"{path}: unreadable safetensors header ({exc})") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else None
    if tensors is None:
        raise ModelFilesError(f"{path}: safetensors header is not a JSON object")
    end = 0
    for name, t in tensors.items():
        try:
            start, stop = (int(x) for x in t["data_offsets"])
            shape = [int(d) for d in t["shape"]]
            dtype = str(t["dtype"])
        except (KeyError, TypeError, ValueError):
            raise ModelFilesError(f"{path}: tensor {name!r} has no valid dtype/shape/data_offsets") from None
        if dtype in DTYPE_BYTES and stop - start != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise ModelFilesError(
                f"{path}: tensor {name!r} spans {stop - start} bytes, its {dtype}{shape} needs {math.prod(shape) * DTYPE_BYTES[dtype]}"
            )
        end = max(end, stop)
    if 8 + n + end != size:
        raise ModelFilesError(f"{path}: tensors need {8 + n + end} bytes, the file has {size} (truncated or corrupt)")
    return len(tensors)
