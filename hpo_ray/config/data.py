"""Data config: manifests, chunking of frames into turns, and the synthetic toy-SST task."""

from pathlib import Path

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from .base import Section, Seed


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

    @model_validator(mode="after")
    def _consistent(self) -> "SynthConfig":
        if self.min_word_frames > self.max_word_frames:
            raise ValueError(f"min_word_frames={self.min_word_frames} > max_word_frames={self.max_word_frames}")
        if self.min_sentence_pause_frames > self.max_sentence_pause_frames:
            raise ValueError(f"min_sentence_pause_frames={self.min_sentence_pause_frames} > "
                             f"max_sentence_pause_frames={self.max_sentence_pause_frames}")
        if self.min_sentence_pause_frames <= self.max_word_pause_frames:
            raise ValueError(f"min_sentence_pause_frames={self.min_sentence_pause_frames} must exceed "
                             f"max_word_pause_frames={self.max_word_pause_frames} so sentence ends are audible")
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

    @property
    def turn_frames(self) -> int:
        """Frames per user turn."""
        return self.chunk_frames * self.multiplier

    @property
    def turn_seconds(self) -> float:
        """Seconds of speech per user turn (the delay step Δ)."""
        return self.chunk_frames * self.frame_seconds * self.multiplier
