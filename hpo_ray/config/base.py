"""Shared base for every config section: unknown keys are errors, numbers are finite, assignments are validated."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from hpo_ray.errors import InputError

# A random seed: numpy's legacy generators and torch accept 0 ≤ seed < 2³².
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class Section(BaseModel):
    """A config section: strict keys, no inf/nan in any float, validated on assignment, defaults only here."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


class ConfigError(InputError):
    """A config value is wrong; `path` is the dotted key path (e.g. `algorithm.kl_coef`)."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"config error at {path}: {message}")
