"""mWER resegmentation: exact optimum (brute force), bit-parallel edit distance, ties, scale."""

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from hpo_ray.reward.mwer import edit_distance, mwer_segment
from hpo_ray.reward.segmenter import MwerSegmenter
from hpo_ray.reward.splitting import split_sentences
from hpo_ray.reward.units import units_from_turns, units_of_text


def plain_edit_distance(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def segmentation_cost(hyp, refs, bounds) -> int:
    return sum(plain_edit_distance(hyp[bounds[k] : bounds[k + 1]], refs[k]) for k in range(len(refs)))


def brute_force_optimum(hyp, refs) -> int:
    J = len(hyp)
    return min(segmentation_cost(hyp, refs, (0, *cuts, J)) for cuts in itertools.combinations_with_replacement(range(J + 1), len(refs) - 1))


def test_bit_parallel_edit_distance_equals_plain_dynamic_programming():
    rng = random.Random(3)
    for _ in range(500):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 70))]  # crosses the 64-unit word size
        b = [rng.choice("abc") for _ in range(rng.randint(0, 70))]
        assert edit_distance(a, b) == plain_edit_distance(a, b)


def test_mwer_total_edit_distance_equals_brute_force_optimum():
    rng = random.Random(11)
    for case in range(400):
        hyp = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        refs = [[rng.choice("abcd") for _ in range(rng.randint(0, 4))] for _ in range(rng.randint(1, 4))]
        bounds, cost = mwer_segment(hyp, refs)
        assert bounds[0] == 0 and bounds[-1] == len(hyp) and bounds == sorted(bounds)
        assert segmentation_cost(hyp, refs, bounds) == cost == brute_force_optimum(hyp, refs), case


@settings(max_examples=150, deadline=None)
@given(
    hyp=st.lists(st.sampled_from("abcde"), max_size=150),
    refs=st.lists(st.lists(st.sampled_from("abcde"), max_size=40), min_size=1, max_size=8),
)
def test_mwer_optimum_equals_edit_distance_to_concatenated_references(hyp, refs):
    bounds, cost = mwer_segment(hyp, refs)
    assert cost == plain_edit_distance(hyp, [u for r in refs for u in r])
    assert segmentation_cost(hyp, refs, bounds) == cost


def test_ties_go_to_the_hypothesis_sentence_end():
    # "x" fits sentence 1 or 2 equally; it was written after "b." so it opens hypothesis sentence 2.
    hyp = units_from_turns(["a b. x c d."], 1.0, char_level=False)
    refs = [units_of_text("a b.", False), units_of_text("c d.", False)]
    segments = MwerSegmenter().segment(split_sentences(hyp, ".!?"), refs)
    assert [s.text() for s in segments] == ["a b.", "x c d."]


def test_char_level_segmentation_of_chinese_keeps_delays():
    hyp = units_from_turns(["我今天买", "了书。他", "走了。"], 1.0, char_level=True)
    refs = [units_of_text("我今天买了一本书。", True), units_of_text("他走了。", True)]
    a, b = MwerSegmenter().segment(split_sentences(hyp, "。！？"), refs)
    assert a.text() == "我今天买了书。" and b.text() == "他走了。"
    assert a.delays == (1.0,) * 4 + (2.0,) * 3 and b.delays == (2.0, 3.0, 3.0, 3.0)


def test_one_hour_talk_resegments_exactly():
    rng = random.Random(5)
    vocab = [f"w{i}" for i in range(3000)]
    refs, total = [], 0
    while total < 9000:
        refs.append([rng.choice(vocab) for _ in range(rng.randint(5, 30))])
        total += len(refs[-1])
    words = [w for r in refs for w in r]
    hyp = [w if rng.random() < 0.75 else rng.choice(vocab) for w in words if rng.random() < 0.9]
    bounds, cost = mwer_segment(hyp, refs)
    assert sum(edit_distance(hyp[bounds[k] : bounds[k + 1]], refs[k]) for k in range(len(refs))) == cost
    assert cost == edit_distance(hyp, words)
