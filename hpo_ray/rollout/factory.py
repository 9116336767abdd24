"""The rollout-engine registry (`rollout.engine`) and `make_engine`, which builds the configured one.

An engine is a class satisfying `protocol.RolloutEngine` plus one `register_engine(EngineSpec(...))`
call. The built-in specs are registered here rather than in their modules because config validation
reads them and `torch_engine` / `vllm_engine` import torch (and vLLM) at the top; a plugin engine
registers from its own module (`run.plugins`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpo_ray.config.base import ConfigError
from hpo_ray.registry import Registry, check_installed

if TYPE_CHECKING:
    from hpo_ray.config import RunConfig
    from hpo_ray.rollout.protocol import RolloutEngine


@dataclass(frozen=True)
class EngineSpec:
    """A registered rollout engine: how to build it and what it needs from the rest of the config."""

    name: str
    build: Callable[["RunConfig", Path, str, tuple[int, int] | None], "RolloutEngine"]  # (cfg, model dir, device, context)
    check: Callable[["RunConfig"], None] | None = None  # cross-field rules, raising ConfigError at the key to fix
    requires: tuple[str, ...] = ()  # importable modules it needs (optional dependencies)
    install_hint: str = ""


ENGINES: Registry[EngineSpec] = Registry("rollout engine", "rollout.engine")


def register_engine(spec: EngineSpec, replace: bool = False) -> EngineSpec:
    """Make `spec.name` a valid `rollout.engine`."""
    return ENGINES.register(spec, replace)


def check_engine_config(cfg: "RunConfig") -> None:
    """`rollout.engine` is registered and the rest of the config suits it."""
    spec = ENGINES.get(cfg.rollout.engine)
    if spec.check is not None:
        spec.check(cfg)


def make_engine(cfg: "RunConfig", model_path: str | Path, bounded_context: bool = False) -> "RolloutEngine":
    """The configured engine serving the policy at `model_path`; `bounded_context` (inference: eval,
    serving) keeps a sliding window of recent turns (`rollout.context`) instead of stopping at the cap."""
    from hpo_ray.devices import resolve_device

    spec = ENGINES.get(cfg.rollout.engine)
    check_installed(spec, "rollout.engine")
    device = resolve_device(cfg.rollout.device, "rollout.device")
    context = cfg.rollout.context_window() if bounded_context else None
    return spec.build(cfg, Path(model_path), device, context)


def _build_torch(cfg: "RunConfig", model_path: Path, device: str, context: tuple[int, int] | None) -> "RolloutEngine":
    from hpo_ray.dialogue import make_layout
    from hpo_ray.model.build import load_policy
    from hpo_ray.rollout.torch_engine import TorchEngine

    model, tokenizer = load_policy(model_path, cfg.model.dtype, device)
    return TorchEngine(model, make_layout(cfg, tokenizer), cfg.rollout.max_total_tokens, context=context)


def _build_vllm(cfg: "RunConfig", model_path: Path, device: str, context: tuple[int, int] | None) -> "RolloutEngine":
    from hpo_ray.rollout.vllm_engine import VllmEngine

    return VllmEngine.from_config(cfg, model_path, device, context)


VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def _check_vllm(cfg: "RunConfig") -> None:
    """What vLLM cannot do: CPU attention block sizes and head sizes, pre-truncation logprobs."""
    r = cfg.rollout
    if r.vllm.block_size % 32 and r.device != "cuda":
        raise ConfigError("rollout.vllm.block_size", "vLLM's CPU attention needs a multiple of 32")
    if (r.sampling.top_p < 1.0 or r.sampling.top_k) and cfg.algorithm.is_correction:
        raise ConfigError(
            "rollout.sampling.top_p",
            "with the vLLM engine, top-p/top-k sampling reports truncated-distribution "
            "logprobs the learner cannot reproduce; keep top_p=1, top_k=0 or set algorithm.is_correction=false",
        )
    if cfg.model.path is None and cfg.model.tiny.head_dim not in VLLM_CPU_HEAD_DIMS:
        raise ConfigError("model.tiny.head_dim", "vLLM's CPU attention supports 32, 64, 80, 96, 112, 128, ... only")


register_engine(EngineSpec("torch", _build_torch))
register_engine(
    EngineSpec("vllm", _build_vllm, check=_check_vllm, requires=("vllm",), install_hint="make env-vllm (the CPU build) or the GPU image")
)
