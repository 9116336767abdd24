"""Convert a manifest in the original HPO / InfiniSST parquet schema into hpo-ray's.

The original rows name a row of a shared `.npy` array (`audio_npy_path`, `audio_npy_row`), the
frames per 1.12 s chunk (`chunk_frame_size`), the sentence times (`segment_info`) and the source and
reference sentences (`src_segments`, `tgt_segments`, 1:1). Languages are not in that schema, so
the caller names them. Nothing is copied: the new manifest points at the same feature files.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .manifest import MANIFEST_SCHEMA, Manifest, ManifestError

ORIGINAL_COLUMNS = ("audio_npy_path", "audio_npy_row", "chunk_frame_size", "src_segments", "tgt_segments", "segment_info")


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote: talks, sentences, and the chunk size the data was encoded with."""

    out: Path
    talks: int
    sentences: int
    chunk_frames: int
    seconds: float


def original_talk_id(npy_path: str, row: int | None) -> str:
    """A readable, stable id from the feature file and row, e.g. `en000-000-r420`."""
    p = Path(npy_path)
    return f"{p.parent.name}-{p.stem}" + ("" if row is None else f"-r{row}")


def import_original(
    source: str | Path, out: str | Path, src_lang: str, tgt_lang: str, frame_seconds: float = 0.08, chunk_frames: int | None = None
) -> ImportReport:
    """Read `source` (original schema), write `out` (ours), then open it as a Manifest to validate every row.

    `chunk_frames`, when given, must equal every row's `chunk_frame_size` (the config's `data.chunk_frames`).
    """
    source, out = Path(source), Path(out)
    if not source.is_file():
        raise ManifestError(source, None, "<file>", "manifest not found")
    try:
        table = pq.read_table(source)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ManifestError(source, None, "<file>", f"not a readable parquet file: {exc}") from None
    missing = [c for c in ORIGINAL_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(source, None, missing[0], f"column of the original HPO schema missing (have {table.column_names})")
    for name, lang in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
        if not lang:
            raise ManifestError(source, None, name, "the original schema carries no languages: name them")
    rows, sizes = [], set()
    for i, row in enumerate(table.to_pylist()):
        converted, size = _convert_row(source, i, row, src_lang, tgt_lang, frame_seconds)
        if chunk_frames is not None and size != chunk_frames:
            raise ManifestError(source, i, "chunk_frame_size", f"{size} differs from data.chunk_frames={chunk_frames}")
        sizes.add(size)
        rows.append(converted)
    if not rows:
        raise ManifestError(source, None, "<file>", "manifest has no rows")
    if len(sizes) > 1:
        raise ManifestError(source, None, "chunk_frame_size", f"rows disagree: {sorted(sizes)} (one chunk size per manifest)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), tmp)
    try:
        manifest = Manifest(tmp, frame_seconds=frame_seconds, check_values=False)
    except ManifestError as exc:
        tmp.unlink(missing_ok=True)
        raise ManifestError(source, exc.row, _ORIGINAL_NAME.get(exc.column, exc.column), str(exc).split(": ", 1)[-1]) from None
    tmp.replace(out)
    return ImportReport(out, len(manifest), sum(len(t.src_sentences) for t in manifest), sizes.pop(), sum(t.seconds for t in manifest))


# Our column -> the original's, so a validation error names what the user has in their file.
_ORIGINAL_NAME = {
    "features_path": "audio_npy_path",
    "features_row": "audio_npy_row",
    "src_sentences": "src_segments",
    "ref_sentences": "tgt_segments",
    "segments": "segment_info",
}


def _convert_row(source: Path, i: int, row: dict, src_lang: str, tgt_lang: str, frame_seconds: float) -> tuple[dict, int]:
    def fail(column: str, message: str) -> ManifestError:
        return ManifestError(source, i, column, message)

    path = row["audio_npy_path"]
    if not isinstance(path, str) or not path:
        raise fail("audio_npy_path", f"expected a non-empty string, got {path!r}")
    npy_row = row["audio_npy_row"]
    if npy_row is not None and (not isinstance(npy_row, int) or npy_row < 0):
        raise fail("audio_npy_row", f"expected null or a non-negative integer, got {npy_row!r}")
    size = row["chunk_frame_size"]
    if not isinstance(size, int) or size <= 0:
        raise fail("chunk_frame_size", f"expected a positive integer, got {size!r}")
    segments = row["segment_info"]
    if not isinstance(segments, list) or not all(isinstance(s, dict) and {"start", "end"} <= set(s) for s in segments):
        raise fail("segment_info", f"expected a list of {{start, end}}, got {segments!r}")
    for k, seg in enumerate(segments):
        if not all(isinstance(seg[key], (int, float)) and math.isfinite(seg[key]) for key in ("start", "end")):
            raise fail("segment_info", f"segment {k} needs finite start and end, got {seg!r}")
    features = Path(path)
    if not features.is_absolute():  # the original uses absolute paths; a relative one is taken from the source's folder
        features = (source.parent / features).resolve()
    talk_id = row.get("talk_id") or original_talk_id(path, npy_row)
    return {
        "talk_id": talk_id,
        "features_path": str(features),
        "features_row": npy_row,
        "frame_seconds": frame_seconds,
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "src_sentences": row["src_segments"],
        "ref_sentences": row["tgt_segments"],
        "segments": [{"start": float(s["start"]), "end": float(s["end"])} for s in segments],
    }, size
