"""Resolution of a `*.device` setting (`learner.device`, `rollout.device`, `reward.device`, ...)."""

import torch

from hpo_ray.config.base import ConfigError


def resolve_device(name: str, field: str) -> str:
    """`auto` → cuda when a GPU is visible, else cpu; `cuda` without a GPU is an error naming `field`."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(field, "cuda requested but torch.cuda.is_available() is False")
    return name
