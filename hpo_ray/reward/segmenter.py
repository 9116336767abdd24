"""The `Segmenter` interface: hypothesis sentences → one hypothesis segment per reference sentence.

Two implementations: exact mWER resegmentation of the unit stream (default, StreamLAAL's
convention) and embedding alignment (LCME-style, `reward.segmenter=embedding`).
"""

from collections.abc import Sequence
from typing import Protocol

from hpo_ray.config import RewardConfig

from .mwer import mwer_segment
from .units import Units


class Segmenter(Protocol):
    """Assigns the hypothesis units of one rollout to its reference sentences."""

    def segment(self, sentences: Sequence[Units], refs: Sequence[Units]) -> list[Units]:
        """One segment per reference, in order (empty = unaligned); units keep their order and delays."""
        ...


class MwerSegmenter:
    """Minimum total edit distance cut of the whole unit stream; ties go to hypothesis sentence ends."""

    def segment(self, sentences: Sequence[Units], refs: Sequence[Units]) -> list[Units]:
        """Cut the concatenated hypothesis where the mWER optimum puts the reference boundaries."""
        hyp = Units.concat(sentences)
        ends, position = set(), 0
        for sentence in sentences:
            position += len(sentence)
            ends.add(position)
        bounds, _ = mwer_segment(hyp.tokens, [r.tokens for r in refs], ends)
        return [hyp[bounds[k] : bounds[k + 1]] for k in range(len(refs))]


def make_segmenter(cfg: RewardConfig) -> Segmenter:
    """The segmenter named by `reward.segmenter` (the embedding one loads its encoder here)."""
    if cfg.segmenter == "mwer":
        return MwerSegmenter()
    from .embedding import EmbeddingSegmenter

    return EmbeddingSegmenter.from_config(cfg)
