"""Rollout config: the engine, sampling, and vLLM settings."""

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from .base import Section


class SamplingConfig(Section):
    """How an assistant turn is sampled. `top_k = 0` and `top_p = 1` switch those filters off.

    `max_new_tokens` is a budget per *base chunk*: a turn at chunk multiplier m covers m chunks of
    speech, so its reply may have up to m × `max_new_tokens` tokens, unless `max_new_tokens_by_multiplier`
    names m (the original's 40 / 80 / 160 / 160 for m = 1..4 is `max_new_tokens: 40` with `{3: 160}`).
    `reply_budget` is the one place this rule lives.
    """

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: NonNegativeInt = 0
    max_new_tokens: PositiveInt = 40
    max_new_tokens_by_multiplier: dict[PositiveInt, PositiveInt] = Field(default_factory=dict)
    greedy: bool = False

    def reply_budget(self, multiplier: int) -> int:
        """The most new tokens of one assistant turn at chunk multiplier `multiplier`."""
        if multiplier < 1:
            raise ValueError(f"chunk multiplier must be a positive integer, got {multiplier}")
        return self.max_new_tokens_by_multiplier.get(multiplier, self.max_new_tokens * multiplier)


class ValidationSamplingConfig(SamplingConfig):
    """Sampling for validation and evaluation: greedy unless said otherwise."""

    greedy: bool = True


class VllmConfig(Section):
    """vLLM engine settings: one engine per GPU (or per tensor-parallel group) in production, the
    in-process CPU build in tests. `max_model_len` must cover `rollout.max_total_tokens`.

    `gpu_memory_utilization` is the share of GPU memory vLLM may take (weights + KV cache), held for
    the whole run: colocated with the learner, leave the learner the rest (engines never sleep).
    `cpu_kvcache_space_gib` sizes the KV cache of the CPU build. `max_num_seqs` None = vLLM's default.
    """

    gpu_memory_utilization: float = Field(0.6, gt=0.0, le=1.0)
    tensor_parallel_size: PositiveInt = 1
    block_size: PositiveInt = 32
    enable_prefix_caching: bool = True
    enforce_eager: bool = True
    max_model_len: PositiveInt = 4096
    max_num_seqs: PositiveInt | None = None
    cpu_kvcache_space_gib: PositiveInt = 1


class ContextConfig(Section):
    """Bounded-memory context of inference (`hpo-ray eval`) on talks of any length.

    The system prompt and the most recent turns stay in the KV cache; when the next turn (its user
    turn and a full reply) could pass `max_tokens`, the oldest turns are dropped until at most
    `keep_tokens` remain, and the kept window is re-prefilled at fresh positions 0.. (docs/rollout.md).
    None: `max_tokens` = `rollout.max_total_tokens`, `keep_tokens` = half of `max_tokens`. Training
    rollouts never drop context (the learner needs the whole dialogue): they stop at the cap.
    """

    max_tokens: PositiveInt | None = None
    keep_tokens: PositiveInt | None = None


class RolloutConfig(Section):
    """Which engine runs dialogues, and the per-dialogue limits."""

    engine: str = "torch"  # a registered rollout engine (hpo_ray/rollout/factory.py): torch, vllm, ...
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_turns: PositiveInt | None = None
    max_total_tokens: PositiveInt = 4096
    sampling: SamplingConfig = SamplingConfig()
    validation_sampling: ValidationSamplingConfig = ValidationSamplingConfig()
    vllm: VllmConfig = VllmConfig()
    context: ContextConfig = ContextConfig()
    timeout_s: PositiveFloat = 1800.0

    def context_window(self) -> tuple[int, int]:
        """(max_tokens, keep_tokens) of the inference context window, defaults resolved."""
        most = self.context.max_tokens or self.max_total_tokens
        return most, self.context.keep_tokens or most // 2
