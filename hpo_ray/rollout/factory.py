"""Build the configured rollout engine for a policy directory."""

from pathlib import Path

from hpo_ray.config import RunConfig
from hpo_ray.dialogue import DialogueLayout
from hpo_ray.model.build import load_policy, resolve_device


def make_layout(cfg: RunConfig, tokenizer) -> DialogueLayout:
    """The dialogue layout the config describes, for `tokenizer`."""
    m = cfg.model
    return DialogueLayout(tokenizer, m.placeholder_token, m.end_of_turn_token, m.instruction)


def make_engine(cfg: RunConfig, model_path: str | Path, bounded_context: bool = False):
    """A TorchEngine or VllmEngine serving the policy at `model_path`; `bounded_context` (inference:
    eval, serving) keeps a sliding window of recent turns (`rollout.context`) instead of stopping at the cap."""
    device = resolve_device(cfg.rollout.device)
    context = cfg.rollout.context_window() if bounded_context else None
    if cfg.rollout.engine == "vllm":
        from hpo_ray.rollout.vllm_engine import VllmEngine

        return VllmEngine.from_config(cfg, model_path, str(device), context)
    from hpo_ray.rollout.torch_engine import TorchEngine

    model, tokenizer = load_policy(model_path, cfg.model.dtype, str(device))
    return TorchEngine(model, make_layout(cfg, tokenizer), cfg.rollout.max_total_tokens, context=context)
