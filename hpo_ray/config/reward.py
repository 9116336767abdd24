"""Reward config: quality scorer, segmenter, latency formula, and the hierarchical combination.

The defaults are the paper's HPO settings (sentence hinge, max latency 10 s, α = 1, β = 0.5,
group normalisation), with chrF as the quality scorer because it needs no model checkpoint.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from .base import Section

DEFAULT_SPLITTERS: dict[str, str] = {
    "en": ".!?", "de": ".!?", "es": ".!?", "fr": ".!?", "ru": ".!?", "it": ".!?",
    "zh": "。！？", "ja": "。！？",
}
CLAUSE_SPLITTERS: dict[str, str] = {
    "en": ".,!?", "de": ".,!?", "es": ".,!?", "fr": ".,!?", "ru": ".,!?", "it": ".,!?",
    "zh": "。，！？", "ja": "。、！？",
}


class RewardConfig(Section):
    """How a finished rollout becomes a scalar reward (see docs/reward.md)."""

    quality: Literal["chrf", "bleu", "comet", "metricx"] = "chrf"
    quality_model_path: Path | None = None
    quality_tokenizer_path: Path | None = None
    quality_batch_size: PositiveInt = 32
    segmenter: Literal["mwer", "embedding"] = "mwer"
    embedding_model_path: Path | None = None
    splitting: Literal["sentence", "clause"] = "sentence"
    splitters: dict[str, str] = Field(default_factory=dict)
    latency: Literal["hpo", "laal"] = "laal"
    target_latency: float | None = None
    hinge: Literal["sentence", "document", "none"] = "sentence"
    target_quality: float | None = None
    max_latency: PositiveFloat = 10.0
    alpha: float = 1.0
    beta: float = 0.5
    normalize: bool = True
    seqpo: bool = False
