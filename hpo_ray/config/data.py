"""Data config: manifests, chunking of frames into turns, and the synthetic toy-SST task."""

import math
from pathlib import Path

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from .base import Section, Seed

AUDIO_SAMPLE_RATE = 16000  # Hz of spoken talks' wav files (mono int16)
DEFAULT_VOICES = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us-nyc",
    "en-us+f2",
    "en+f4",
    "en-gb-x-rp+f3",
    "en-us+m3",
    "en+m7",
)


def _ordered(name: str, pair: tuple[float, float]) -> None:
    if pair[0] > pair[1]:
        raise ValueError(f"{name}={list(pair)}: the low end exceeds the high end")


class SpeechConfig(Section):
    """Spoken talks (`hpo-ray synth --speech`): eSpeak NG voices, rates and pauses, drawn per talk.

    eSpeak NG is GPL-3 and an optional extra (`pip install 'hpo-ray[speech]'`). Each talk gets one
    voice, rate and pitch; `word_pause_rate` of the word boundaries get a pause; every sentence is
    followed by a sentence pause; `noise_snr_db`, when set, adds white noise at an SNR drawn from it.
    """

    enabled: bool = False
    voices: tuple[str, ...] = Field(DEFAULT_VOICES, min_length=1)
    rate_wpm: tuple[int, int] = (150, 200)
    pitch: tuple[int, int] = (35, 65)
    word_pause_rate: float = Field(0.2, ge=0.0, le=1.0)
    word_pause_seconds: tuple[PositiveFloat, PositiveFloat] = (0.03, 0.15)
    sentence_pause_seconds: tuple[PositiveFloat, PositiveFloat] = (0.45, 0.9)
    noise_snr_db: tuple[float, float] | None = None
    workers: PositiveInt | None = None  # processes speaking talks at once; None: one per CPU

    @model_validator(mode="after")
    def _ranges(self) -> "SpeechConfig":
        for name in ("rate_wpm", "pitch", "word_pause_seconds", "sentence_pause_seconds", "noise_snr_db"):
            if getattr(self, name) is not None:
                _ordered(name, getattr(self, name))
        if not 80 <= self.rate_wpm[0] <= self.rate_wpm[1] <= 450:
            raise ValueError(f"rate_wpm={list(self.rate_wpm)} must lie within eSpeak NG's 80..450 words per minute")
        if not 0 <= self.pitch[0] <= self.pitch[1] <= 99:
            raise ValueError(f"pitch={list(self.pitch)} must lie within 0..99")
        return self

    def end_margin_frames(self, frame_seconds: float) -> int:
        """Frames of silence after a sentence's last word that no pause inside a sentence reaches."""
        return math.ceil(self.word_pause_seconds[1] / frame_seconds - 1e-9) + 1


class SynthConfig(Section):
    """Options of `hpo-ray synth`: `language_seed` fixes the toy language, `seed` the talks drawn from it.

    The lexicon sizes and `language_seed` define the language (words, translations, frame vectors);
    the rates below only shape how talks and SFT dialogues are sampled from it.
    """

    talks: PositiveInt = 48
    seed: Seed = 0
    language_seed: Seed = 1234
    dev_fraction: float = Field(0.125, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.125, ge=0.0, lt=1.0)
    min_talk_seconds: PositiveFloat = 60.0
    src_lang: str = "en"
    tgt_lang: str = "de"
    # Lexicon (with language_seed, fixes the language).
    agent_nouns: PositiveInt = 14
    thing_nouns: PositiveInt = 14
    adjectives: PositiveInt = 12
    verbs: PositiveInt = 14
    adverbs: PositiveInt = 6
    polysemous_verb_fraction: float = Field(0.5, ge=0.0, le=1.0)
    # Grammar: how often the optional parts of a sentence appear.
    adjective_rate: float = Field(0.5, ge=0.0, le=1.0)
    adverb_rate: float = Field(0.25, ge=0.0, le=1.0)
    subordinate_rate: float = Field(0.25, ge=0.0, le=1.0)
    # Rendering of words as frames (frame counts at data.frame_seconds each).
    feature_scale: PositiveFloat = 1.0
    noise: float = Field(0.35, ge=0.0)
    min_word_frames: PositiveInt = 2
    max_word_frames: PositiveInt = 6
    word_pause_rate: float = Field(0.3, ge=0.0, le=1.0)
    max_word_pause_frames: PositiveInt = 2
    min_sentence_pause_frames: PositiveInt = 4
    max_sentence_pause_frames: PositiveInt = 9
    # Dialogue-form SFT data (paper appendix A.3: c in [1, 12] merged chunks per turn).
    sft_dialogues_per_talk: PositiveInt = 4
    sft_max_merge: PositiveInt = 4
    omit_rate: float = Field(0.0, ge=0.0, le=1.0)
    premature_rate: float = Field(0.0, ge=0.0, le=1.0)
    premature_max_turns: PositiveInt = 2
    premature_wrong_rate: float = Field(0.5, ge=0.0, le=1.0)
    segmentation_slip_rate: float = Field(0.0, ge=0.0, le=1.0)  # per sentence boundary: its closing word a turn late
    # Spoken talks instead of rendered feature vectors.
    speech: SpeechConfig = SpeechConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "SynthConfig":
        if self.min_word_frames > self.max_word_frames:
            raise ValueError(f"min_word_frames={self.min_word_frames} > max_word_frames={self.max_word_frames}")
        if self.min_sentence_pause_frames > self.max_sentence_pause_frames:
            raise ValueError(
                f"min_sentence_pause_frames={self.min_sentence_pause_frames} > max_sentence_pause_frames={self.max_sentence_pause_frames}"
            )
        if self.min_sentence_pause_frames <= self.max_word_pause_frames:
            raise ValueError(
                f"min_sentence_pause_frames={self.min_sentence_pause_frames} must exceed "
                f"max_word_pause_frames={self.max_word_pause_frames} so sentence ends are audible"
            )
        if self.dev_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"dev_fraction + test_fraction = {self.dev_fraction + self.test_fraction} leaves no train talks")
        return self


class DataConfig(Section):
    """Where talks come from and how their frames are cut into turns.

    One turn carries `chunk_frames * multiplier` frames; `chunk_seconds`, when given, must equal
    `chunk_frames * frame_seconds * multiplier` (the original kept these consistent by hand).
    """

    train_manifest: Path | None = None
    dev_manifest: Path | None = None
    test_manifest: Path | None = None
    sft_dir: Path | None = None
    chunk_frames: PositiveInt = 14
    frame_seconds: PositiveFloat = 0.08
    multiplier: PositiveInt = 1
    chunk_seconds: PositiveFloat | None = None
    max_talk_seconds: PositiveFloat | None = None
    shuffle: bool = True
    seed: Seed = 42
    synth: SynthConfig = SynthConfig()

    @model_validator(mode="after")
    def _speech_fits_the_frame_grid(self) -> "DataConfig":
        speech = self.synth.speech
        samples = self.frame_seconds * AUDIO_SAMPLE_RATE
        if abs(samples - round(samples)) > 1e-6:
            if speech.enabled:
                raise ValueError(
                    f"frame_seconds={self.frame_seconds} is no whole number of {AUDIO_SAMPLE_RATE} Hz samples, which synth.speech needs"
                )
            return self
        # A sentence pause must outlast the end margin plus one frame of rounding on each side.
        need = (speech.end_margin_frames(self.frame_seconds) + 2) * self.frame_seconds
        if speech.sentence_pause_seconds[0] < need - 1e-9:
            raise ValueError(
                f"synth.speech.sentence_pause_seconds starts at {speech.sentence_pause_seconds[0]} s; with "
                f"word pauses up to {speech.word_pause_seconds[1]} s and {self.frame_seconds} s frames it "
                f"must be at least {need:.3f} s so sentence ends are audible"
            )
        return self

    @property
    def turn_frames(self) -> int:
        """Frames per user turn."""
        return self.chunk_frames * self.multiplier

    @property
    def turn_seconds(self) -> float:
        """Seconds of speech per user turn (the delay step Δ)."""
        return self.chunk_frames * self.frame_seconds * self.multiplier
