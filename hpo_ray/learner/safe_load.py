"""Reading torch checkpoint files without running code: the weights-only unpickler and an allow-list.

DeepSpeed's own checkpoint engine calls `torch.load(weights_only=False)`, which runs whatever a
pickle asks for; the learner swaps in `restricted_checkpoint_engine`, so every DeepSpeed file goes
through `load_restricted`. `disallowed_globals` reads a file's pickle opcodes without executing
anything, so the driver can refuse a checkpoint before any actor touches it.
"""

import importlib
import pickle
from pathlib import Path
from typing import Any

import torch

# Beyond torch's weights-only defaults (tensors, containers, numbers), the classes DeepSpeed 0.19
# puts in its ZeRO optimiser files: an enum, a (start, numel) record and the loss-scale holder.
ALLOWED_GLOBALS: tuple[str, ...] = (
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class UnsafeCheckpointFileError(ValueError):
    """A checkpoint file is not a torch file that loads with only allow-listed globals."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def disallowed_globals(path: str | Path) -> list[str]:
    """The globals `path`'s pickle names beyond the allow-list (read statically: nothing runs).
    Raises `UnsafeCheckpointFileError` when the file is not a torch zip checkpoint or has opcodes
    the weights-only unpickler refuses."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise UnsafeCheckpointFileError(path, f"not a torch checkpoint the weights-only loader accepts ({exc})") from None
    return sorted(g for g in found if g not in ALLOWED_GLOBALS)


def _allowed_classes() -> list[Any]:
    out = []
    for dotted in ALLOWED_GLOBALS:
        module, name = dotted.rsplit(".", 1)
        try:
            out.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # that library is not installed here: nothing of it can be needed
            continue
    return out


def load_restricted(path: str | Path, map_location: Any = None) -> Any:
    """`torch.load` with `weights_only=True` and only `ALLOWED_GLOBALS` beyond torch's defaults."""
    try:
        with torch.serialization.safe_globals(_allowed_classes()):
            return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeCheckpointFileError(path, f"refused by the weights-only loader: {first}") from None
    except (RuntimeError, EOFError) as exc:
        raise UnsafeCheckpointFileError(path, f"unreadable torch file ({exc})") from None


def restricted_checkpoint_engine(current: Any) -> Any:
    """A DeepSpeed checkpoint engine to replace `current` (a TorchCheckpointEngine): it saves in
    torch's zip format (which `disallowed_globals` can read) and loads through `load_restricted`.
    Imports deepspeed only when called (after the learner has set its accelerator)."""
    from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    if type(current) is not TorchCheckpointEngine:
        raise TypeError(f"expected DeepSpeed's TorchCheckpointEngine to restrict, got {type(current).__name__}")

    class RestrictedCheckpointEngine(TorchCheckpointEngine):
        """TorchCheckpointEngine whose load never unpickles anything outside the allow-list."""

        def __init__(self):
            CheckpointEngine.__init__(self)
            self.name = "RestrictedTorchCheckpointEngine"
            self.zipfile_serialization = True

        def load(self, path: str, map_location: Any = None) -> Any:
            return load_restricted(path, map_location)

    return RestrictedCheckpointEngine()
