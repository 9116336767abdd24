"""Test helpers: numpy-generated talks written as wav files and parquet audio manifests."""

import struct
import wave
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

AUDIO_SCHEMA = pa.schema(
    [
        ("talk_id", pa.string()),
        ("audio_path", pa.string()),
        ("sample_rate", pa.int64()),
        ("src_lang", pa.string()),
        ("tgt_lang", pa.string()),
        ("src_sentences", pa.list_(pa.string())),
        ("ref_sentences", pa.list_(pa.string())),
        ("segments", pa.list_(pa.struct([("start", pa.float64()), ("end", pa.float64())]))),
        ("words", pa.list_(pa.list_(pa.struct([("word", pa.string()), ("start", pa.float64()), ("end", pa.float64())])))),
    ]
)


def tone_talk(seconds: float, seed: int, rate: int = 16000) -> np.ndarray:
    """A speech-like test signal: random tones in bursts with noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > 0).astype(np.float32)
    tone = np.sin(2 * np.pi * rng.uniform(150, 900) * t + rng.uniform(0, 6))
    return (0.4 * envelope * tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000, channels: int = 1) -> Path:
    """16-bit PCM wav through the stdlib `wave` module (samples [n] or [n, channels])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.round(np.asarray(samples) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return path


def write_float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """32-bit IEEE-float mono wav (format 3), which `wave` cannot write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    return path


def spoken_row(talk_id: str, audio_path: str, seconds: float, n_sent: int = 2, **over) -> dict:
    """A valid audio-manifest row with sentences and words spread over `seconds`."""
    step = seconds / n_sent
    row = {
        "talk_id": talk_id,
        "audio_path": audio_path,
        "sample_rate": 16000,
        "src_lang": "en",
        "tgt_lang": "de",
        "src_sentences": [f"word{k} more{k} ." for k in range(n_sent)],
        "ref_sentences": [f"wort{k} mehr{k} ." for k in range(n_sent)],
        "segments": [{"start": k * step + 0.05, "end": (k + 1) * step - 0.05} for k in range(n_sent)],
        "words": [
            [
                {"word": f"word{k}", "start": k * step + 0.05, "end": k * step + step / 2},
                {"word": f"more{k}", "start": k * step + step / 2, "end": (k + 1) * step - 0.05},
            ]
            for k in range(n_sent)
        ],
    }
    row.update(over)
    return row


def write_audio_manifest(folder: Path, rows: list[dict]) -> Path:
    path = folder / "manifest.parquet"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=AUDIO_SCHEMA), path)
    return path


def spoken_talks(folder: Path, seconds: tuple[float, ...] = (3.0, 4.5)) -> tuple[Path, dict[str, np.ndarray]]:
    """A manifest of len(seconds) tone talks; returns (manifest path, talk_id -> samples as stored)."""
    rows, signals = [], {}
    for i, sec in enumerate(seconds):
        name = f"talk{i}"
        write_wav(folder / "wav" / f"{name}.wav", tone_talk(sec, seed=i))
        rows.append(spoken_row(name, f"wav/{name}.wav", sec))
    path = write_audio_manifest(folder, rows)
    from hpo_ray.data.audio import read_wav

    for row in rows:
        signals[row["talk_id"]] = read_wav(folder / row["audio_path"])[1]
    return path, signals
