"""`SpeechLLM`: the chunk-causal encoder + projector in front of the existing Qwen3 policy.

On disk it is the policy's HF directory unchanged (config.json, model.safetensors, tokenizer — what
the RL stack and vLLM load) plus `speech_encoder/` (config.json + model.safetensors of the encoder
and projector). HPO never needs the encoder: it trains the LLM on features `hpo-ray encode` wrote.
"""

from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hpo_ray.config import SpeechEncoderConfig
from hpo_ray.devices import resolve_device
from hpo_ray.model.build import load_policy, save_policy

from .encoder import ENCODER_FOLDER, ChunkCausalEncoder, build_encoder
from .stream import EncoderStream, encode_samples


class SpeechLLM:
    """Encoder + projector (`encoder`) and the causal LM (`llm`, with its `tokenizer`)."""

    def __init__(self, encoder: ChunkCausalEncoder, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase):
        if encoder.config.llm_hidden_size != llm.config.hidden_size:
            raise ValueError(
                f"the projector writes {encoder.config.llm_hidden_size}-wide frames; the LLM's hidden size is {llm.config.hidden_size}"
            )
        self.encoder, self.llm, self.tokenizer = encoder, llm, tokenizer

    @classmethod
    def from_policy(
        cls, policy_dir: str | Path, section: SpeechEncoderConfig, device: str = "cpu", words: list[str] | None = None
    ) -> "SpeechLLM":
        """An existing LLM directory plus a freshly initialised encoder described by `model.speech`
        (`words`: the source vocabulary, the classes of a `ctc` projector)."""
        llm, tokenizer = load_policy(policy_dir, dtype="float32", device=device)
        encoder = build_encoder(section, llm.config.hidden_size, words).to(llm.device)
        return cls(encoder, llm, tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> "SpeechLLM":
        """Load an LLM directory with a `speech_encoder/` subfolder (fp32; the encoder on the LLM's device)."""
        path = Path(path)
        if not (path / ENCODER_FOLDER / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: no {ENCODER_FOLDER}/config.json — not a speech LLM directory "
                "(an LLM-only policy trains on pre-encoded features; see docs/speech.md)"
            )
        llm, tokenizer = load_policy(path, dtype="float32", device=device)
        encoder = ChunkCausalEncoder.from_pretrained(path / ENCODER_FOLDER, local_files_only=True, dtype=torch.float32)
        return cls(encoder.to(resolve_device(device, "device")).eval(), llm, tokenizer)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the LLM directory and `speech_encoder/` inside it, atomically."""
        return save_policy(
            self.llm, self.tokenizer, path, extra=lambda tmp: self.encoder.save_pretrained(tmp / ENCODER_FOLDER, safe_serialization=True)
        )

    def stream(self) -> EncoderStream:
        """A fresh streaming state for one talk: `push(samples)` / `flush()` return LLM-space frames."""
        return EncoderStream(self.encoder)

    def encode(self, samples: np.ndarray) -> np.ndarray:
        """All frames of one talk's samples, [ceil(n / samples-per-frame), hidden] float32."""
        return encode_samples(self.encoder, samples)

    def embed_features(self, input_features: torch.Tensor) -> torch.Tensor:
        """Training path: padded log-mel batches [B, T, n_mels] → LLM-space frames [B, T / 8, hidden]."""
        return self.encoder(input_features)
