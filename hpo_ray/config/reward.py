"""Reward config: quality scorer, segmenter, latency formula, and the hierarchical combination.

The defaults are the paper's HPO settings (sentence hinge, max latency 10 s, α = 1, β = 0.5,
group normalisation), with chrF as the quality scorer because it needs no model checkpoint, and
StreamLAAL-consistent LAAL instead of the original's shifted formula (docs/reward.md).
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, ValidationInfo, field_validator

from .base import Section

DEFAULT_SPLITTERS: dict[str, str] = {
    "en": ".!?",
    "de": ".!?",
    "es": ".!?",
    "fr": ".!?",
    "ru": ".!?",
    "it": ".!?",
    "zh": "。！？",
    "ja": "。！？",
}
CLAUSE_SPLITTERS: dict[str, str] = {
    "en": ".,!?",
    "de": ".,!?",
    "es": ".,!?",
    "fr": ".,!?",
    "ru": ".,!?",
    "it": ".,!?",
    "zh": "。，！？",
    "ja": "。，！？",  # the original's ja set: full-width comma, not 、
}


class RewardConfig(Section):
    """How a finished rollout becomes a scalar reward (see docs/reward.md)."""

    quality: str = "chrf"  # a registered quality scorer (hpo_ray/reward/quality.py): chrf, bleu, comet, metricx, ...
    # chrF's recall weight: sacrebleu's default 2 rewards over-generation; 1 weighs precision equally.
    chrf_beta: int = Field(2, ge=1)
    quality_model_path: Path | None = None
    quality_tokenizer_path: Path | None = None  # MetricX: the mT5 tokenizer (default: quality_model_path)
    quality_batch_size: PositiveInt = 32
    quality_max_tokens: PositiveInt = 1536  # MetricX input truncation (counted and logged)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # model-based scorers and the embedding encoder
    char_languages: list[str] = Field(default_factory=lambda: ["zh", "ja"])  # one unit = one character
    segmenter: Literal["mwer", "embedding"] = "mwer"
    embedding_model_path: Path | None = None
    embedding_pooling: Literal["cls", "mean"] = "cls"
    embedding_batch_size: PositiveInt = 64
    embedding_max_block: PositiveInt = 4  # most sentences on one side of an aligned block
    embedding_skip_cost: PositiveFloat = 0.5  # cost of leaving one sentence unaligned (vs 1 − cos)
    splitting: Literal["sentence", "clause"] = "sentence"
    splitters: dict[str, str] = Field(default_factory=dict)  # per-language override of the splitter set
    latency: str = "laal"  # a registered latency metric (hpo_ray/reward/latency.py): laal, hpo, ...
    target_latency: float | None = Field(None, ge=0.0)
    hinge: Literal["sentence", "document", "none"] = "sentence"
    target_quality: float | None = None  # None: the scorer's registered default_target
    max_latency: PositiveFloat = 10.0
    alpha: float = Field(1.0, ge=0.0)  # weight of z(quality); both weights ≥ 0 (0 switches a term off)
    beta: float = Field(0.5, ge=0.0)  # weight of z(latency)
    normalize: bool = True
    seqpo: bool = False

    @field_validator("seqpo")
    @classmethod
    def _seqpo_needs_flat_latency(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("hinge") not in (None, "none"):
            raise ValueError("the SeqPO latency floor applies to the flat latency: set reward.hinge=none")
        return value

    @property
    def quality_threshold(self) -> float:
        """The hinge's quality bar: `target_quality`, or the scorer's registered default when it is None."""
        if self.target_quality is not None:
            return self.target_quality
        from hpo_ray.reward.quality import scorer_spec  # the registry imports config: resolved at call time

        return scorer_spec(self.quality).default_target

    def is_char_level(self, lang: str) -> bool:
        """Whether units of `lang` are characters (zh, ja) rather than whitespace words."""
        return lang in self.char_languages

    def splitters_for(self, lang: str) -> str:
        """The sentence-final characters of `lang`: the override, else the sentence or clause set."""
        if lang in self.splitters:
            return self.splitters[lang]
        table = CLAUSE_SPLITTERS if self.splitting == "clause" else DEFAULT_SPLITTERS
        if lang not in table:
            raise ValueError(f"no sentence splitters known for language {lang!r}: set reward.splitters.{lang}")
        return table[lang]
