"""Latency formulas and the hinge: the worked examples of docs/reward.md §4 and §6 and LAAL against OmniSTEval."""

import random

import pytest

from hpo_ray.config import RewardConfig
from hpo_ray.reward.hinge import aggregate
from hpo_ray.reward.latency import hpo_latency, laal, stream_laal

# docs/reward.md §4: zh, s = 0.32, e = 3.60, R = 12, 6 chars written at 3.36 s and 4 at 4.48 s.
EXAMPLE_DELAYS = [3.36] * 6 + [4.48] * 4


def test_hpo_latency_reproduces_worked_example():
    assert hpo_latency(EXAMPLE_DELAYS, 0.32, 3.60, 12) == pytest.approx(1.985, abs=1e-3)


def test_laal_reproduces_worked_example():
    assert laal(EXAMPLE_DELAYS, 0.32, 3.60, 12) == pytest.approx(2.380, abs=1e-3)


def test_hpo_latency_matches_original_zero_based_expression():
    s, e, R = 1.0, 4.0, 7
    d = [1.5, 2.0, 2.0, 5.5, 6.0]
    step = (e - s) / max(R, len(d))
    original = sum(dj - step * (j + 1) - s for j, dj in enumerate(d)) / len(d)
    assert hpo_latency(d, s, e, R) == pytest.approx(original, abs=1e-12)


def test_laal_clips_delays_before_sentence_start_and_handles_degenerate_spans():
    # A unit written before the sentence started counts as delay 0 (StreamLAAL v2.0).
    assert laal([0.5, 3.0], 2.0, 4.0, 2) == pytest.approx(((0.0 - 0) + (1.0 - 1.0)) / 2)
    assert laal([5.0, 6.0], 2.0, 2.0, 3) == 3.0  # zero-length source: the first delay
    assert laal([9.0], 2.0, 4.0, 3) == 7.0  # first unit already after the source end


def test_laal_equals_omnisteval_scorer_on_random_cases():
    from omnisteval.data import Instance
    from omnisteval.scoring import LAALScorer

    rng = random.Random(7)
    scorer = LAALScorer()
    for case in range(300):
        start = rng.uniform(0, 30)
        end = start + rng.uniform(0.1, 12)
        n, R = rng.randint(1, 30), rng.randint(1, 40)
        delays = sorted(rng.uniform(start - 3, end + 8) for _ in range(n))
        if case % 3 == 0:  # chunk-quantised delays, as rollouts produce
            delays = sorted(round(d / 1.12) * 1.12 for d in delays)
        unit = "char" if case % 2 else "word"
        reference = "字" * R if unit == "char" else " ".join(["w"] * R)
        ins = Instance(
            prediction="",
            reference=reference,
            latency_unit=unit,
            source_length=end - start,
            emission_cu=[max(0.0, d - start) for d in delays],
        )
        assert laal(delays, start, end, R) == pytest.approx(scorer.compute(ins), abs=1e-9), case


def test_stream_laal_skips_empty_sentences_and_is_none_when_all_empty():
    assert stream_laal([1.0, None, 3.0]) == 2.0
    assert stream_laal([None, None]) is None


def test_empty_sentence_latency_is_an_error_not_a_number():
    with pytest.raises(ValueError, match="unaligned"):
        laal([], 0.0, 1.0, 3)
    with pytest.raises(ValueError, match="unaligned"):
        hpo_latency([], 0.0, 1.0, 3)


# docs/reward.md §6 hinge example: unit 1 (q −3, l 1.5), unit 2 (q −6, l 2.0), unit 3 unaligned (q −25, l 10).
HINGE_Q = [-3.0, -6.0, -25.0]
HINGE_L = [1.5, 2.0, 10.0]


@pytest.mark.parametrize("hinge, expected_h", [("sentence", -2.8333), ("document", 0.0), ("none", 4.5)])
def test_hinge_reproduces_worked_example(hinge, expected_h):
    cfg = RewardConfig(hinge=hinge, target_quality=-5.0, max_latency=10.0)
    Q, L, H, per_sentence = aggregate(HINGE_Q, HINGE_L, cfg)
    assert Q == pytest.approx(-11.333, abs=1e-3)
    assert L == pytest.approx(4.5, abs=1e-3)
    assert H == pytest.approx(expected_h, abs=1e-3)
    assert len(per_sentence) == 3


def test_sentence_hinge_gives_credit_only_to_passing_sentences():
    cfg = RewardConfig(hinge="sentence", target_quality=-5.0)
    _, _, _, hinged = aggregate(HINGE_Q, HINGE_L, cfg)
    assert hinged == pytest.approx([-8.5, 0.0, 0.0])


def test_document_hinge_passes_when_mean_quality_clears_the_bar():
    cfg = RewardConfig(hinge="document", target_quality=-5.0, max_latency=10.0)
    _, L, H, _ = aggregate([-3.0, -4.0], [1.0, 3.0], cfg)
    assert H == pytest.approx(L - 10.0)


def test_target_quality_none_uses_the_scorer_default_threshold():
    assert RewardConfig(quality="metricx", quality_model_path="/x").quality_threshold == -5.0
    assert RewardConfig(quality="chrf").quality_threshold == 50.0
    assert RewardConfig(quality="chrf", target_quality=20.0).quality_threshold == 20.0
