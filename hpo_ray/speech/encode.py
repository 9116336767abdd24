"""Audio manifest → features manifest: every talk streamed chunk by chunk through the speech encoder.

Writes `out/features/<talk>.npy` ([frames, hidden] float32, 80 ms frames) and `out/manifest.parquet`
in the schema `hpo-ray train` reads, plus `out/encode.json`. Every row and wav is validated before
anything is written; the folder is built beside `out` and renamed into place at the end.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from hpo_ray.config import ConfigError, RunConfig
from hpo_ray.data.audio import AudioManifest, SpokenTalk
from hpo_ray.devices import cpu_threads
from hpo_ray.synth.writer import MANIFEST_SCHEMA

from .model import SpeechLLM

FORMAT = "hpo-ray-encode/1"


def check_compatible(model: SpeechLLM, cfg: RunConfig) -> None:
    """The encoder's frame rate and chunk must be the ones the rest of the run uses."""
    c, d = model.encoder.config, cfg.data
    if abs(c.frame_seconds - d.frame_seconds) > 1e-9:
        raise ConfigError("data.frame_seconds", f"{d.frame_seconds} differs from the encoder's frames of {c.frame_seconds:.6g} s")
    if d.chunk_frames % c.chunk_frames:
        raise ConfigError("data.chunk_frames", f"{d.chunk_frames} is not a multiple of the encoder's chunk of {c.chunk_frames} frames")


def encode_manifest(model: SpeechLLM, audio_manifest: str | Path, out_dir: str | Path, cfg: RunConfig, threads: int | None = 1) -> dict:
    """Encode every talk of `audio_manifest` into the features folder `out_dir`; returns encode.json's content.
    On CPU the stream runs on `threads` torch threads (one by default: ~10× faster than two for the tiny
    encoder's chunk-sized ops; None keeps the process's count)."""
    check_compatible(model, cfg)
    manifest = AudioManifest(audio_manifest)  # validates every row and wav before anything is written
    out = Path(out_dir)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        on_cpu = next(model.encoder.parameters()).device.type == "cpu"
        with cpu_threads(threads if on_cpu else None):
            summary = _write(model, manifest, tmp, cfg)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def is_audio_manifest(path: str | Path) -> bool:
    """Whether a parquet manifest lists wav files (an `audio_path` column); False for anything unreadable,
    which the features-manifest reader then reports."""
    try:
        return "audio_path" in pq.read_schema(path).names
    except Exception:  # pyarrow raises several types for a bad file
        return False


def features_manifest(cfg: RunConfig, checkpoint: str | Path, manifest: str | Path, work_dir: Path) -> Path:
    """`manifest` itself if it lists features; an audio manifest is first encoded chunk by chunk with the
    checkpoint's speech encoder into `work_dir` (so eval accepts audio as well as features)."""
    manifest = Path(manifest)
    if not is_audio_manifest(manifest):
        return manifest
    encode_manifest(SpeechLLM.from_pretrained(checkpoint), manifest, work_dir, cfg)
    return work_dir / "manifest.parquet"


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads((out / "encode.json").read_text()).get("format") == FORMAT
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise FileExistsError(f"{out} is not empty and holds no previous `hpo-ray encode` output; refusing to replace it")


def _write(model: SpeechLLM, manifest: AudioManifest, folder: Path, cfg: RunConfig) -> dict:
    (folder / "features").mkdir(parents=True)
    rows, frames_total = [], 0
    step = model.encoder.config.chunk_samples
    bar = tqdm(
        total=sum(-(-t.n_samples // step) for t in manifest),
        unit="chunk",
        desc="encode",
        disable=not cfg.logging.progress,
        dynamic_ncols=True,
    )
    for talk in manifest:
        bar.set_postfix(talk=talk.talk_id)
        frames = encode_talk(model, talk, bar)
        rel = f"features/{talk.talk_id}.npy"
        np.save(folder / rel, frames, allow_pickle=False)
        frames_total += len(frames)
        rows.append(
            {
                "talk_id": talk.talk_id,
                "features_path": rel,
                "features_row": None,
                "frame_seconds": model.encoder.config.frame_seconds,
                "src_lang": talk.src_lang,
                "tgt_lang": talk.tgt_lang,
                "src_sentences": list(talk.src_sentences),
                "ref_sentences": list(talk.ref_sentences),
                "segments": [{"start": s, "end": e} for s, e in talk.segments],
            }
        )
    bar.close()
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), folder / "manifest.parquet")
    summary = {
        "format": FORMAT,
        "audio_manifest": str(manifest.path.resolve()),
        "talks": len(rows),
        "frames": frames_total,
        "frame_seconds": model.encoder.config.frame_seconds,
        "hidden_size": model.encoder.config.llm_hidden_size,
        "encoder": model.encoder.config.to_dict(),
    }
    (folder / "encode.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def encode_talk(model: SpeechLLM, talk: SpokenTalk, bar: tqdm | None = None) -> np.ndarray:
    """One talk's frames, pushed through a fresh stream one encoder chunk of audio at a time."""
    samples, stream = talk.samples(), model.stream()
    step, parts = stream.chunk_samples, []
    for start in range(0, len(samples), step):
        parts.append(stream.push(samples[start : start + step]))
        if bar is not None:
            bar.update(1)
    parts.append(stream.flush())
    return np.concatenate(parts).astype(np.float32)
