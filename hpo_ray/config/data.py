"""Data config: manifests, chunking of frames into turns, and the synthetic toy-SST task."""

from pathlib import Path

from pydantic import Field, PositiveFloat, PositiveInt

from .base import Section


class SynthConfig(Section):
    """Options of `hpo-ray synth`; `language_seed` fixes the language, `seed` the talks."""

    talks: PositiveInt = 48
    seed: int = 0
    language_seed: int = 1234
    dev_fraction: float = Field(0.125, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.125, ge=0.0, lt=1.0)
    min_talk_seconds: PositiveFloat = 60.0
    src_lang: str = "en"
    tgt_lang: str = "de"
    vocab_per_class: PositiveInt = 24
    noise: float = Field(0.35, ge=0.0)
    omit_rate: float = Field(0.0, ge=0.0, le=1.0)
    premature_rate: float = Field(0.0, ge=0.0, le=1.0)


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
    seed: int = 42
    synth: SynthConfig = SynthConfig()

    @property
    def turn_frames(self) -> int:
        """Frames per user turn."""
        return self.chunk_frames * self.multiplier

    @property
    def turn_seconds(self) -> float:
        """Seconds of speech per user turn (the delay step Δ)."""
        return self.chunk_frames * self.frame_seconds * self.multiplier
