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


class SpeechEncoderConfig(Section):
    """Shape of the config-built chunk-causal speech encoder + projector (hpo_ray/speech/encoder.py).

    Log-mel frames every `hop_samples` (10 ms) are subsampled by 2**`subsampling_layers` causal
    stride-2 convolutions to the LLM frame rate: 160 * 8 / 16 kHz = 80 ms = data.frame_seconds.
    Attention is block-causal over chunks of `chunk_frames` output frames, looking back at most
    `left_chunks` chunks (bounded state for unbounded talks).
    """

    sample_rate: PositiveInt = 16000
    n_mels: PositiveInt = 80
    window_samples: PositiveInt = 400
    hop_samples: PositiveInt = 160
    subsampling_layers: PositiveInt = 3
    conv_channels: PositiveInt = 64
    hidden_size: PositiveInt = 64
    num_layers: PositiveInt = 2
    num_heads: PositiveInt = 2
    num_kv_heads: PositiveInt = 1
    head_dim: PositiveInt = 32
    intermediate_size: PositiveInt = 128
    chunk_frames: PositiveInt = 14
    left_chunks: PositiveInt = 8
    # "mlp": a two-layer MLP writes the encoder's frames into the LLM's space (any encoder); "ctc": the
    # encoder's own CTC head over the source words, its posteriors mapped through a fixed random table
    # (one vector per word and one for blank) — the speaker-invariant bottleneck (docs/speech.md).
    projector: Literal["mlp", "ctc"] = "mlp"
    seed: Seed = 0

    @property
    def frame_seconds(self) -> float:
        """Seconds per encoder output frame."""
        return self.hop_samples * 2**self.subsampling_layers / self.sample_rate


class ModelConfig(Section):
    """The policy: `path` is a local HF-format directory (config.json, safetensors, tokenizer)."""

    path: Path | None = None
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    placeholder_token: str = "<|video_pad|>"
    end_of_turn_token: str = "<|im_end|>"
    instruction: str = "Translate the following speech from {src} to {tgt}."
    tiny: TinyModelConfig = TinyModelConfig()
    speech: SpeechEncoderConfig = SpeechEncoderConfig()
