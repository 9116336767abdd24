"""`hpo-ray bench reward`: split + mWER resegmentation + StreamLAAL, ours vs mweralign + OmniSTEval.

Synthetic long talks (English-like words, and Chinese characters) with noisy, lagging hypotheses are
scored by both pipelines on the same units and delays. The established one is mweralign's C++
resegmenter (whitespace tokens, no SentencePiece download; Chinese as space-separated characters)
followed by OmniSTEval's LAAL scorer on delays relative to each sentence start, clipped at 0
(StreamLAAL v2.0). Differences are compared only where both chose the same segment.
"""

import argparse
import contextlib
import json
import os
import random
import time
from dataclasses import dataclass

from hpo_ray.config import RewardConfig
from hpo_ray.reward.latency import laal, stream_laal
from hpo_ray.reward.mwer import edit_distance
from hpo_ray.reward.pipeline import segment_rollout
from hpo_ray.reward.segmenter import MwerSegmenter
from hpo_ray.reward.types import RolloutText
from hpo_ray.reward.units import units_from_turns, units_of_text

LETTERS = "abcdefghijklmnoprstuvwy"
HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 2500)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--talks", type=int, default=20, help="English-like talks")
    parser.add_argument("--words", type=int, default=2000, help="reference words per English-like talk")
    parser.add_argument("--zh-talks", type=int, default=10, help="Chinese talks")
    parser.add_argument("--zh-chars", type=int, default=4000, help="reference characters per Chinese talk")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (the fastest counts)")
    parser.add_argument("--chunk-seconds", type=float, default=1.12)
    parser.add_argument("--seed", type=int, default=0)


@dataclass
class Talk:
    """One synthetic rollout plus its units, as both pipelines receive them."""

    rollout: RolloutText
    char_level: bool


def _sentence(rng: random.Random, char_level: bool, vocab: list[str]) -> list[str]:
    if char_level:
        return [rng.choice(vocab) for _ in range(rng.randint(8, 40))] + ["。"]
    words = [rng.choice(vocab) for _ in range(rng.randint(6, 30))]
    words[-1] += rng.choice(".!?")
    return words


def _hypothesis(rng: random.Random, ref: list[str], vocab: list[str]) -> list[str]:
    """A noisy translation of one sentence: dropped, substituted and inserted units."""
    if rng.random() < 0.05:
        return []  # untranslated sentence
    out = []
    for unit in ref:
        r = rng.random()
        if r < 0.08:
            continue
        out.append(rng.choice(vocab) if r < 0.25 else unit)
        if rng.random() < 0.05:
            out.append(rng.choice(vocab))
    return out


def make_talk(rng: random.Random, index: int, size: int, char_level: bool, chunk: float) -> Talk:
    """A talk of about `size` reference units with timed sentences and a lagging hypothesis."""
    vocab = HAN if char_level else ["".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    refs, hyp_units, segments = [], [], []
    clock, total = rng.uniform(0.2, 1.0), 0
    per_unit = 0.22 if char_level else 0.4
    while total < size:
        ref = _sentence(rng, char_level, vocab)
        total += len(ref)
        duration = per_unit * len(ref) * rng.uniform(0.8, 1.2)
        segments.append({"start": round(clock, 3), "end": round(clock + duration, 3)})
        lag = rng.uniform(0.5, 4.0)
        hyp = _hypothesis(rng, ref, vocab)
        for j, unit in enumerate(hyp):
            emitted = clock + duration * (j + 1) / max(1, len(hyp)) + lag
            hyp_units.append((unit, int(emitted / chunk)))
        refs.append(("" if char_level else " ").join(ref))
        clock += duration + rng.uniform(0.3, 1.2)
    n_turns = max(t for _, t in hyp_units) + 1 if hyp_units else 1
    turns: list[list[str]] = [[] for _ in range(n_turns)]
    for unit, turn in hyp_units:
        turns[turn].append(unit)
    joiner = "" if char_level else " "
    rollout = RolloutText(
        id=f"talk{index}",
        group=f"talk{index}",
        src_lang="en",
        tgt_lang="zh" if char_level else "en",
        chunk_seconds=chunk,
        turns=[joiner.join(t) for t in turns],
        src_sentences=[""] * len(refs),
        ref_sentences=refs,
        segments=[(s["start"], s["end"]) for s in segments],
    )
    return Talk(rollout, char_level)


def ours(talk: Talk, cfg: RewardConfig, segmenter: MwerSegmenter) -> tuple[list[list[str]], list[float | None], float | None]:
    """Our split + resegment + StreamLAAL: segments, per-sentence LAAL, StreamLAAL."""
    r = talk.rollout
    segments = segment_rollout(r, cfg, segmenter)
    values: list[float | None] = []
    for k, seg in enumerate(segments):
        if not seg.tokens:
            values.append(None)
            continue
        start, end = r.segments[k]
        values.append(laal(seg.delays, start, end, len(units_of_text(r.ref_sentences[k], talk.char_level))))
    return [list(s.tokens) for s in segments], values, stream_laal(values)


def established(talk: Talk) -> tuple[list[list[str]], list[float | None], float | None]:
    """mweralign resegmentation + OmniSTEval LAAL on the same units and delays."""
    from mweralign.mweralign import align_texts
    from omnisteval.data import Instance
    from omnisteval.scoring import LAALScorer

    r = talk.rollout
    hyp = units_from_turns(r.turns, r.chunk_seconds, talk.char_level)
    refs = [" ".join(units_of_text(t, True).tokens) for t in r.ref_sentences] if talk.char_level else r.ref_sentences
    lines = align_texts("\n".join(refs), " ".join(hyp.tokens)).split("\n")
    scorer = LAALScorer()
    unit = "char" if talk.char_level else "word"
    segments, values, used = [], [], 0
    for k, line in enumerate(lines):
        tokens = line.split()
        delays = hyp.delays[used : used + len(tokens)]
        used += len(tokens)
        segments.append(tokens)
        if not tokens:
            values.append(None)
            continue
        start, end = r.segments[k]
        ins = Instance(
            prediction=line,
            reference=r.ref_sentences[k],
            latency_unit=unit,
            source_length=end - start,
            emission_cu=[max(0.0, d - start) for d in delays],
        )
        values.append(scorer.compute(ins))
    return segments, values, stream_laal(values)


@contextlib.contextmanager
def _quiet_stderr():
    """mweralign's C++ core prints a line per alignment on fd 2; keep the table readable."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _timed(fn, talks: list[Talk], repeats: int) -> tuple[float, list]:
    best, results = float("inf"), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = [fn(t) for t in talks]
        best = min(best, time.perf_counter() - t0)
    return best, results


def run(args: argparse.Namespace) -> int:
    try:
        import mweralign  # noqa: F401
        import omnisteval  # noqa: F401
    except ImportError as exc:
        print(f"hpo-ray bench reward: needs the dev extra (mweralign, omnisteval): {exc}")
        return 2
    rng = random.Random(args.seed)
    cfg, segmenter = RewardConfig(), MwerSegmenter()
    sets = {
        "en": [make_talk(rng, i, args.words, False, args.chunk_seconds) for i in range(args.talks)],
        "zh": [make_talk(rng, i, args.zh_chars, True, args.chunk_seconds) for i in range(args.zh_talks)],
    }
    rows, figures = [], {}
    total_ours = total_theirs = 0.0
    max_diff, agree, sentences, ed_ours, ed_theirs = 0.0, 0, 0, 0, 0
    for lang, talks in sets.items():
        if not talks:
            continue
        t_ours, res_ours = _timed(lambda t: ours(t, cfg, segmenter), talks, args.repeats)
        with _quiet_stderr():
            t_theirs, res_theirs = _timed(established, talks, args.repeats)
        total_ours += t_ours
        total_theirs += t_theirs
        lang_agree = lang_n = 0
        for talk, (seg_a, val_a, _), (seg_b, val_b, _) in zip(talks, res_ours, res_theirs):
            hyp = units_from_turns(talk.rollout.turns, talk.rollout.chunk_seconds, talk.char_level).tokens
            refs = [units_of_text(t, talk.char_level).tokens for t in talk.rollout.ref_sentences]
            ed_ours += sum(edit_distance(s, r) for s, r in zip(seg_a, refs))
            ed_theirs += sum(edit_distance(s, r) for s, r in zip(seg_b, refs))
            assert sum(len(s) for s in seg_a) == len(hyp)
            for sa, va, sb, vb in zip(seg_a, val_a, seg_b, val_b):
                lang_n += 1
                if sa == sb:
                    lang_agree += 1
                    if va is not None and vb is not None:
                        max_diff = max(max_diff, abs(va - vb))
        agree += lang_agree
        sentences += lang_n
        units = sum(len(units_from_turns(t.rollout.turns, 1.0, t.char_level)) for t in talks)
        rows.append((lang, len(talks), units, t_ours, t_theirs, lang_agree / max(1, lang_n)))
        figures[f"speedup_{lang}"] = round(t_theirs / t_ours, 2)
    print(
        f"{'lang':<5}{'talks':>6}{'hyp units':>11}{'ours s':>9}{'theirs s':>10}{'ours talks/s':>14}"
        f"{'theirs talks/s':>16}{'speedup':>9}{'same segment':>14}"
    )
    for lang, n, units, a, b, ag in rows:
        print(f"{lang:<5}{n:>6}{units:>11}{a:>9.3f}{b:>10.3f}{n / a:>14.1f}{n / b:>16.1f}{b / a:>8.1f}x{ag:>13.1%}")
    speedup = total_theirs / total_ours
    print(f"total edit distance of the segmentations: ours {ed_ours}, mweralign {ed_theirs} (ours is the exact minimum)")
    print(f"speedup {speedup:.1f}x; max |LAAL difference| where segments agree: {max_diff:.3g} s")
    print(
        json.dumps(
            {
                "benchmark": "reward",
                "speedup": round(speedup, 2),
                "max_abs_diff_s": max_diff,
                "segment_agreement": round(agree / max(1, sentences), 4),
                "sentences": sentences,
                "edit_distance_ours": ed_ours,
                "edit_distance_mweralign": ed_theirs,
                "seconds_ours": round(total_ours, 4),
                "seconds_established": round(total_theirs, 4),
                **figures,
            }
        )
    )
    return 0
