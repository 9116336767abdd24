"""The `QualityScorer` interface (batched, higher is better) and the factory for `reward.quality`.

chrF and BLEU (sacrebleu, 0–100) need no model; COMET and MetricX-24 load a local checkpoint.
"""

from collections.abc import Sequence
from typing import Protocol

from hpo_ray.config import RewardConfig


class QualityScorer(Protocol):
    """Scores (source, hypothesis, reference) triples of one target language; higher is better."""

    worst: float
    """The score given to an unaligned reference sentence (the scale's floor)."""

    def score(self, src: Sequence[str], hyp: Sequence[str], ref: Sequence[str], lang: str) -> list[float]:
        """One score per triple, for target language `lang`; the three lists have equal length."""
        ...


def make_scorer(cfg: RewardConfig) -> QualityScorer:
    """The scorer named by `reward.quality`; model-based ones load from `reward.quality_model_path`."""
    if cfg.quality in ("chrf", "bleu"):
        from .sacre import BleuScorer, ChrfScorer

        return ChrfScorer(cfg.chrf_beta) if cfg.quality == "chrf" else BleuScorer()
    if cfg.quality_model_path is None:
        raise ValueError(f"reward.quality_model_path is required for reward.quality={cfg.quality}")
    from hpo_ray.devices import resolve_device

    device = resolve_device(cfg.device, "reward.device")
    if cfg.quality == "comet":
        from .comet_scorer import CometScorer

        return CometScorer(cfg.quality_model_path, cfg.quality_batch_size, device)
    from .metricx import MetricXScorer

    return MetricXScorer(cfg.quality_model_path, cfg.quality_tokenizer_path, cfg.quality_batch_size, cfg.quality_max_tokens, device)
