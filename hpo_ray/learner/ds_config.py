"""The DeepSpeed config dict for the learner group, generated from the typed `LearnerConfig`.

Micro-batches are packed by token budget, so their number varies per optimiser step. The config
therefore turns DeepSpeed's own accumulation counter off (`managed_gradient_accumulation: false`,
nominal micro-batch 1, accumulation 1): every `engine.backward(loss)` accumulates, and one
`engine.step()` is the optimiser step. All ranks must run the same number of backward passes per
step (pad with an empty micro-batch). DeepSpeed averages gradients over the R data-parallel ranks,
so with the global-batch normaliser of `loss.policy_loss` the learner backpropagates `loss * R`.
The optimiser is a client `torch.optim.AdamW` (DeepSpeedCPUAdam would JIT-compile with g++).
`bf16.check_grad_overflow` is set explicitly: it is the check that drops an optimiser step whose
gradients are not finite (see `hpo_ray.learner.finite`).
"""

from collections.abc import Iterable
from typing import Any, Literal

import torch

from hpo_ray.config.base import ConfigError
from hpo_ray.config.training import LearnerConfig, OptimizerConfig

Device = Literal["cpu", "cuda"]


def resolve_dtype(learner: LearnerConfig, device: Device) -> torch.dtype:
    """`learner.dtype` with "auto" resolved: bf16 on GPU, fp32 on CPU."""
    if learner.dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[learner.dtype]


def deepspeed_config(learner: LearnerConfig, world_size: int, device: Device, dtype: torch.dtype) -> dict[str, Any]:
    """The dict for `deepspeed.initialize(config=...)`: ZeRO stage, precision, clipping, accumulation."""
    if world_size < 1:
        raise ValueError(f"world_size must be ≥ 1, got {world_size}")
    if dtype not in (torch.float32, torch.bfloat16):
        raise ConfigError("learner.dtype", f"{dtype} is not supported (float32 or bfloat16)")
    stage = learner.zero_stage
    zero: dict[str, Any] = {"stage": stage}
    if stage > 0:
        # Overlapped reduction needs CUDA streams; with unmanaged accumulation DeepSpeed allows it for stage ≥ 2 only.
        zero.update(overlap_comm=device == "cuda" and stage >= 2, contiguous_gradients=True)
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    clip = learner.optimizer.grad_clip
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": float(clip) if clip is not None else 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == torch.bfloat16, "check_grad_overflow": True},
        "fp16": {"enabled": False},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def make_optimizer(params: Iterable[torch.nn.Parameter], opt: OptimizerConfig) -> torch.optim.AdamW:
    """The client AdamW handed to `deepspeed.initialize(optimizer=...)` (and to plain-torch baselines)."""
    return torch.optim.AdamW(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
