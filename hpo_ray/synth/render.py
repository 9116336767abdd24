"""Render a talk as pre-encoded speech features: each source word is a run of noisy copies of its
fixed vector, with short pauses between some words and longer ones between sentences."""

import math
from dataclasses import dataclass

import numpy as np

from hpo_ray.config import SynthConfig

from .language import SILENCE, Language, Sentence


@dataclass(frozen=True)
class RenderedTalk:
    """A talk's sentences, frames [n_frames, dim] float32, each source word's frame span [start, end),
    and the frames of silence that mark a sentence end (more than any pause inside a sentence)."""

    talk_id: str
    sentences: tuple[Sentence, ...]
    frames: np.ndarray
    word_spans: tuple[tuple[tuple[int, int], ...], ...]  # per sentence, per source word
    end_margin_frames: int

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    def segments(self, frame_seconds: float) -> list[dict[str, float]]:
        """Seconds from the talk start of each sentence's first word start to its last word end."""
        return [
            {"start": round(spans[0][0] * frame_seconds, 6), "end": round(spans[-1][1] * frame_seconds, 6)} for spans in self.word_spans
        ]


def word_frames(word: str, synth: SynthConfig, rng: np.random.Generator) -> int:
    """Duration of one spoken word in frames: longer words last longer, plus ±1 frame of jitter."""
    base = synth.min_word_frames + len(word) // 3 + int(rng.integers(-1, 2))
    return int(min(max(base, synth.min_word_frames), synth.max_word_frames))


def render_talk(
    talk_id: str, language: Language, synth: SynthConfig, dim: int, frame_seconds: float, chunk_frames: int, rng: np.random.Generator
) -> RenderedTalk:
    """Draw sentences until the talk lasts `synth.min_talk_seconds`, then pad with silence to a
    whole number of chunks (the trailing pause is never shorter than a sentence pause)."""
    min_frames = math.ceil(synth.min_talk_seconds / frame_seconds - 1e-9)
    pieces: list[tuple[str, int]] = []  # (word or SILENCE, frames)
    sentences: list[Sentence] = []
    spans: list[tuple[tuple[int, int], ...]] = []
    t = int(rng.integers(synth.min_sentence_pause_frames, synth.max_sentence_pause_frames + 1))
    pieces.append((SILENCE, t))
    while t < min_frames:
        sentence = language.sample_sentence(rng)
        word_spans = []
        for k, word in enumerate(sentence.source):
            if k and rng.random() < synth.word_pause_rate:
                pause = int(rng.integers(1, synth.max_word_pause_frames + 1))
                pieces.append((SILENCE, pause))
                t += pause
            n = word_frames(word, synth, rng)
            pieces.append((word, n))
            word_spans.append((t, t + n))
            t += n
        pause = int(rng.integers(synth.min_sentence_pause_frames, synth.max_sentence_pause_frames + 1))
        pieces.append((SILENCE, pause))
        t += pause
        sentences.append(sentence)
        spans.append(tuple(word_spans))
    pad = -t % chunk_frames
    if pad:
        pieces.append((SILENCE, pad))
        t += pad
    frames = np.empty((t, dim), dtype=np.float32)
    pos = 0
    for word, n in pieces:
        noise = rng.standard_normal((n, dim)).astype(np.float32)
        frames[pos : pos + n] = synth.feature_scale * (language.word_vector(word, dim) + synth.noise * noise)
        pos += n
    return RenderedTalk(talk_id, tuple(sentences), frames, tuple(spans), synth.max_word_pause_frames + 1)
