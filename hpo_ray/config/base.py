"""Shared base for every config section: unknown keys are errors, assignments are validated."""

from pydantic import BaseModel, ConfigDict

from hpo_ray.errors import InputError


class Section(BaseModel):
    """A config section: strict keys, validated on assignment, defaults only here."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ConfigError(InputError):
    """A config value is wrong; `path` is the dotted key path (e.g. `algorithm.kl_coef`)."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"config error at {path}: {message}")
