"""Build the tiny speech LLM from config, and save/load any policy in Hugging Face format.

The loader takes a real Qwen3 checkpoint directory unchanged: features are already in the
LLM's embedding space (encoder and projector are offline), so the policy is a plain causal LM.
"""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hpo_ray.config import TinyModelConfig
from hpo_ray.devices import resolve_device


def tiny_model_config(cfg: TinyModelConfig, vocab_size: int, eos_id: int, pad_id: int):
    """The HF config of the tiny model (Qwen3 or Qwen2 architecture)."""
    common = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
        rms_norm_eps=1e-6,
        torch_dtype="float32",
    )
    if cfg.architecture == "qwen3":
        from transformers import Qwen3Config

        return Qwen3Config(head_dim=cfg.head_dim, **common)
    from transformers import Qwen2Config

    if cfg.hidden_size // cfg.num_heads != cfg.head_dim:
        raise ValueError(f"qwen2 needs hidden_size / num_heads == head_dim ({cfg.hidden_size}/{cfg.num_heads} != {cfg.head_dim})")
    return Qwen2Config(**common)


def build_tiny_model(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised causal LM whose vocabulary is exactly the tokenizer's (seeded)."""
    hf_cfg = tiny_model_config(cfg, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save_policy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path, extra: Callable[[Path], None] | None = None
) -> Path:
    """Write config.json, model.safetensors, tokenizer files atomically (temp dir, then rename);
    `extra(tmp_dir)` adds more files to the same directory before the rename (e.g. a speech encoder)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def resolve_dtype(dtype: str, device: str | torch.device) -> torch.dtype:
    """`auto` means bf16 on CUDA and fp32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def load_policy(path: str | Path, dtype: str = "auto", device: str = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer from a local HF directory (never from a hub)."""
    path = Path(path)
    for name in ("config.json", "tokenizer_config.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: not an HF model directory (missing {name})")
    dev = torch.device(resolve_device(device, "device"))
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=resolve_dtype(dtype, dev))
    return model.to(dev).eval(), tokenizer


def carry_speech_encoder(base_dir: str | Path) -> Callable[[Path], None] | None:
    """A `save_policy(extra=...)` that copies `base_dir`'s speech encoder along (None when it has none), so
    a policy trained from a speech LLM stays one (docs/speech.md)."""
    from hpo_ray.speech.encoder import ENCODER_FOLDER

    encoder = Path(base_dir) / ENCODER_FOLDER
    return (lambda tmp: shutil.copytree(encoder, tmp / ENCODER_FOLDER)) if encoder.is_dir() else None


def export_policy(state: dict[str, torch.Tensor], base_dir: str | Path, out_dir: str | Path) -> Path:
    """Write `state` (HF names) as an HF directory shaped like `base_dir` (config, tokenizer)."""
    model, tokenizer = load_policy(base_dir, dtype="float32", device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise ValueError(f"state does not fit {base_dir}: missing {sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return save_policy(model, tokenizer, out_dir, extra=carry_speech_encoder(base_dir))
