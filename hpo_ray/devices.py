"""Resolution of a `*.device` setting (`learner.device`, `rollout.device`, `reward.device`, ...)."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from hpo_ray.config.base import ConfigError


def resolve_device(name: str, field: str) -> str:
    """`auto` → cuda when a GPU is visible, else cpu; `cuda` without a GPU is an error naming `field`."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(field, "cuda requested but torch.cuda.is_available() is False")
    return name


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch CPU threads (None: as they are), then restore the count. Chunk-sized
    inference ops (the speech encoder's stream) ran ~10× faster on one thread than on two on a 2-core
    machine: waking the second thread costs more than the work."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
