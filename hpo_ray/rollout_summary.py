"""Raw quality/latency summaries of scored rollouts (validation, eval) and checkpoint ranking.

Validation never reports the group-normalised reward: on a group of one it is identically 0
(docs/method.md §8, §11.6). It reports raw quality, HPO latency, StreamLAAL and the
output/reference length ratio.
"""

import math
from collections.abc import Sequence

from hpo_ray.config import CheckpointConfig, RewardConfig
from hpo_ray.reward.latency import hpo_latency
from hpo_ray.reward.types import RolloutScore
from hpo_ray.reward.units import units_of_text


def summarize(
    scores: Sequence[RolloutScore],
    refs: Sequence[Sequence[str]],
    segments: Sequence[Sequence[tuple[float, float]]],
    tgt_langs: Sequence[str],
    reward: RewardConfig,
) -> dict[str, float]:
    """Means over rollouts: quality, latency (configured formula), hinged latency, StreamLAAL (the
    mean of per-talk StreamLAAL: `stream_laal_talk_mean`, not the corpus StreamLAAL of `hpo-ray eval`),
    HPO latency (the original's formula, unaligned sentences at max_latency) and the length ratio."""
    hpo, stream, hyp_units, ref_units = [], [], 0, 0
    for score, ref_sents, segs, lang in zip(scores, refs, segments, tgt_langs):
        char = reward.is_char_level(lang)
        per_sentence = []
        for s in score.sentences:
            ref_len = len(units_of_text(ref_sents[s.ref_index], char))
            ref_units += ref_len
            hyp_units += len(s.delays)
            if s.delays:
                start, end = segs[s.ref_index]
                per_sentence.append(hpo_latency(s.delays, start, end, ref_len))
            else:
                per_sentence.append(reward.max_latency)
        hpo.append(sum(per_sentence) / max(len(per_sentence), 1))
        if score.stream_laal is not None:
            stream.append(score.stream_laal)

    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    return {
        "quality": mean([s.quality for s in scores]),
        "latency": mean([s.latency for s in scores]),
        "hinged_latency": mean([s.hinged_latency for s in scores]),
        "stream_laal_talk_mean": mean(stream),
        "hpo_latency": mean(hpo),
        "length_ratio": hyp_units / ref_units if ref_units else float("nan"),
        "rollouts": float(len(scores)),
    }


def criterion(metrics: dict[str, float], ckpt: CheckpointConfig) -> float | None:
    """Higher is better: quality, penalised per second of (talk-mean) StreamLAAL above the latency budget."""
    q, lat = metrics.get("quality"), metrics.get("stream_laal_talk_mean")
    if q is None or not math.isfinite(q):
        return None
    if ckpt.criterion == "quality":
        return q
    if lat is None or not math.isfinite(lat):
        return None
    if ckpt.criterion == "latency":
        return -lat
    return q - ckpt.latency_penalty * max(0.0, lat - ckpt.latency_budget)
