"""The evidence study's arithmetic: matched-latency comparison, spread over seeds, the three claims."""

import pytest

from hpo_ray.config import load_config
from hpo_ray.study import (
    Spread,
    baseline_quality_at,
    claim_async_matches,
    claim_beats_start,
    claim_not_below,
    claim_robust,
    claim_targets,
    faster_than_baseline,
    gain_spread,
    matched_gains,
    mean_curve,
    metric_spread,
    paired_deltas,
)


def point(m, chrf, laal, length=1.0):
    return {"multiplier": m, "chrf": chrf, "stream_laal": laal, "length_ratio": length, "bleu": chrf / 4}


SFT = [point(1, 20.0, 4.8, 0.5), point(2, 31.8, 2.35), point(3, 31.0, 3.3), point(4, 32.5, 3.16)]


def test_baseline_is_read_at_its_best_point_that_is_no_slower():
    assert baseline_quality_at(SFT, 3.2) == 32.5  # m4 (3.16 s) is within 3.2 s and best
    assert baseline_quality_at(SFT, 3.0) == 31.8  # only m2 is within 3.0 s
    assert baseline_quality_at(SFT, 10.0) == 32.5  # the non-monotone m1 point (20.0 at 4.8 s) never wins


def test_a_point_faster_than_every_baseline_point_meets_the_baseline_at_its_multiplier_or_strictly_its_fastest():
    assert baseline_quality_at(SFT, 1.0, multiplier=1) == 20.0  # the operating point it replaces (4.8 s)
    assert baseline_quality_at(SFT, 1.0) == 31.8  # strict: the fastest point (2.35 s), favours the baseline
    hpo = [point(1, 33.4, 2.0), point(2, 34.0, 3.0)]
    assert matched_gains(hpo, SFT) == pytest.approx({1: 13.4, 2: 34.0 - 31.8})
    assert matched_gains(hpo, SFT, strict=True) == pytest.approx({1: 33.4 - 31.8, 2: 34.0 - 31.8})
    assert faster_than_baseline(hpo, SFT) == {1}


def test_silent_baseline_has_no_latency_and_counts_at_any_latency():
    silent = [{"multiplier": 1, "chrf": 0.0, "stream_laal": None}]
    assert baseline_quality_at(silent, 2.0) == 0.0


def test_matched_gains_per_multiplier_and_skip_points_without_latency():
    hpo = [point(1, 33.4, 2.43), point(2, 34.3, 2.67), point(3, 30.0, None)]
    gains = matched_gains(hpo, SFT)
    assert gains == pytest.approx({1: 33.4 - 31.8, 2: 34.3 - 31.8})


def test_both_curves_are_read_at_their_best_point_within_the_latency():
    hpo = [point(2, 35.0, 2.4), point(3, 31.0, 3.2)]  # m3 is dominated by HPO's own m2 point
    assert matched_gains(hpo, SFT) == pytest.approx({2: 35.0 - 31.8, 3: 35.0 - 32.5})


def test_spread_is_mean_sample_std_and_range():
    s = Spread.of([1.0, 2.0, 3.0])
    assert (s.mean, s.std, s.low, s.high, s.n) == (2.0, 1.0, 1.0, 3.0, 3)
    assert Spread.of([4.0]).std == 0.0
    assert str(s) == "+2.00 ± 1.00 [+1.00, +3.00]"


def test_metric_and_gain_spread_over_seeds():
    runs = {0: [point(1, 30.0, 2.0)], 1: [point(1, 34.0, 2.2)]}
    assert metric_spread(runs, "chrf")[1].mean == 32.0
    gains = gain_spread(runs, SFT)  # both faster than every SFT point -> SFT at m1 (20.0)
    assert gains[1].low == pytest.approx(10.0) and gains[1].high == pytest.approx(14.0)
    strict = gain_spread(runs, SFT, strict=True)  # -> SFT's fastest point (31.8)
    assert strict[1].low == pytest.approx(30.0 - 31.8) and strict[1].high == pytest.approx(34.0 - 31.8)
    per_seed = gain_spread(runs, {0: [point(1, 29.0, 2.0)], 1: [point(1, 35.0, 2.2)]})
    assert per_seed[1].mean == pytest.approx(0.0)


def test_mean_curve_averages_each_multiplier_over_seeds():
    runs = {0: [point(1, 30.0, 2.0, 0.9), point(2, 32.0, 3.0)], 1: [point(1, 34.0, 2.4, 1.1), point(2, 30.0, 3.5)]}
    curve = mean_curve(runs)
    assert [p["multiplier"] for p in curve] == [1, 2]
    assert curve[0]["chrf"] == 32.0 and curve[0]["stream_laal"] == pytest.approx(2.2) and curve[0]["length_ratio"] == 1.0
    assert curve[1]["chrf"] == 31.0 and curve[1]["stream_laal"] == 3.25


def test_paired_deltas_compare_the_same_multiplier():
    runs = {0: [point(1, 33.0, 2.4)], 1: [point(1, 35.0, 2.6)]}
    deltas = paired_deltas(runs, SFT, "chrf")
    assert deltas[1].mean == pytest.approx(34.0 - 20.0)
    assert paired_deltas(runs, SFT, "stream_laal")[1].mean == pytest.approx(2.5 - 4.8)


def test_claim_a_needs_a_gain_everywhere_and_the_margin_at_the_lowest_multiplier():
    strong = {s: [point(1, 40.0, 2.0), point(2, 35.0, 2.3)] for s in range(3)}
    assert claim_beats_start(strong, SFT).held
    weak_low = {s: [point(1, 33.0, 2.4), point(2, 35.0, 2.3)] for s in range(3)}  # +1.2 at m1 < 5
    verdict = claim_beats_start(weak_low, SFT)
    assert not verdict.held and "m = 1" in verdict.detail
    loses_high = {s: [point(1, 30.0, 2.0), point(2, 31.0, 3.2)] for s in range(3)}  # best within 3.2 s: 31.0 < 32.5
    verdict = claim_beats_start(loses_high, SFT)
    assert not verdict.held and "[2]" in verdict.detail


def test_claim_b_compares_each_seed_with_the_same_seed_of_the_other_policy():
    hpo = {0: [point(1, 33.0, 2.0)], 1: [point(1, 31.0, 2.0)]}
    flat = {0: [point(1, 32.0, 2.0)], 1: [point(1, 31.5, 2.0)]}
    assert claim_not_below(hpo, flat, "No-HPO").held  # mean gain (+1.0 − 0.5) / 2 ≥ 0
    verdict = claim_not_below(flat, hpo, "HPO")
    assert not verdict.held and "m = 1" in verdict.detail


def test_claim_c_does_not_take_a_near_silent_start_as_latency_reference():
    silent_start = [point(1, 4.0, 1.5, 0.06)]
    verdict = claim_robust({0: [point(1, 30.0, 2.0, 0.95)]}, silent_start)
    assert verdict.held and "latency not checked" in verdict.detail


def test_claim_c_fails_on_shrinking_output_or_latency_blow_up():
    start = [point(1, 25.0, 3.0, 0.8)]
    assert claim_robust({0: [point(1, 30.0, 3.2, 0.95)]}, start).held
    shrunk = claim_robust({0: [point(1, 30.0, 3.0, 0.85)]}, start)
    assert not shrunk.held and "length ratio" in shrunk.detail
    slow = claim_robust({0: [point(1, 30.0, 4.0, 0.95)]}, start)
    assert not slow.held and "StreamLAAL" in slow.detail
    worse = claim_robust({0: [point(1, 24.0, 3.0, 0.95)]}, start)
    assert not worse.held and "chrF" in worse.detail


def study_results(curves: dict, command: str, runs: int) -> dict:
    """A study's `results.json` for seeds 0 and 1 at m = 1..4, around the given curves."""
    return {
        "command": command,
        "seeds": [0, 1],
        "multipliers": [1, 2, 3, 4],
        "omit_rate": 0.2,
        "heldout": "runs/study/heldout/test/manifest.parquet",
        "curves": curves,
        "minutes": 1.0,
        "hpo_runs": {"runs": runs, "minutes": 3.0},
    }


def test_study_report_states_command_seeds_and_claims():
    from hpo_ray.study_report import render

    cfg = load_config("configs/study.yaml")
    curves = {
        "sft": SFT,
        "sft-omit": [point(m, 25.0, 3.0, 0.8) for m in (1, 2, 3, 4)],
        "hpo": {str(s): [point(m, 38.0 + s, 2.0) for m in (1, 2, 3, 4)] for s in (0, 1)},
        "no-hpo": {str(s): [point(m, 36.0, 2.0) for m in (1, 2, 3, 4)] for s in (0, 1)},
        "hpo-omit": {str(s): [point(m, 30.0, 3.1, 0.95) for m in (1, 2, 3, 4)] for s in (0, 1)},
    }
    report = study_results(curves, "hpo-ray study --seeds 0,1", runs=6)
    text = render(cfg, report)
    assert "hpo-ray study --seeds 0,1" in text
    assert text.count("held**") == 4 and "did not hold" not in text
    assert "| HPO | 1 | 38.50 ± 0.71 |" in text


def test_targets_claim_needs_three_chrf_above_twice_the_seed_std_and_a_kept_length():
    start = [point(m, 30.0, 2.0 + m) for m in (1, 2)]
    clear = {s: [point(m, 34.0 + 0.1 * s, 2.0 + m) for m in (1, 2)] for s in (0, 1, 2)}
    assert claim_targets(clear, start).held
    small = {s: [point(m, 32.0, 2.0 + m) for m in (1, 2)] for s in (0, 1, 2)}
    assert not claim_targets(small, start).held and "< 3" in claim_targets(small, start).detail
    noisy = {s: [point(m, 30.0 + 4.0 * s, 2.0 + m) for m in (1, 2)] for s in (0, 1, 2)}  # gains 0, 4, 8: mean 4, std 4
    assert not claim_targets(noisy, start).held and "× std" in claim_targets(noisy, start).detail
    long = {s: [point(m, 35.0, 2.0 + m, 1.2) for m in (1, 2)] for s in (0, 1, 2)}
    assert not claim_targets(long, start).held and "length ratio 1.200" in claim_targets(long, start).detail


def test_async_learning_check_allows_the_seed_noise_and_no_more():
    sync = {s: [point(m, 40.0 + s, 2.0 + m) for m in (1, 2)] for s in (0, 1, 2)}  # chrF std 1.0 at each m
    close = {s: [point(m, 38.5 + s, 2.0 + m) for m in (1, 2)] for s in (0, 1, 2)}  # 1.5 below: within 2 × 1.0
    assert claim_async_matches(close, sync).held
    behind = {s: [point(m, 37.5 + s, 2.0 + m) for m in (1, 2)] for s in (0, 1, 2)}  # 2.5 below
    verdict = claim_async_matches(behind, sync)
    assert not verdict.held and "below at m = 1, m = 2" in verdict.detail


def test_study_report_of_hpo_and_async_arms_only_compares_what_was_trained():
    from hpo_ray.study_report import render

    curves = {
        "sft": SFT,
        "hpo": {str(s): [point(m, 38.0 + s, 2.0) for m in (1, 2, 3, 4)] for s in (0, 1)},
        "hpo-async": {str(s): [point(m, 37.0 + s, 2.0) for m in (1, 2, 3, 4)] for s in (0, 1)},
    }
    text = render(load_config("configs/study.yaml"), study_results(curves, "hpo-ray study --arms hpo,hpo-async", runs=4))
    assert "HPO vs No-HPO" not in text and "corrupted start" not in text
    assert "| HPO one step off vs HPO (same seed) | -1.00 ± 0.00" in text
    # 1.00 below synchronous HPO, whose chrF std over the two seeds is 0.71: within 2 × 0.71
    assert "**(e) asynchronous HPO (max_staleness 1) learns as well as synchronous HPO: held**" in text
    assert "m = 1: -1.00 (bound −1.41)" in text


def test_study_refuses_arms_it_does_not_know_or_without_hpo(tmp_path):
    import subprocess
    import sys

    for arms in ("hpo,nope", "no-hpo"):
        cmd = [sys.executable, "-m", "hpo_ray.cli.main", "study", "--arms", arms, f"run.dir={tmp_path / 'study'}"]
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "must include hpo and name only hpo, no-hpo, hpo-omit, hpo-async" in done.stderr, done.stderr[-800:]
        assert not (tmp_path / "study").exists()
