"""The HPO reward: units and delays, sentence splitting, resegmentation, latency, quality, hinge, groups.

Pure and Ray-free; reward actors, evaluation and the controller call `RewardFunction.score` and
`group_rewards`. The definition, worked examples and the fixes to the original are in docs/reward.md.
"""

from .group import group_rewards
from .latency import LatencySpec, hpo_latency, laal, register_latency, stream_laal
from .pipeline import RewardFunction, segment_rollout
from .quality import QualityScorer, ScorerSpec, make_scorer, register_scorer
from .segmenter import MwerSegmenter, Segmenter, make_segmenter
from .types import RolloutFormatError, RolloutScore, RolloutText, SentenceScore
from .units import Units, units_from_turns, units_of_text

__all__ = [
    "LatencySpec",
    "ScorerSpec",
    "register_latency",
    "register_scorer",
    "MwerSegmenter",
    "QualityScorer",
    "RewardFunction",
    "RolloutFormatError",
    "RolloutScore",
    "RolloutText",
    "Segmenter",
    "SentenceScore",
    "Units",
    "group_rewards",
    "hpo_latency",
    "laal",
    "make_scorer",
    "make_segmenter",
    "segment_rollout",
    "stream_laal",
    "units_from_turns",
    "units_of_text",
]
