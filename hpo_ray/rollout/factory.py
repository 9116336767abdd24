"""Build the configured rollout engine for a policy directory."""

from pathlib import Path

import torch

from hpo_ray.config import RunConfig
from hpo_ray.devices import resolve_device
from hpo_ray.dialogue import make_layout
from hpo_ray.model.build import load_policy


def make_engine(cfg: RunConfig, model_path: str | Path, bounded_context: bool = False):
    """A TorchEngine or VllmEngine serving the policy at `model_path`; `bounded_context` (inference:
    eval, serving) keeps a sliding window of recent turns (`rollout.context`) instead of stopping at the cap."""
    device = torch.device(resolve_device(cfg.rollout.device, "rollout.device"))
    context = cfg.rollout.context_window() if bounded_context else None
    if cfg.rollout.engine == "vllm":
        from hpo_ray.rollout.vllm_engine import VllmEngine

        return VllmEngine.from_config(cfg, model_path, str(device), context)
    from hpo_ray.rollout.torch_engine import TorchEngine

    model, tokenizer = load_policy(model_path, cfg.model.dtype, str(device))
    return TorchEngine(model, make_layout(cfg, tokenizer), cfg.rollout.max_total_tokens, context=context)
