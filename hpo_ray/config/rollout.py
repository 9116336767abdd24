"""Rollout config: the engine, sampling, and vLLM settings."""

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from .base import Section


class SamplingConfig(Section):
    """How an assistant turn is sampled. `top_k = 0` and `top_p = 1` switch those filters off.

    `max_new_tokens` is the reply budget of a turn at chunk multiplier m = 1; with `scale_max_new_tokens`
    a turn at m gets m times as many (a turn hears m chunks of speech), at most `max_new_tokens_cap`
    (the original: 40 / 80 / 160 / 160 for m = 1..4). `at_multiplier` resolves it, in this one place.
    """

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: NonNegativeInt = 0
    max_new_tokens: PositiveInt = 40
    scale_max_new_tokens: bool = True
    max_new_tokens_cap: PositiveInt | None = None
    greedy: bool = False

    def tokens_at_multiplier(self, multiplier: int) -> int:
        """The reply budget of one turn at chunk multiplier `multiplier`."""
        tokens = self.max_new_tokens * multiplier if self.scale_max_new_tokens else self.max_new_tokens
        return tokens if self.max_new_tokens_cap is None else min(tokens, self.max_new_tokens_cap)

    def at_multiplier(self, multiplier: int) -> "SamplingConfig":
        """This sampling with `max_new_tokens` resolved for chunk multiplier `multiplier` (what engines read)."""
        return self.model_copy(update={"max_new_tokens": self.tokens_at_multiplier(multiplier),
                                       "scale_max_new_tokens": False, "max_new_tokens_cap": None})


class ValidationSamplingConfig(SamplingConfig):
    """Sampling for validation and evaluation: greedy unless said otherwise."""

    greedy: bool = True


class VllmConfig(Section):
    """vLLM engine settings: one engine per GPU (or per tensor-parallel group) in production, the
    in-process CPU build in tests. `max_model_len` must cover `rollout.max_total_tokens`.

    `gpu_memory_utilization` is the share of GPU memory vLLM may take (weights + KV cache); sleep
    mode is enabled on CUDA when `cluster.colocate` or `sleep_between_phases` is set, and the
    controller calls `sleep(sleep_level)` / `wake_up()` around the learner phase.
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
    sleep_between_phases: bool = False
    sleep_level: Literal[1, 2] = 1


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

    engine: Literal["torch", "vllm"] = "torch"
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
