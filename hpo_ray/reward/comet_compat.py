"""Loads an unbabel-comet checkpoint from a local path and adapts its encoder to transformers 5.

comet 2.2.7 unpacks the encoder output as a 3-tuple (`return_dict=False`), which transformers 5 no
longer returns when a model has no pooler, and its pair concatenation calls the tokenizer's
`build_inputs_with_special_tokens`, which the v5 tokenizers dropped. Both are fixed on the loaded
instance (no class is patched), so the same code runs on transformers 4 and 5.
"""

import types
from pathlib import Path
from typing import Any


def _encoder_forward(self: Any, input_ids: Any, attention_mask: Any, token_type_ids: Any = None, **_: Any) -> dict:
    """comet's encoder forward, reading the model output by name instead of by tuple position."""
    from comet.encoders.xlmr import XLMREncoder

    extra = {"token_type_ids": token_type_ids} if token_type_ids is not None and self.uses_token_type_ids else {}
    out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True, **extra)
    hidden = out.last_hidden_state
    pooled = getattr(out, "pooler_output", None)
    # XLM-R-family encoders embed a sentence by its first token; BERT by its pooler.
    sentence = hidden[:, 0, :] if isinstance(self, XLMREncoder) or pooled is None else pooled
    return {"sentemb": sentence, "wordemb": hidden, "all_layers": out.hidden_states, "attention_mask": attention_mask}


def _pair_inputs(tokenizer: Any, separators: int) -> Any:
    """`build_inputs_with_special_tokens` as comet expects it: CLS a SEP[×separators] b SEP."""

    def build(first: list[int], second: list[int] | None = None) -> list[int]:
        if second is None:
            return [tokenizer.cls_token_id, *first, tokenizer.sep_token_id]
        return [tokenizer.cls_token_id, *first, *([tokenizer.sep_token_id] * separators), *second, tokenizer.sep_token_id]

    return build


def adapt_encoder(encoder: Any) -> None:
    """Make a loaded comet encoder work with the installed transformers (idempotent)."""
    encoder.forward = types.MethodType(_encoder_forward, encoder)
    tokenizer = encoder.tokenizer
    if not hasattr(tokenizer, "build_inputs_with_special_tokens"):
        object.__setattr__(tokenizer, "build_inputs_with_special_tokens", _pair_inputs(tokenizer, encoder.size_separator))


def checkpoint_file(path: Path) -> Path:
    """The `.ckpt` file of a comet model: `path` itself, or `path/checkpoints/model.ckpt`."""
    path = Path(path)
    ckpt = path / "checkpoints" / "model.ckpt" if path.is_dir() else path
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"reward.quality_model_path: no COMET checkpoint at {ckpt} "
            "(expected a model directory with checkpoints/model.ckpt and hparams.yaml)"
        )
    return ckpt


def load_comet(path: Path) -> Any:
    """A comet model in eval mode from a local checkpoint, never downloading anything."""
    try:
        import comet
    except ImportError:
        raise ImportError(
            "reward.quality=comet needs unbabel-comet: pip install --no-deps unbabel-comet and the 'comet' extra of hpo-ray"
        ) from None
    model = comet.load_from_checkpoint(str(checkpoint_file(path)), local_files_only=True)
    adapt_encoder(model.encoder)
    return model.eval()
