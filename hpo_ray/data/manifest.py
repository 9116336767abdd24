"""Parquet manifests of talks, validated row by row when opened (never mid-training).

One row per talk: `talk_id`, `features_path` (relative to the manifest's folder or absolute),
`features_row` (null = the .npy holds one [frames, width] talk; else a row of a [rows, frames, width]
array), `frame_seconds`, `src_lang`, `tgt_lang`, `src_sentences`, `ref_sentences` (1:1),
`segments` ([{start, end}] seconds). Features are memory-mapped and read only when a talk runs.
"""

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hpo_ray.errors import InputError

REQUIRED_COLUMNS = (
    "talk_id",
    "features_path",
    "features_row",
    "frame_seconds",
    "src_lang",
    "tgt_lang",
    "src_sentences",
    "ref_sentences",
    "segments",
)
_VALUE_CHECK_FRAMES = 4096
# The parquet schema of a manifest as hpo-ray writes it (synth, encode, import-manifest).
MANIFEST_SCHEMA = pa.schema(
    [
        ("talk_id", pa.string()),
        ("features_path", pa.string()),
        ("features_row", pa.int64()),
        ("frame_seconds", pa.float64()),
        ("src_lang", pa.string()),
        ("tgt_lang", pa.string()),
        ("src_sentences", pa.list_(pa.string())),
        ("ref_sentences", pa.list_(pa.string())),
        ("segments", pa.list_(pa.struct([("start", pa.float64()), ("end", pa.float64())]))),
    ]
)


class ManifestError(InputError):
    """A manifest row is invalid; the message names the file, the row and the field."""

    def __init__(self, manifest: Path, row: int | None, column: str, message: str):
        where = f"{manifest}" + (f" row {row}" if row is not None else "") + f" field '{column}'"
        super().__init__(f"{where}: {message}")
        self.manifest, self.row, self.column = manifest, row, column


@dataclass(frozen=True)
class Talk:
    """One talk: its sentences, segment times and a lazy handle on its feature frames."""

    talk_id: str
    group_id: str
    features_path: Path
    features_row: int | None
    n_frames: int
    width: int
    frame_seconds: float
    src_lang: str
    tgt_lang: str
    src_sentences: tuple[str, ...]
    ref_sentences: tuple[str, ...]
    segments: tuple[tuple[float, float], ...]
    index: int = field(default=-1, compare=False)
    frame_start: int = 0  # first frame in the feature array (a window of a longer talk starts later)

    @property
    def seconds(self) -> float:
        return self.n_frames * self.frame_seconds

    def frames(self) -> np.ndarray:
        """The talk's frames, [n_frames, width], memory-mapped (read-only)."""
        arr = np.load(self.features_path, mmap_mode="r", allow_pickle=False)
        arr = arr if self.features_row is None else arr[self.features_row]
        return arr[self.frame_start : self.frame_start + self.n_frames]

    def turn_spans(self, turn_frames: int) -> list[tuple[int, int]]:
        """Frame ranges [start, end) of the user turns; the last turn carries the remainder."""
        return turn_spans(self.n_frames, turn_frames)


def turn_spans(n_frames: int, turn_frames: int) -> list[tuple[int, int]]:
    """Cut `n_frames` into consecutive turns of `turn_frames` (the last may be shorter)."""
    if turn_frames <= 0:
        raise ValueError(f"turn_frames must be positive, got {turn_frames}")
    return [(s, min(s + turn_frames, n_frames)) for s in range(0, n_frames, turn_frames)]


def stable_group_id(features_path: str, row: int | None) -> str:
    """A group id stable across processes and machines (not Python's salted `hash`)."""
    key = f"{features_path}:{-1 if row is None else row}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def check_talk_columns(row: dict, path_column: str, fail) -> tuple[tuple[float, float], ...]:
    """The columns every manifest shares (features or audio): ids, languages, sentences and references
    1:1 with the segments; returns the validated segments. `fail(column, message)` builds the error."""
    for col in ("talk_id", path_column, "src_lang", "tgt_lang"):
        if not isinstance(row[col], str) or not row[col]:
            raise fail(col, f"expected a non-empty string, got {row[col]!r}")
    src, ref, segs = row["src_sentences"], row["ref_sentences"], row["segments"]
    for col, val in (("src_sentences", src), ("ref_sentences", ref), ("segments", segs)):
        if not isinstance(val, list) or not val:
            raise fail(col, f"expected a non-empty list, got {val!r}")
    if not all(isinstance(s, str) for s in src):
        raise fail("src_sentences", "every sentence must be a string")
    if not all(isinstance(s, str) and s.strip() for s in ref):
        raise fail("ref_sentences", "every reference sentence must be a non-empty string")
    if not (len(src) == len(ref) == len(segs)):
        col = "ref_sentences" if len(src) != len(ref) else "segments"
        raise fail(col, f"counts differ: {len(src)} src_sentences, {len(ref)} ref_sentences, {len(segs)} segments")
    return Manifest._segments(segs, fail)


class Manifest:
    """A validated list of talks. Construction reads every row and checks every feature file."""

    def __init__(self, path: str | Path, width: int | None = None, frame_seconds: float | None = None, check_values: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise ManifestError(self.path, None, "<file>", "manifest not found")
        try:
            table = pq.read_table(self.path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise ManifestError(self.path, None, "<file>", f"not a readable parquet file: {exc}") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise ManifestError(self.path, None, missing[0], f"required column missing (have {table.column_names})")
        rows = table.select(list(REQUIRED_COLUMNS)).to_pylist()
        seen: dict[str, int] = {}
        self.talks: list[Talk] = []
        for i, row in enumerate(rows):
            talk = self._talk(i, row, width, frame_seconds, check_values)
            if talk.talk_id in seen:
                raise ManifestError(self.path, i, "talk_id", f"duplicate of row {seen[talk.talk_id]}")
            seen[talk.talk_id] = i
            self.talks.append(talk)
        if not self.talks:
            raise ManifestError(self.path, None, "<file>", "manifest has no rows")

    def __len__(self) -> int:
        return len(self.talks)

    def __getitem__(self, i: int) -> Talk:
        return self.talks[i]

    def __iter__(self):
        return iter(self.talks)

    def by_id(self, talk_id: str) -> Talk:
        for talk in self.talks:
            if talk.talk_id == talk_id:
                return talk
        raise KeyError(f"{self.path}: no talk {talk_id!r}")

    def _talk(self, i: int, row: dict, width: int | None, frame_seconds: float | None, check_values: bool) -> Talk:
        def fail(column: str, message: str) -> ManifestError:
            return ManifestError(self.path, i, column, message)

        spans = check_talk_columns(row, "features_path", fail)
        src, ref = row["src_sentences"], row["ref_sentences"]
        fs = row["frame_seconds"]
        if not isinstance(fs, (int, float)) or not math.isfinite(fs) or fs <= 0:
            raise fail("frame_seconds", f"expected a positive number, got {fs!r}")
        if frame_seconds is not None and abs(fs - frame_seconds) > 1e-9:
            raise fail("frame_seconds", f"{fs} differs from the config's data.frame_seconds={frame_seconds}")
        features_row = row["features_row"]
        if features_row is not None and (not isinstance(features_row, int) or features_row < 0):
            raise fail("features_row", f"expected null or a non-negative integer, got {features_row!r}")
        fpath = Path(row["features_path"])
        fpath = fpath if fpath.is_absolute() else self.path.parent / fpath
        n_frames, w = self._check_features(fpath, features_row, width, check_values, fail)
        if spans[-1][1] > n_frames * fs + fs + 1e-6:
            raise fail(
                "segments", f"last segment ends at {spans[-1][1]} s but the features hold only {n_frames} frames = {n_frames * fs:.3f} s"
            )
        return Talk(
            talk_id=row["talk_id"],
            group_id=stable_group_id(row["features_path"], features_row),
            features_path=fpath,
            features_row=features_row,
            n_frames=n_frames,
            width=w,
            frame_seconds=float(fs),
            src_lang=row["src_lang"],
            tgt_lang=row["tgt_lang"],
            src_sentences=tuple(src),
            ref_sentences=tuple(ref),
            segments=spans,
            index=i,
        )

    @staticmethod
    def _segments(segs: list, fail) -> tuple[tuple[float, float], ...]:
        spans = []
        for k, seg in enumerate(segs):
            if not isinstance(seg, dict) or not {"start", "end"} <= set(seg):
                raise fail("segments", f"segment {k} must be {{start, end}}, got {seg!r}")
            s, e = seg["start"], seg["end"]
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (s, e)) or s < 0 or e <= s:
                raise fail("segments", f"segment {k} needs finite 0 <= start < end, got {seg!r}")
            if spans and s < spans[-1][1] - 1e-9:
                raise fail(
                    "segments",
                    f"segment {k} starts at {s} before segment {k - 1} ends at {spans[-1][1]} "
                    "(segments must be sorted and non-overlapping)",
                )
            spans.append((float(s), float(e)))
        return tuple(spans)

    @staticmethod
    def _check_features(fpath: Path, row: int | None, width: int | None, check_values: bool, fail) -> tuple[int, int]:
        if not fpath.is_file():
            raise fail("features_path", f"file not found: {fpath}")
        try:
            arr = np.load(fpath, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise fail("features_path", f"not a readable .npy array ({fpath}): {exc}") from None
        if row is None:
            if arr.ndim != 2:
                raise fail("features_path", f"{fpath} has shape {arr.shape}; with a null features_row it must be 2-D [frames, width]")
            talk = arr
        else:
            if arr.ndim != 3:
                raise fail("features_row", f"{fpath} has shape {arr.shape}; with a features_row it must be 3-D [rows, frames, width]")
            if row >= arr.shape[0]:
                raise fail("features_row", f"row {row} out of range for {fpath} with {arr.shape[0]} rows")
            talk = arr[row]
        if not np.issubdtype(talk.dtype, np.floating):
            raise fail("features_path", f"{fpath} has dtype {talk.dtype}; expected floating point")
        if width is not None and talk.shape[1] != width:
            raise fail("features_path", f"{fpath} has width {talk.shape[1]}; the model's hidden size is {width}")
        if talk.shape[0] == 0:
            raise fail("features_path", f"{fpath} has no frames")
        if check_values:
            for start in range(0, talk.shape[0], _VALUE_CHECK_FRAMES):
                block = np.asarray(talk[start : start + _VALUE_CHECK_FRAMES])
                if not np.isfinite(block).all():
                    bad = start + int(np.argwhere(~np.isfinite(block))[0][0])
                    raise fail("features_path", f"{fpath} has NaN/inf at frame {bad}")
        return int(talk.shape[0]), int(talk.shape[1])
