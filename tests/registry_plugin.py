"""A plugin as a user would write one: a new quality scorer and a new latency metric, one module, two
`register_*` calls, nothing else edited. Named in `run.plugins` by tests/test_registry.py."""

from collections import Counter
from collections.abc import Sequence

from hpo_ray.reward import LatencySpec, ScorerSpec, register_latency, register_scorer


def char_overlap_f(hyp: str, ref: str) -> float:
    """F1 (0–100) of the character multisets of hypothesis and reference, spaces ignored."""
    h, r = Counter(hyp.replace(" ", "")), Counter(ref.replace(" ", ""))
    common = sum((h & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(h.values()), common / sum(r.values())
    return 100.0 * 2 * precision * recall / (precision + recall)


class CharOverlapScorer:
    """Character-overlap F per sentence: a scorer with no model and no tokenizer."""

    worst = 0.0

    def score(self, src: Sequence[str], hyp: Sequence[str], ref: Sequence[str], lang: str) -> list[float]:
        return [char_overlap_f(h, r) for h, r in zip(hyp, ref)]


def first_unit_delay(delays: Sequence[float], start: float, end: float, ref_len: int) -> float:
    """Seconds from the reference sentence's start to its first emitted unit (a start-lag metric)."""
    return max(0.0, delays[0] - start)


register_scorer(
    ScorerSpec("char_f", lambda cfg, device: CharOverlapScorer(), default_target=60.0, histogram_bounds=(25.0, 50.0, 75.0, 100.0))
)
register_latency(LatencySpec("first_delay", first_unit_delay, "start lag of each sentence"))
