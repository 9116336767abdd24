"""Model config: the policy checkpoint (a local HF directory) and the tiny model built for demos/tests."""

from pathlib import Path
from typing import Literal

from pydantic import PositiveInt

from .base import Section, Seed


class TinyModelConfig(Section):
    """Shape of the config-built tiny speech LLM (Qwen3 by default).

    head_dim must be one vLLM's CPU attention supports (32, 64, 80, ...), see platform notes.
    """

    architecture: Literal["qwen3", "qwen2"] = "qwen3"
    hidden_size: PositiveInt = 64
    num_layers: PositiveInt = 2
    num_heads: PositiveInt = 2
    num_kv_heads: PositiveInt = 1
    head_dim: PositiveInt = 32
    intermediate_size: PositiveInt = 192
    vocab_size: PositiveInt = 640
    max_position_embeddings: PositiveInt = 4096
    tie_word_embeddings: bool = True
    seed: Seed = 0


class ModelConfig(Section):
    """The policy: `path` is a local HF-format directory (config.json, safetensors, tokenizer)."""

    path: Path | None = None
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    placeholder_token: str = "<|video_pad|>"
    end_of_turn_token: str = "<|im_end|>"
    instruction: str = "Translate the following speech from {src} to {tgt}."
    tiny: TinyModelConfig = TinyModelConfig()
