"""chrF and BLEU sentence scores via sacrebleu (0–100; an empty hypothesis scores 0), registered as `chrf` and `bleu`."""

from collections.abc import Sequence

from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.chrf import CHRF

from .quality import ScorerSpec, register_scorer


class ChrfScorer:
    """sacrebleu's `sentence_chrf` (character 6-grams; β = 2 by default, recall-weighted); no tokenizer needed."""

    worst = 0.0

    def __init__(self, beta: int = 2) -> None:
        self._metric = CHRF(beta=beta)

    def score(self, src: Sequence[str], hyp: Sequence[str], ref: Sequence[str], lang: str) -> list[float]:
        """chrF of each hypothesis against its reference."""
        return [float(self._metric.sentence_score(h, [r]).score) for h, r in zip(hyp, ref)]


def bleu_tokenizer(lang: str) -> str:
    """sacrebleu tokenizer for a target language: zh → zh, ja → ja-mecab (needs MeCab), else 13a."""
    if lang == "zh":
        return "zh"
    if lang == "ja":
        try:
            import MeCab  # noqa: F401
        except ImportError:
            raise ValueError("BLEU for ja needs the ja-mecab tokenizer: pip install 'sacrebleu[ja]'") from None
        return "ja-mecab"
    return "13a"


class BleuScorer:
    """Sentence BLEU (exp smoothing, effective order), tokenised per target language."""

    worst = 0.0

    def __init__(self) -> None:
        self._metrics: dict[str, BLEU] = {}

    def score(self, src: Sequence[str], hyp: Sequence[str], ref: Sequence[str], lang: str) -> list[float]:
        """BLEU of each hypothesis against its reference."""
        tokenize = bleu_tokenizer(lang)
        if tokenize not in self._metrics:
            self._metrics[tokenize] = BLEU(tokenize=tokenize, effective_order=True)
        metric = self._metrics[tokenize]
        return [float(metric.sentence_score(h, [r]).score) for h, r in zip(hyp, ref)]


_PERCENT = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0)
register_scorer(
    ScorerSpec("chrf", lambda cfg, device: ChrfScorer(cfg.chrf_beta), default_target=50.0, histogram_bounds=_PERCENT, scale="0-100")
)
register_scorer(ScorerSpec("bleu", lambda cfg, device: BleuScorer(), default_target=30.0, histogram_bounds=_PERCENT, scale="0-100"))
