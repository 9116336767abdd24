"""Rollout config: the engine, sampling, and vLLM settings."""

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from .base import Section


class SamplingConfig(Section):
    """How an assistant turn is sampled. `top_k = 0` and `top_p = 1` switch those filters off."""

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: NonNegativeInt = 0
    max_new_tokens: PositiveInt = 40
    greedy: bool = False


class VllmConfig(Section):
    """vLLM engine settings (GPU production path; the CPU build for tests)."""

    gpu_memory_utilization: float = Field(0.6, gt=0.0, le=1.0)
    tensor_parallel_size: PositiveInt = 1
    block_size: PositiveInt = 32
    enable_prefix_caching: bool = True
    enforce_eager: bool = True
    max_model_len: PositiveInt = 4096
    cpu_kvcache_space_gib: PositiveInt = 1
    sleep_between_phases: bool = False


class RolloutConfig(Section):
    """Which engine runs dialogues, and the per-dialogue limits."""

    engine: Literal["torch", "vllm"] = "torch"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_turns: PositiveInt | None = None
    max_total_tokens: PositiveInt = 4096
    sampling: SamplingConfig = SamplingConfig()
    validation_sampling: SamplingConfig = SamplingConfig(greedy=True)
    vllm: VllmConfig = VllmConfig()
    timeout_s: PositiveFloat = 1800.0
