"""Named extension points (quality scorers, latency metrics, rollout engines): a name → spec table.

A component is one module that calls `register(spec)` when imported; config validation looks the
configured name up here, so an unknown name is a `ConfigError` at the field listing the registered
names. Built-in modules are imported on first use; modules of your own are named in `run.plugins`.
"""

import importlib
import importlib.util
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from hpo_ray.config.base import ConfigError


class Named(Protocol):
    name: str


class NeedsModules(Protocol):
    name: str
    requires: tuple[str, ...]  # importable modules the component needs (optional dependencies)
    install_hint: str  # how to get them


S = TypeVar("S", bound=Named)


class Registry(Generic[S]):
    """The specs of one kind of component, by name; `field` is the config key that chooses one."""

    def __init__(self, kind: str, field: str, builtins: Iterable[str] = ()):
        self.kind = kind
        self.field = field
        self._builtins = tuple(builtins)  # modules that register the built-in specs when imported
        self._loaded = False
        self._specs: dict[str, S] = {}

    def register(self, spec: S, replace: bool = False) -> S:
        """Add `spec` under `spec.name`; a second spec under a taken name is an error unless `replace`."""
        if not spec.name or not spec.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"{self.kind} name {spec.name!r}: use letters, digits, '_' or '-'")
        if spec.name in self._specs and not replace and self._specs[spec.name] is not spec:
            raise ValueError(f"{self.kind} {spec.name!r} is already registered (pass replace=True to override it)")
        self._specs[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove a spec (tests that register a component of their own clean up with this)."""
        self._specs.pop(name, None)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load_builtins()
        return sorted(self._specs)

    def get(self, name: str) -> S:
        """The spec registered as `name`; else a `ConfigError` at `field` that lists the registered names."""
        self._load_builtins()
        if name not in self._specs:
            raise ConfigError(self.field, f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._specs[name]

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtins:
                importlib.import_module(module)


def check_installed(spec: NeedsModules, field: str) -> None:
    """A `ConfigError` at `field` when a module `spec` needs is not importable, saying how to get it."""
    missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(field, f"{spec.name} needs {', '.join(missing)}, which is not installed: {spec.install_hint}")


def import_plugins(modules: Iterable[str]) -> None:
    """Import the modules named in `run.plugins` (each registers its components when imported)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError("run.plugins", f"cannot import plugin module {module!r}: {exc}") from None
