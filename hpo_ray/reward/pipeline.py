"""The reward of finished rollouts: units → sentences → segments → latency + quality → hinge.

`RewardFunction.score` gives raw per-rollout scores (no normalisation, so independent actors can
score disjoint rollouts; quality is scored in one batch per target language); `group_rewards`
turns the scores of whole groups into scalar rewards.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hpo_ray.config import RewardConfig

from .group import group_rewards
from .hinge import aggregate
from .latency import laal, latency_spec, stream_laal
from .quality import QualityScorer, make_scorer
from .segmenter import Segmenter, make_segmenter
from .splitting import split_sentences
from .types import RolloutScore, RolloutText, SentenceScore
from .units import Units, units_from_turns, units_of_text

__all__ = ["RewardFunction", "group_rewards", "segment_rollout"]


@dataclass(frozen=True)
class _Sentence:
    """Latency side of one reference sentence, before its quality is known."""

    segment: Units
    latency: float
    laal: float | None


def segment_rollout(rollout: RolloutText, cfg: RewardConfig, segmenter: Segmenter) -> list[Units]:
    """The rollout's hypothesis units assigned to its reference sentences (one `Units` per reference)."""
    char_level = cfg.is_char_level(rollout.tgt_lang)
    try:
        splitters = cfg.splitters_for(rollout.tgt_lang)
    except ValueError as exc:
        raise ValueError(f"rollout {rollout.id!r}: {exc}") from None
    hyp = units_from_turns(rollout.turns, rollout.chunk_seconds, char_level, rollout.talk_seconds)
    refs = [units_of_text(r, char_level) for r in rollout.ref_sentences]
    return segmenter.segment(split_sentences(hyp, splitters), refs)


class RewardFunction:
    """Scores rollouts with the scorer and segmenter of a `RewardConfig` (models load once, here)."""

    def __init__(self, cfg: RewardConfig, scorer: QualityScorer | None = None, segmenter: Segmenter | None = None):
        self.cfg = cfg
        self.scorer = scorer if scorer is not None else make_scorer(cfg)
        self.segmenter = segmenter if segmenter is not None else make_segmenter(cfg)
        self.latency = latency_spec(cfg.latency).sentence_latency

    def _latencies(self, rollout: RolloutText) -> list[_Sentence]:
        cfg = self.cfg
        char_level = cfg.is_char_level(rollout.tgt_lang)
        out = []
        for k, segment in enumerate(segment_rollout(rollout, cfg, self.segmenter)):
            if not segment.tokens:
                out.append(_Sentence(segment, cfg.max_latency, None))
                continue
            start, end = rollout.segments[k]
            ref_len = len(units_of_text(rollout.ref_sentences[k], char_level))
            sentence_laal = laal(segment.delays, start, end, ref_len)  # StreamLAAL's term, whatever the reward's metric
            latency = self.latency(segment.delays, start, end, ref_len)
            if cfg.target_latency is not None:
                latency = max(0.0, latency - cfg.target_latency)
            out.append(_Sentence(segment, latency, sentence_laal))
        return out

    def score(self, rollouts: Sequence[RolloutText]) -> list[RolloutScore]:
        """Raw Q, L, H, StreamLAAL and per-sentence scores of each rollout, in input order."""
        plans = [self._latencies(r) for r in rollouts]
        qualities = [[self.scorer.worst] * len(p) for p in plans]
        by_lang: dict[str, list[tuple[int, int]]] = {}
        for i, (rollout, plan) in enumerate(zip(rollouts, plans)):
            for k, sentence in enumerate(plan):
                if sentence.segment.tokens:
                    by_lang.setdefault(rollout.tgt_lang, []).append((i, k))
        for lang, where in by_lang.items():
            src = [rollouts[i].src_sentences[k] for i, k in where]
            hyp = [plans[i][k].segment.text() for i, k in where]
            ref = [rollouts[i].ref_sentences[k] for i, k in where]
            for (i, k), q in zip(where, self.scorer.score(src, hyp, ref, lang)):
                if not math.isfinite(q):
                    raise ValueError(f"rollout {rollouts[i].id!r}, sentence {k}: quality scorer returned {q}")
                qualities[i][k] = q
        return [self._assemble(r, p, q) for r, p, q in zip(rollouts, plans, qualities)]

    def _assemble(self, rollout: RolloutText, plan: list[_Sentence], qualities: list[float]) -> RolloutScore:
        Q, L, H, hinged = aggregate(qualities, [s.latency for s in plan], self.cfg)
        sentences = [
            SentenceScore(
                ref_index=k,
                hyp=s.segment.text(),
                delays=list(s.segment.delays),
                quality=q,
                latency=s.latency,
                hinged=h,
                aligned=bool(s.segment.tokens),
                laal=s.laal,
            )
            for k, (s, q, h) in enumerate(zip(plan, qualities, hinged))
        ]
        return RolloutScore(
            id=rollout.id,
            group=rollout.group,
            chunk_seconds=rollout.chunk_seconds,
            quality=Q,
            latency=L,
            hinged_latency=H,
            stream_laal=stream_laal([s.laal for s in plan]),
            sentences=sentences,
        )
