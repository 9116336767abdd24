"""RewardFunction end to end with sacrebleu scorers, group normalisation, SeqPO floor, properties."""

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo_ray.config import RewardConfig
from hpo_ray.reward import RewardFunction, RolloutFormatError, RolloutScore, RolloutText, group_rewards
from hpo_ray.reward.units import Units, units_from_turns


def rollout(turns, refs, tgt_lang="de", group="talk", rid="r", segments=None, chunk=1.0) -> RolloutText:
    segments = segments or [(2.0 * i, 2.0 * i + 1.5) for i in range(len(refs))]
    return RolloutText(
        id=rid,
        group=group,
        src_lang="en",
        tgt_lang=tgt_lang,
        chunk_seconds=chunk,
        turns=list(turns),
        src_sentences=[f"src {i}" for i in range(len(refs))],
        ref_sentences=list(refs),
        segments=segments,
    )


REFS = ["Ich habe ein Buch gekauft.", "Er ging nach Hause.", "Das war gut."]


def test_perfect_early_translation_scores_full_quality_and_low_latency():
    r = rollout(["Ich habe ein Buch gekauft.", "", "Er ging nach Hause.", "", "Das war gut."], REFS)
    (score,) = RewardFunction(RewardConfig()).score([r])
    assert [s.hyp for s in score.sentences] == REFS
    assert score.quality == pytest.approx(100.0)
    assert all(s.aligned for s in score.sentences)
    assert score.stream_laal == pytest.approx(np.mean([s.laal for s in score.sentences]))
    assert score.hinged_latency < 0  # every sentence passes the bar and earns latency credit


def test_untranslated_sentence_gets_worst_quality_and_max_latency():
    r = rollout(["Ich habe ein Buch gekauft.", "", "", "", "Das war gut."], REFS)
    (score,) = RewardFunction(RewardConfig(max_latency=7.0)).score([r])
    missing = score.sentences[1]
    assert (missing.hyp, missing.quality, missing.latency, missing.hinged, missing.laal) == ("", 0.0, 7.0, 0.0, None)
    assert score.stream_laal == pytest.approx(np.mean([score.sentences[0].laal, score.sentences[2].laal]))


def test_delays_in_output_are_the_turn_times_of_the_words():
    r = rollout(["", "Ich habe", "ein Buch gekauft. Er ging", "nach Hause. Das war gut."], REFS, chunk=1.12)
    (score,) = RewardFunction(RewardConfig()).score([r])
    assert score.sentences[0].delays == pytest.approx([2.24, 2.24, 3.36, 3.36, 3.36])
    assert score.sentences[1].delays == pytest.approx([3.36, 3.36, 4.48, 4.48])


def test_latency_option_selects_the_formula():
    r = rollout(["", "", "Ich habe ein Buch gekauft."], REFS[:1], segments=[(0.0, 2.0)])
    (laal_score,) = RewardFunction(RewardConfig(latency="laal")).score([r])
    (hpo_score,) = RewardFunction(RewardConfig(latency="hpo")).score([r])
    # 5 words at 3 s for a 2 s sentence: LAAL = first delay (past the end) = 3; HPO = 3 − 0.4·3 = 1.8.
    assert laal_score.latency == pytest.approx(3.0)
    assert hpo_score.latency == pytest.approx(1.8)
    assert hpo_score.stream_laal == pytest.approx(3.0)  # StreamLAAL is always LAAL


def test_bleu_uses_the_chinese_tokenizer_for_zh():
    r = rollout(["我今天买了书。"], ["我今天买了一本书。"], tgt_lang="zh", segments=[(0.0, 1.0)])
    (score,) = RewardFunction(RewardConfig(quality="bleu")).score([r])
    assert score.quality == pytest.approx(53.137, abs=1e-3)  # 13a would give 0.0


def test_bleu_for_japanese_without_mecab_is_a_clear_error():
    pytest.importorskip("sacrebleu")
    try:
        import MeCab  # noqa: F401

        pytest.skip("MeCab installed")
    except ImportError:
        pass
    with pytest.raises(ValueError, match="ja-mecab"):
        RewardFunction(RewardConfig(quality="bleu")).score([rollout(["今日は。"], ["今日は。"], tgt_lang="ja")])


def make_score(group, Q, H, chunk=1.0) -> RolloutScore:
    return RolloutScore(
        id=f"{group}{Q}{H}", group=group, chunk_seconds=chunk, quality=Q, latency=H, hinged_latency=H, stream_laal=None, sentences=[]
    )


def test_group_rewards_use_population_std_and_alpha_beta():
    scores = [make_score("a", 0.0, 1.0), make_score("a", 2.0, 3.0)]
    r = group_rewards(scores, RewardConfig(alpha=1.0, beta=0.5))
    assert r == pytest.approx([-1.0 + 0.5, 1.0 - 0.5])  # z = ±1 with ddof 0 (±0.707 with ddof 1)


def test_group_with_equal_values_is_only_centred():
    scores = [make_score("a", 5.0, 2.0), make_score("a", 5.0, 2.0), make_score("a", 5.0, 4.0)]
    r = group_rewards(scores, RewardConfig(beta=1.0))
    assert r[0] == r[1] and r[0] > r[2]
    assert sum(r) == pytest.approx(0.0, abs=1e-12)


def test_groups_are_normalised_independently():
    a = [make_score("a", q, h) for q, h in [(1, 2), (3, 1), (2, 5)]]
    b = [make_score("b", q, h) for q, h in [(50, 7), (10, 9)]]
    together = group_rewards(a + b, RewardConfig())
    assert together[:3] == pytest.approx(group_rewards(a, RewardConfig()))
    assert together[3:] == pytest.approx(group_rewards(b, RewardConfig()))


def test_unnormalised_reward_is_the_raw_weighted_sum():
    r = group_rewards([make_score("a", 40.0, -3.0)], RewardConfig(normalize=False, alpha=2.0, beta=0.5))
    assert r == [pytest.approx(81.5)]


def test_seqpo_floor_applies_per_rollout_so_groups_do_not_contaminate_each_other():
    cfg = RewardConfig(hinge="none", seqpo=True)
    fast = [make_score("a", q, h, chunk=1.2) for q, h in [(1.0, 0.1), (2.0, 0.3)]]  # both below 1.2/3
    slow = [make_score("b", q, h, chunk=1.2) for q, h in [(1.0, 2.0), (2.0, 4.0)]]
    together = group_rewards(fast + slow, cfg)
    # Floored latencies are equal, so group a is rewarded on quality alone.
    assert together[:2] == pytest.approx([-1.0, 1.0])
    assert together[2:] == pytest.approx(group_rewards(slow, cfg))


def test_seqpo_with_a_quality_hinge_is_a_config_error():
    with pytest.raises(ValueError, match="hinge=none"):
        RewardConfig(seqpo=True, hinge="sentence")


def test_malformed_record_names_line_and_field():
    good = {
        "id": "a",
        "group": "g",
        "src_lang": "en",
        "tgt_lang": "de",
        "chunk_seconds": 1.0,
        "turns": ["x"],
        "src_sentences": ["s"],
        "ref_sentences": ["r"],
        "segments": [{"start": 0, "end": 1}],
    }
    assert RolloutText.from_json(good).segments == [(0.0, 1.0)]
    for change, field in [
        ({"segments": [{"start": 2, "end": 1}]}, "segments[0]"),
        ({"src_sentences": []}, "src_sentences"),
        ({"chunk_seconds": "1"}, "chunk_seconds"),
        ({"turns": "x"}, "turns"),
        ({"segments": [{"start": 0}]}, "segments[0].end"),
    ]:
        with pytest.raises(RolloutFormatError, match=re.escape(f"line 7: field '{field}'")) as exc:
            RolloutText.from_json({**good, **change}, line=7)
        assert exc.value.line == 7
    with pytest.raises(RolloutFormatError, match="'group': missing"):
        RolloutText.from_json({k: v for k, v in good.items() if k != "group"})


TEXT = st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "Z", "S", "M", "Cc", "Cf"]), max_size=60)


@st.composite
def rollouts(draw):
    tgt = draw(st.sampled_from(["en", "de", "zh", "ja"]))
    n_refs = draw(st.integers(1, 5))
    refs = draw(st.lists(TEXT, min_size=n_refs, max_size=n_refs))
    turns = draw(st.lists(st.one_of(st.just(""), TEXT, TEXT.map(lambda t: t * 20)), max_size=12))
    starts = sorted(draw(st.lists(st.floats(0, 100), min_size=n_refs, max_size=n_refs)))
    spans = draw(st.lists(st.floats(0, 10), min_size=n_refs, max_size=n_refs))
    chunk = draw(st.floats(0.05, 3.0))
    return rollout(
        turns, refs, tgt_lang=tgt, segments=[(s, s + d) for s, d in zip(starts, spans)], chunk=chunk, group=draw(st.sampled_from("ab"))
    )


def all_finite(score: RolloutScore) -> bool:
    values = [score.quality, score.latency, score.hinged_latency]
    values += [v for s in score.sentences for v in (s.quality, s.latency, s.hinged, *s.delays)]
    values += [] if score.stream_laal is None else [score.stream_laal]
    return all(math.isfinite(v) for v in values)


CONFIGS = [
    RewardConfig(),
    RewardConfig(latency="hpo", hinge="document"),
    RewardConfig(hinge="none", seqpo=True),
    RewardConfig(splitting="clause", target_latency=1.0, normalize=False),
]
FUNCTIONS = [RewardFunction(cfg) for cfg in CONFIGS]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(rollouts(), min_size=1, max_size=4), which=st.integers(0, len(CONFIGS) - 1))
def test_any_rollouts_score_without_error_and_with_finite_numbers(batch, which):
    cfg, fn = CONFIGS[which], FUNCTIONS[which]
    scores = fn.score(batch)
    rewards = group_rewards(scores, cfg)
    assert all(math.isfinite(r) for r in rewards)
    for r, score in zip(batch, scores):
        assert all_finite(score)
        assert len(score.sentences) == len(r.ref_sentences)
        # No unit is lost or re-timed between the turns and the per-sentence output.
        units = units_from_turns(r.turns, r.chunk_seconds, cfg.is_char_level(r.tgt_lang))
        assert [d for s in score.sentences for d in s.delays] == list(units.delays)


def test_edge_cases_all_empty_long_output_and_single_reference():
    fn = RewardFunction(RewardConfig())
    cases = [
        rollout(["", "", ""], REFS),
        rollout(["Ich habe ein Buch gekauft. " * 300], REFS[:1]),
        rollout([], REFS[:1]),
        rollout(["，。！？"], ["。"], tgt_lang="zh"),
    ]
    scores = fn.score(cases)
    assert scores[0].stream_laal is None and scores[0].quality == 0.0 and scores[0].latency == 10.0
    assert len(scores[1].sentences[0].delays) == 1500
    assert all(all_finite(s) for s in scores)
    assert isinstance(Units.concat([]), Units)


def test_chrf_beta_one_penalises_over_generation_more_than_the_default():
    from hpo_ray.config import load_config
    from hpo_ray.reward.quality import make_scorer

    ref, exact, padded = "ka lomi teru sa .", "ka lomi teru sa .", "ka lomi teru sa . ka lomi teru sa ."
    default, precise = make_scorer(load_config().reward), make_scorer(load_config(None, ["reward.chrf_beta=1"]).reward)
    assert default.score([""], [exact], [ref], "de") == precise.score([""], [exact], [ref], "de") == [100.0]
    assert precise.score([""], [padded], [ref], "de")[0] < default.score([""], [padded], [ref], "de")[0] < 100.0
