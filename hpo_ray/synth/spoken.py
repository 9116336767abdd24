"""Spoken talks: the toy language's source sentences spoken by eSpeak NG (see `espeak`).

Every word's start is its engine word event; it ends where the next word starts, and a
sentence's last word ends where its energy does. Pauses are inserted as silence between words and
sentences, so word times shift by exactly the pauses before them. The talk is resampled once to
16 kHz mono int16 and padded with silence to whole chunks. Each talk is spoken in a fresh process,
because the engine's state cannot be reset: the same seed gives byte-identical audio.
"""

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from hpo_ray.config import AUDIO_SAMPLE_RATE, SpeechConfig, SynthConfig

from . import espeak
from .language import Language, Sentence
from .sft import TalkAlignment

FADE_SECONDS = 0.005  # fades at every cut next to inserted silence, against clicks
ENERGY_WINDOW_SECONDS = 0.005
SPEECH_END_DB = -40.0  # after the last word starts, windows this far below the sentence's loudest are silence


@dataclass(frozen=True)
class Speaker:
    """How one talk is spoken: eSpeak NG voice, words per minute, base pitch (0..99), the engine's
    random seed, and the SNR of added white noise (None: clean) with the noise's seed."""

    voice: str
    rate_wpm: int
    pitch: int
    engine_seed: int
    noise_snr_db: float | None
    noise_seed: int


@dataclass(frozen=True)
class SpokenTalk:
    """A talk's sentences, its 16 kHz int16 audio, and each source word's (start, end) in seconds
    from the talk start, per sentence; `engine` is the eSpeak NG version that spoke it."""

    talk_id: str
    sentences: tuple[Sentence, ...]
    audio: np.ndarray
    words: tuple[tuple[tuple[float, float], ...], ...]
    speaker: Speaker
    engine: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / AUDIO_SAMPLE_RATE

    def segments(self) -> list[dict[str, float]]:
        """Each sentence's first word start to its last word end, seconds from the talk start."""
        return [{"start": spans[0][0], "end": spans[-1][1]} for spans in self.words]

    def word_rows(self) -> list[list[dict]]:
        """Per sentence, per source word: {"word", "start", "end"} (seconds), as the audio manifest stores them."""
        return [[{"word": w, "start": a, "end": b} for w, (a, b) in zip(s.source, spans)] for s, spans in zip(self.sentences, self.words)]

    def aligned(self, frame_seconds: float, end_margin_frames: int) -> TalkAlignment:
        """The talk on the frame grid: a word spans the frames it overlaps (at least one)."""

        def span(a: float, b: float) -> tuple[int, int]:
            first = math.floor(a / frame_seconds + 1e-9)
            return first, max(first + 1, math.ceil(b / frame_seconds - 1e-9))

        frame = round(frame_seconds * AUDIO_SAMPLE_RATE)
        spans = tuple(tuple(span(a, b) for a, b in sentence) for sentence in self.words)
        return TalkAlignment(self.talk_id, self.sentences, spans, len(self.audio) // frame, end_margin_frames)


def draw_speaker(speech: SpeechConfig, rng: np.random.Generator) -> Speaker:
    """One talk's speaker, drawn from the configured voices and ranges."""
    voice = speech.voices[int(rng.integers(len(speech.voices)))]
    rate = int(rng.integers(speech.rate_wpm[0], speech.rate_wpm[1] + 1))
    pitch = int(rng.integers(speech.pitch[0], speech.pitch[1] + 1))
    engine_seed = int(rng.integers(1, 2**31 - 1))
    u, noise_seed = float(rng.random()), int(rng.integers(2**63 - 1))  # drawn either way: noise changes nothing else
    lo_hi = speech.noise_snr_db
    snr = lo_hi[0] + u * (lo_hi[1] - lo_hi[0]) if lo_hi is not None else None
    return Speaker(voice, rate, pitch, engine_seed, snr, noise_seed)


class _Track:
    """The talk being assembled at the engine's rate: float32 pieces and their total length in samples."""

    def __init__(self, sample_rate: int):
        self.sample_rate, self.pieces, self.length = sample_rate, [], 0

    @property
    def seconds(self) -> float:
        return self.length / self.sample_rate

    def append(self, pcm: np.ndarray) -> int:
        start = self.length
        self.pieces.append(pcm)
        self.length += len(pcm)
        return start

    def pause(self, seconds: float) -> None:
        self.append(np.zeros(round(seconds * self.sample_rate), np.float32))


def speak_talk(
    talk_id: str, language: Language, synth: SynthConfig, frame_seconds: float, chunk_frames: int, rng: np.random.Generator
) -> SpokenTalk:
    """Draw and speak sentences until the talk lasts `synth.min_talk_seconds`; loads the engine, so
    call it once per process (`speak_talks` does)."""
    speech = synth.speech
    speaker = draw_speaker(speech, rng)
    engine = espeak.ESpeak(speaker.engine_seed)
    engine.set_voice(speaker.voice, speaker.rate_wpm, speaker.pitch)
    track = _Track(engine.sample_rate)
    track.pause(rng.uniform(*speech.sentence_pause_seconds))
    sentences: list[Sentence] = []
    words: list[tuple[tuple[float, float], ...]] = []
    while track.seconds < synth.min_talk_seconds:
        sentence = language.sample_sentence(rng)
        utterance = engine.speak(sentence.source_text, sentence.source)
        words.append(_place_sentence(track, utterance, speech, rng))
        track.pause(rng.uniform(*speech.sentence_pause_seconds))
        sentences.append(sentence)
    audio = _wav_samples(track, words, speaker, round(frame_seconds * AUDIO_SAMPLE_RATE) * chunk_frames)
    return SpokenTalk(talk_id, tuple(sentences), audio, tuple(words), speaker, engine.version)


def word_bounds(utterance: espeak.Utterance) -> list[int]:
    """Engine samples where each word starts, then where the last one ends (its energy end)."""
    bounds = [e.sample for e in utterance.words] + [speech_end(utterance)]
    if any(b >= c for b, c in zip(bounds, bounds[1:])):
        raise espeak.SpeechError(f"word events are not strictly increasing: {bounds}")
    return bounds


def speech_end(utterance: espeak.Utterance) -> int:
    """The end of the last loud window after the last word starts (trailing silence trimmed)."""
    width = max(1, round(ENERGY_WINDOW_SECONDS * utterance.sample_rate))
    x = utterance.pcm.astype(np.float64)
    x = np.concatenate([x, np.zeros(-len(x) % width)])
    rms = np.sqrt(np.mean(x.reshape(-1, width) ** 2, axis=1))
    start = utterance.words[-1].sample // width
    loud = np.nonzero(rms[start:] > rms.max() * 10 ** (SPEECH_END_DB / 20))[0]
    if not len(loud):
        raise espeak.SpeechError(f"the last word (sample {utterance.words[-1].sample}) is silent")
    return min(len(utterance.pcm), (start + int(loud[-1]) + 1) * width)


def _place_sentence(
    track: _Track, utterance: espeak.Utterance, speech: SpeechConfig, rng: np.random.Generator
) -> tuple[tuple[float, float], ...]:
    """Append one sentence, cut into runs of words at the boundaries that get a pause; each word's
    (start, end) in seconds is its event-delimited span moved to where its run lands."""
    bounds = word_bounds(utterance)
    pcm, rate, n = utterance.pcm.astype(np.float32), utterance.sample_rate, len(utterance.words)
    fade = np.linspace(0.0, 1.0, max(1, round(FADE_SECONDS * rate)), dtype=np.float32)
    spans: list[tuple[float, float]] = []
    first = 0
    for k in range(1, n + 1):
        if k < n and rng.random() >= speech.word_pause_rate:
            continue
        run = pcm[bounds[first] : bounds[k]].copy()
        m = min(len(fade), len(run))
        run[:m] *= fade[:m]
        run[len(run) - m :] *= fade[::-1][len(fade) - m :]
        at = track.append(run) - bounds[first]
        spans += [((at + bounds[j]) / rate, (at + bounds[j + 1]) / rate) for j in range(first, k)]
        if k < n:
            track.pause(rng.uniform(*speech.word_pause_seconds))
        first = k
    return tuple(spans)


def _wav_samples(track: _Track, words: list[tuple[tuple[float, float], ...]], speaker: Speaker, chunk_samples: int) -> np.ndarray:
    """Resample the track to 16 kHz, pad it to whole chunks, add the speaker's noise, quantise to int16."""
    from scipy.signal import resample_poly  # imported here: only spoken talks need it

    g = math.gcd(AUDIO_SAMPLE_RATE, track.sample_rate)
    y = resample_poly(np.concatenate(track.pieces), AUDIO_SAMPLE_RATE // g, track.sample_rate // g).astype(np.float64)
    y = np.concatenate([y, np.zeros(-len(y) % chunk_samples)])
    if speaker.noise_snr_db is not None:
        speech = np.concatenate([y[round(a * AUDIO_SAMPLE_RATE) : round(b * AUDIO_SAMPLE_RATE)] for sentence in words for a, b in sentence])
        sigma = math.sqrt(np.mean(speech**2) / 10 ** (speaker.noise_snr_db / 10))
        y = y + sigma * np.random.default_rng(speaker.noise_seed).standard_normal(len(y))
    return np.clip(np.rint(y), -32768, 32767).astype("<i2")


# --- one fresh process per talk ---------------------------------------------------------------
def fresh_processes(workers: int | None, tasks: int) -> ProcessPoolExecutor:
    """A pool whose every task runs in a new process forked from a clean server (spawned where
    forkserver is missing), so every talk meets a freshly loaded engine."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload([__name__, "scipy.signal"])  # imported once by the server (seconds), not per talk
    n = max(1, min(workers or os.cpu_count() or 1, tasks))
    return ProcessPoolExecutor(n, mp_context=ctx, max_tasks_per_child=1)


def speak_talks(jobs: list[tuple], workers: int | None) -> list[SpokenTalk]:
    """`speak_talk(*job)` for every job, in order, each in its own fresh process."""
    espeak.require()
    with fresh_processes(workers, len(jobs)) as pool:
        return list(pool.map(_speak_job, jobs))


def unknown_voices(voices: tuple[str, ...]) -> list[str]:
    """The voices eSpeak NG does not know (checked in a fresh process)."""
    espeak.require()
    with fresh_processes(1, 1) as pool:
        return pool.submit(_unknown_voices, voices).result()


def _speak_job(job: tuple) -> SpokenTalk:
    return speak_talk(*job)


def _unknown_voices(voices: tuple[str, ...]) -> list[str]:
    engine = espeak.ESpeak(1)
    unknown = []
    for voice in voices:
        try:
            engine.set_voice(voice, 175, 50)
        except espeak.SpeechError:
            unknown.append(voice)
    return unknown
