"""Dialogue-form SFT data built as the paper did: word alignment → monotonic grouping by turn.

A target word becomes writable once every source word it depends on, and every source word an
earlier target word depends on, has been heard; a sentence's last word (it carries the period)
also waits until the sentence-final pause is audible. Turns merge c ∈ [1, max_merge] base chunks.
Optional corruption, the errors synthetic dialogue data has: omitted words, premature guesses (words
emitted turns before they are writable, some wrong), and segmentation slips (a sentence's closing word
written one turn late, merged into the next sentence's turn). References are never corrupted.
"""

import bisect
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hpo_ray.config import SynthConfig

from .language import Language, Sentence, TargetWord


class AlignedTalk(Protocol):
    """What dialogues need of a talk, rendered or spoken: its sentences, each source word's frame
    span [start, end) per sentence, its length in frames, and how many frames of silence after a
    sentence's last word make its end audible (more than any pause inside a sentence)."""

    talk_id: str
    sentences: tuple[Sentence, ...]
    word_spans: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def n_frames(self) -> int: ...

    @property
    def end_margin_frames(self) -> int: ...


@dataclass(frozen=True)
class TalkAlignment:
    """An `AlignedTalk` given by value (a spoken talk's word timings on the frame grid)."""

    talk_id: str
    sentences: tuple[Sentence, ...]
    word_spans: tuple[tuple[tuple[int, int], ...], ...]
    n_frames: int
    end_margin_frames: int


@dataclass(frozen=True)
class SftDialogue:
    """One dialogue of a talk: (frames, assistant text) per turn, plus what corruption did to it
    (`slipped`: sentence boundaries whose closing word was written one turn late)."""

    turns: tuple[tuple[int, str], ...]
    words: int
    omitted: int
    premature: int
    wrong: int
    slipped: int


def word_deadlines(talk: AlignedTalk) -> list[int]:
    """For every target word of the talk in order: the frame count after which it is writable
    (monotonic: never earlier than the previous word's)."""
    end_margin = talk.end_margin_frames
    deadlines: list[int] = []
    frontier = 0
    for sentence, spans in zip(talk.sentences, talk.word_spans):
        for k, word in enumerate(sentence.target):
            need = max(spans[i][1] for i in word.sources)
            if k == len(sentence.target) - 1:
                need = max(need, spans[-1][1] + end_margin)
            frontier = max(frontier, need)
            deadlines.append(frontier)
    return deadlines


def turn_sizes(n_frames: int, chunk_frames: int, max_merge: int, rng: np.random.Generator) -> list[int]:
    """Frames per user turn: each turn merges c ∈ [1, max_merge] chunks; the last takes the remainder."""
    sizes: list[int] = []
    left = n_frames
    while left > 0:
        size = min(left, chunk_frames * int(rng.integers(1, max_merge + 1)))
        sizes.append(size)
        left -= size
    return sizes


def build_dialogue(talk: AlignedTalk, language: Language, synth: SynthConfig, chunk_frames: int, rng: np.random.Generator) -> SftDialogue:
    """One SFT dialogue of `talk` with random turn sizes and the configured corruption."""
    sizes = turn_sizes(talk.n_frames, chunk_frames, synth.sft_max_merge, rng)
    ends = np.cumsum(sizes).tolist()
    words: list[TargetWord] = [w for sentence in talk.sentences for w in sentence.target]
    turn_of = [bisect.bisect_left(ends, need) for need in word_deadlines(talk)]
    emit_at, _ = _premature_turns(turn_of, synth, rng)
    sentence_ends = np.cumsum([len(sentence.target) for sentence in talk.sentences]).tolist()
    emit_at, slipped = _slip_sentence_ends(emit_at, turn_of, sentence_ends, len(sizes) - 1, synth.segmentation_slip_rate, rng)
    premature = [emit < writable for emit, writable in zip(emit_at, turn_of)]
    texts: list[list[str]] = [[] for _ in sizes]
    omitted = wrong = 0
    for word, turn, early in zip(words, emit_at, premature):
        text = word.text
        if early and rng.random() < synth.premature_wrong_rate:
            guess = language.wrong_guess(word, rng)
            wrong += guess != text
            text = guess
        if rng.random() < synth.omit_rate:
            omitted += 1
            continue
        texts[turn].append(text)
    turns = tuple((size, " ".join(t)) for size, t in zip(sizes, texts))
    return SftDialogue(turns, len(words), omitted, sum(premature), wrong, slipped)


def _premature_turns(turn_of: list[int], synth: SynthConfig, rng: np.random.Generator) -> tuple[list[int], list[bool]]:
    """Move leading words of some turn groups 1..premature_max_turns turns earlier, keeping word order.

    Per group of words first writable in the same turn, Binomial(size, premature_rate) of its
    leading words go early, so the expected premature fraction is `premature_rate` (groups in the
    first turn cannot go earlier).
    """
    emit = list(turn_of)
    early = [False] * len(turn_of)
    if synth.premature_rate <= 0:
        return emit, early
    prev_turn = 0
    i = 0
    while i < len(turn_of):
        k = turn_of[i]
        j = i
        while j < len(turn_of) and turn_of[j] == k:
            j += 1
        lo = max(prev_turn, k - synth.premature_max_turns)
        n_early = int(rng.binomial(j - i, synth.premature_rate)) if lo < k else 0
        for offset, turn in enumerate(sorted(int(x) for x in rng.integers(lo, k, size=n_early))):
            emit[i + offset] = turn
            early[i + offset] = True
        prev_turn = emit[j - 1]
        i = j
    return emit, early


def _slip_sentence_ends(
    emit: list[int], turn_of: list[int], sentence_ends: list[int], last_turn: int, rate: float, rng: np.random.Generator
) -> tuple[list[int], int]:
    """Segmentation slips: at each boundary between two sentences, with probability `rate`, the first
    sentence's last word (the one closing it) is emitted one turn after the turn it is writable in, and
    every word of the next sentence emitted earlier than that moves along (word order kept): the end of
    the sentence merges into the next turn. A sentence writable in the dialogue's last turn cannot
    slip. Returns the emission turns and the number of slips."""
    emit = list(emit)
    if rate <= 0:
        return emit, 0
    slipped = 0
    for stop in sentence_ends[:-1]:
        if rng.random() >= rate:
            continue
        last = stop - 1
        later = turn_of[last] + 1
        if later > last_turn:
            continue
        for i in range(last, len(emit)):
            if i > last and emit[i] >= later:  # emission turns are monotonic: the rest is already later
                break
            emit[i] = max(emit[i], later)
        slipped += 1
    return emit, slipped
