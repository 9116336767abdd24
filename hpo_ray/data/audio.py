"""Parquet manifests of spoken talks, validated row by row — wav files included — when opened.

One row per talk: `talk_id`, `audio_path` (relative to the manifest's folder or absolute; 16-bit PCM
or 32-bit float mono wav), `sample_rate`, `src_lang`, `tgt_lang`, `src_sentences`, `ref_sentences`
(1:1), `segments` ([{start, end}] seconds) and optionally `words` (per sentence, [{word, start, end}]).
"""

import math
import struct
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .manifest import ManifestError, check_talk_columns

SAMPLE_RATE = 16000
REQUIRED_COLUMNS = ("talk_id", "audio_path", "sample_rate", "src_lang", "tgt_lang", "src_sentences", "ref_sentences", "segments")
_FLOAT_FORMAT = 3  # WAVE_FORMAT_IEEE_FLOAT


class AudioError(ValueError):
    """A wav file cannot be used; the message says why (the manifest adds row and field)."""


@dataclass(frozen=True)
class SpokenTalk:
    """One talk of an audio manifest: sentences, segment times, word spans and its wav file."""

    talk_id: str
    audio_path: Path
    sample_rate: int
    n_samples: int
    src_lang: str
    tgt_lang: str
    src_sentences: tuple[str, ...]
    ref_sentences: tuple[str, ...]
    segments: tuple[tuple[float, float], ...]
    words: tuple[tuple[tuple[str, float, float], ...], ...] | None
    index: int

    @property
    def seconds(self) -> float:
        return self.n_samples / self.sample_rate

    def samples(self) -> np.ndarray:
        """The whole signal, float32 in [-1, 1]."""
        return read_wav(self.audio_path)[1]


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    """(sample rate, mono float32 samples) of a 16-bit PCM or 32-bit float wav; AudioError otherwise."""
    if not path.is_file():
        raise AudioError(f"file not found: {path}")
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate, n = wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()
            data = wav.readframes(n)
        kind = "int16"
    except wave.Error as exc:
        if "unknown format: 3" not in str(exc):
            raise AudioError(f"not a readable wav file ({path}): {exc}") from None
        channels, width, rate, data = _read_float_wav(path)
        kind = "float32"
    except (EOFError, OSError) as exc:
        raise AudioError(f"not a readable wav file ({path}): {exc}") from None
    if channels != 1:
        raise AudioError(f"{path} has {channels} channels; expected mono")
    if (kind, width) not in (("int16", 2), ("float32", 4)):
        raise AudioError(f"{path} has {8 * width}-bit {kind} samples; expected 16-bit PCM or 32-bit float")
    if len(data) % width:
        raise AudioError(f"{path}: truncated sample data")
    raw = np.frombuffer(data, dtype="<i2" if kind == "int16" else "<f4")
    samples = raw.astype(np.float32) / 32768.0 if kind == "int16" else raw.astype(np.float32)
    if samples.size == 0:
        raise AudioError(f"{path} has no samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{path} has NaN/inf at sample {int(np.argwhere(~np.isfinite(samples))[0][0])}")
    return rate, samples


def _read_float_wav(path: Path) -> tuple[int, int, int, bytes]:
    """(channels, bytes per sample, rate, data) of an IEEE-float wav, which the `wave` module refuses."""
    blob = path.read_bytes()
    if blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise AudioError(f"not a RIFF/WAVE file: {path}")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(blob):
        name, size = blob[pos : pos + 4], struct.unpack("<I", blob[pos + 4 : pos + 8])[0]
        body = blob[pos + 8 : pos + 8 + size]
        if name == b"fmt " and len(body) >= 16:
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif name == b"data":
            data = body
        pos += 8 + size + (size & 1)
    if fmt is None or data is None or fmt[0] != _FLOAT_FORMAT:
        raise AudioError(f"not a readable wav file ({path}): no float fmt/data chunk")
    return fmt[1], fmt[5] // 8, fmt[2], data


class AudioManifest:
    """A validated list of spoken talks. Construction reads every row and every wav file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ManifestError(self.path, None, "<file>", "audio manifest not found")
        try:
            table = pq.read_table(self.path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise ManifestError(self.path, None, "<file>", f"not a readable parquet file: {exc}") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise ManifestError(self.path, None, missing[0], f"required column missing (have {table.column_names})")
        has_words = "words" in table.column_names
        rows = table.select(list(REQUIRED_COLUMNS) + (["words"] if has_words else [])).to_pylist()
        seen: dict[str, int] = {}
        self.talks: list[SpokenTalk] = []
        for i, row in enumerate(rows):
            talk = self._talk(i, row)
            if talk.talk_id in seen:
                raise ManifestError(self.path, i, "talk_id", f"duplicate of row {seen[talk.talk_id]}")
            seen[talk.talk_id] = i
            self.talks.append(talk)
        if not self.talks:
            raise ManifestError(self.path, None, "<file>", "audio manifest has no rows")

    def __len__(self) -> int:
        return len(self.talks)

    def __iter__(self):
        return iter(self.talks)

    def __getitem__(self, i: int) -> SpokenTalk:
        return self.talks[i]

    def _talk(self, i: int, row: dict) -> SpokenTalk:
        def fail(column: str, message: str) -> ManifestError:
            return ManifestError(self.path, i, column, message)

        spans = check_talk_columns(row, "audio_path", fail)
        src, ref = row["src_sentences"], row["ref_sentences"]
        if row["sample_rate"] != SAMPLE_RATE:
            raise fail("sample_rate", f"expected {SAMPLE_RATE}, got {row['sample_rate']!r}")
        words = self._words(row.get("words"), len(src), fail)
        apath = Path(row["audio_path"])
        apath = apath if apath.is_absolute() else self.path.parent / apath
        try:
            rate, samples = read_wav(apath)
        except AudioError as exc:
            raise fail("audio_path", str(exc)) from None
        if rate != row["sample_rate"]:
            raise fail("audio_path", f"{apath} is sampled at {rate} Hz; the row's sample_rate is {row['sample_rate']}")
        seconds = len(samples) / rate
        if spans[-1][1] > seconds + 1e-3:
            raise fail("segments", f"last segment ends at {spans[-1][1]} s but {apath} lasts {seconds:.3f} s")
        return SpokenTalk(
            talk_id=row["talk_id"],
            audio_path=apath,
            sample_rate=rate,
            n_samples=len(samples),
            src_lang=row["src_lang"],
            tgt_lang=row["tgt_lang"],
            src_sentences=tuple(src),
            ref_sentences=tuple(ref),
            segments=spans,
            words=words,
            index=i,
        )

    @staticmethod
    def _words(words, n_sentences: int, fail):
        if words is None:
            return None
        if not isinstance(words, list) or len(words) != n_sentences:
            raise fail("words", f"expected one word list per sentence ({n_sentences}), got {words!r:.80}")
        out = []
        for k, sentence in enumerate(words):
            spans = []
            for w in sentence or []:
                if not isinstance(w, dict) or not {"word", "start", "end"} <= set(w):
                    raise fail("words", f"sentence {k}: each word must be {{word, start, end}}, got {w!r}")
                s, e = w["start"], w["end"]
                if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (s, e)) or s < 0 or e < s:
                    raise fail("words", f"sentence {k}: word {w['word']!r} needs finite 0 <= start <= end, got {w!r}")
                spans.append((str(w["word"]), float(s), float(e)))
            out.append(tuple(spans))
        return tuple(out)
