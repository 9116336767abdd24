"""Records of the reward: the text of a finished rollout in, raw per-sentence and per-rollout scores out.

`RolloutText` is one line of `hpo-ray score`'s input; `RolloutScore.to_json()` is one line of its
output without `reward` (the reward needs the whole group, see `group_rewards`).
"""

import math
from dataclasses import dataclass, field
from typing import Any

from hpo_ray.errors import InputError


class RolloutFormatError(InputError):
    """A rollout record is malformed; the message names the line (when known) and the field."""

    def __init__(self, line: int | None, field_path: str, message: str):
        self.line = line
        self.field = field_path
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}field {field_path!r}: {message}")


def _number(obj: Any, path: str, line: int | None) -> float:
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj):
        raise RolloutFormatError(line, path, f"expected a finite number, got {obj!r}")
    return float(obj)


def _strings(obj: Any, path: str, line: int | None) -> list[str]:
    if not isinstance(obj, list):
        raise RolloutFormatError(line, path, f"expected a list of strings, got {type(obj).__name__}")
    for i, item in enumerate(obj):
        if not isinstance(item, str):
            raise RolloutFormatError(line, f"{path}[{i}]", f"expected a string, got {type(item).__name__}")
    return list(obj)


def _name(obj: Any, path: str, line: int | None) -> str:
    if isinstance(obj, bool) or not isinstance(obj, (str, int)) or obj == "":
        raise RolloutFormatError(line, path, f"expected a non-empty string or an integer, got {obj!r}")
    return str(obj)


@dataclass(frozen=True)
class RolloutText:
    """What the reward needs from one finished rollout: its turns and the talk's reference sentences.

    `turns[k]` is the text written after chunk k+1 was received ("" = wait), at min((k+1)·chunk_seconds,
    talk_seconds) when the optional `talk_seconds` is given; sentence i of the talk
    has source `src_sentences[i]`, reference `ref_sentences[i]` and audio span `segments[i]` (seconds).
    """

    id: str
    group: str
    src_lang: str
    tgt_lang: str
    chunk_seconds: float
    turns: list[str]
    src_sentences: list[str]
    ref_sentences: list[str]
    segments: list[tuple[float, float]]
    talk_seconds: float | None = None

    @classmethod
    def from_json(cls, obj: Any, line: int | None = None) -> "RolloutText":
        """Validate one input record; errors name `line` and the field (e.g. `segments[3].end`)."""
        if not isinstance(obj, dict):
            raise RolloutFormatError(line, "<record>", f"expected a JSON object, got {type(obj).__name__}")
        required = ("id", "group", "src_lang", "tgt_lang", "chunk_seconds", "turns", "src_sentences", "ref_sentences", "segments")
        for key in required:
            if key not in obj:
                raise RolloutFormatError(line, key, "missing")
        for key in ("src_lang", "tgt_lang"):
            if not isinstance(obj[key], str) or not obj[key]:
                raise RolloutFormatError(line, key, f"expected a language code, got {obj[key]!r}")
        chunk = _number(obj["chunk_seconds"], "chunk_seconds", line)
        if chunk <= 0:
            raise RolloutFormatError(line, "chunk_seconds", f"must be positive, got {chunk}")
        refs = _strings(obj["ref_sentences"], "ref_sentences", line)
        if not refs:
            raise RolloutFormatError(line, "ref_sentences", "needs at least one reference sentence")
        srcs = _strings(obj["src_sentences"], "src_sentences", line)
        if len(srcs) != len(refs):
            raise RolloutFormatError(line, "src_sentences", f"has {len(srcs)} entries, ref_sentences has {len(refs)}")
        raw_segments = obj["segments"]
        if not isinstance(raw_segments, list) or len(raw_segments) != len(refs):
            got = len(raw_segments) if isinstance(raw_segments, list) else type(raw_segments).__name__
            raise RolloutFormatError(line, "segments", f"expected a list of {len(refs)} {{start, end}} objects, got {got}")
        segments: list[tuple[float, float]] = []
        for i, seg in enumerate(raw_segments):
            if not isinstance(seg, dict):
                raise RolloutFormatError(line, f"segments[{i}]", "expected an object with start and end")
            for key in ("start", "end"):
                if key not in seg:
                    raise RolloutFormatError(line, f"segments[{i}].{key}", "missing")
            start = _number(seg["start"], f"segments[{i}].start", line)
            end = _number(seg["end"], f"segments[{i}].end", line)
            if start < 0 or end < start:
                raise RolloutFormatError(line, f"segments[{i}]", f"needs 0 <= start <= end, got [{start}, {end}]")
            segments.append((start, end))
        talk_seconds = None
        if obj.get("talk_seconds") is not None:
            talk_seconds = _number(obj["talk_seconds"], "talk_seconds", line)
            if talk_seconds <= 0:
                raise RolloutFormatError(line, "talk_seconds", f"must be positive, got {talk_seconds}")
        return cls(
            id=_name(obj["id"], "id", line),
            group=_name(obj["group"], "group", line),
            talk_seconds=talk_seconds,
            src_lang=obj["src_lang"],
            tgt_lang=obj["tgt_lang"],
            chunk_seconds=chunk,
            turns=_strings(obj["turns"], "turns", line),
            src_sentences=srcs,
            ref_sentences=refs,
            segments=segments,
        )


@dataclass(frozen=True)
class SentenceScore:
    """One reference sentence: its hypothesis segment, quality, latency and hinged latency.

    `laal` is the StreamLAAL contribution (None when the segment is empty); `latency` is the reward's
    latency (the configured formula, or max_latency when unaligned).
    """

    ref_index: int
    hyp: str
    delays: list[float]
    quality: float
    latency: float
    hinged: float
    aligned: bool
    laal: float | None

    def to_json(self) -> dict:
        """The per-sentence part of the output record."""
        return {
            "ref_index": self.ref_index,
            "hyp": self.hyp,
            "delays": list(self.delays),
            "quality": self.quality,
            "latency": self.latency,
            "hinged": self.hinged,
        }


@dataclass(frozen=True)
class RolloutScore:
    """Raw scores of one rollout (no normalisation): Q, L, H, StreamLAAL and every sentence."""

    id: str
    group: str
    chunk_seconds: float
    quality: float
    latency: float
    hinged_latency: float
    stream_laal: float | None
    sentences: list[SentenceScore] = field(default_factory=list)

    def to_json(self) -> dict:
        """The output record of `hpo-ray score` without `reward`."""
        return {
            "id": self.id,
            "group": self.group,
            "sentences": [s.to_json() for s in self.sentences],
            "quality": self.quality,
            "latency": self.latency,
            "hinged_latency": self.hinged_latency,
            "stream_laal": self.stream_laal,
        }
