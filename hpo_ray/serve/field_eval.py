"""The field's evaluation loop for an hpo-ray policy, run as the IWSLT baseline runs it:
`simulstream_inference` streams each talk's wav through our speech processor into `metrics.jsonl`,
then `omnisteval longform --hypothesis_format simulstream` scores that log — ideal (CU) and
computation-aware (CA) latency. OmniSTEval also scores `hpo-ray eval`'s `instances.log` of the same
talks, so the two loops can be compared number by number (docs/evaluation.md).

Both tools run as subprocesses of this Python, exactly as a user would call them.
"""

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from hpo_ray.config import RunConfig, to_yaml
from hpo_ray.config.serve import StreamProcessorConfig
from hpo_ray.data.manifest import ManifestError, Talk
from hpo_ray.devices import resolve_device
from hpo_ray.eval import INSTANCES, REFERENCES, SEGMENTS, config_at_multiplier, evaluate, open_manifest, wav_name
from hpo_ray.reward.sacre import bleu_tokenizer

PROCESSOR_YAML = "processor.yaml"
RUN_CONFIG = "run_config.yaml"
WAV_LIST = "wav_list.txt"
METRICS_LOG = "metrics.jsonl"
TURN_LOG = "turns.jsonl"
FIELD_DIR = "simulstream"
SCORES = "scores.json"


def write_processor_config(folder: Path, cfg: RunConfig, checkpoint: Path, src_lang: str, tgt_lang: str) -> Path:
    """`run_config.yaml` (the resolved run config) and the processor YAML streaming `checkpoint` with it."""
    (folder / RUN_CONFIG).write_text(to_yaml(cfg), encoding="utf-8")
    settings = StreamProcessorConfig(
        checkpoint=Path(checkpoint).resolve(),
        config=(folder / RUN_CONFIG).resolve(),
        latency_unit="char" if cfg.reward.is_char_level(tgt_lang) else "word",
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        seed=cfg.run.seed,
        turn_log=(folder / TURN_LOG).resolve(),
        speech_chunk_size=cfg.data.turn_seconds,
    )
    path = folder / PROCESSOR_YAML
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True), sort_keys=False), encoding="utf-8")
    return path


def write_wav_list(folder: Path, talks: Sequence[Talk], audio: dict[str, Path], wav_names: Sequence[str]) -> Path:
    """Links `wavs/<wav name>` → each talk's audio (the names the segment YAML uses) and the list of them."""
    wavs = folder / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    lines = []
    for talk, name in zip(talks, wav_names):
        link = wavs / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(audio[talk.talk_id]).resolve())
        lines.append(str(link.absolute()))
    path = folder / WAV_LIST
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _run(cmd: list[str], what: str, timeout: float) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")


def run_simulstream_inference(
    processor_yaml: Path, wav_list: Path, metrics_log: Path, src_lang: str, tgt_lang: str, timeout: float = 3600.0
) -> None:
    """`simulstream_inference` over every wav of the list (a fresh log each time)."""
    metrics_log.unlink(missing_ok=True)
    _run(
        [
            sys.executable,
            "-m",
            "simulstream.inference",
            "--speech-processor-config",
            str(processor_yaml),
            "--wav-list-file",
            str(wav_list),
            "--metrics-log-file",
            str(metrics_log),
            "--src-lang",
            src_lang,
            "--tgt-lang",
            tgt_lang,
        ],
        "simulstream_inference",
        timeout,
    )


def run_omnisteval(
    segments: Path,
    references: Path,
    hypothesis: Path,
    out_folder: Path,
    char_level: bool,
    tokenizer: str,
    simulstream_config: Path | None = None,
    timeout: float = 600.0,
) -> dict[str, float]:
    """`omnisteval longform` (no COMET, no Moses tokenisation) on an instances.log or a simulstream log; scores by name."""
    cmd = [
        sys.executable,
        "-m",
        "omnisteval.cli",
        "longform",
        "--speech_segmentation",
        str(segments),
        "--ref_sentences_file",
        str(references),
        "--hypothesis_file",
        str(hypothesis),
        "--char_level" if char_level else "--word_level",
        "--bleu_tokenizer",
        tokenizer,
        "--output_folder",
        str(out_folder),
    ]
    if simulstream_config is not None:
        cmd += ["--hypothesis_format", "simulstream", "--simulstream_config_file", str(simulstream_config)]
    _run(cmd, "omnisteval longform", timeout)
    return read_omnisteval_scores(out_folder)


def read_omnisteval_scores(out_folder: Path) -> dict[str, float]:
    """The metrics of an OmniSTEval output folder's `scores.tsv`, by name (latencies in ms)."""
    rows = (Path(out_folder) / "scores.tsv").read_text(encoding="utf-8").strip().splitlines()[1:]
    return {name: float(value) for name, value in (row.split("\t") for row in rows)}


def omnisteval_of_eval(out_dir: Path, cfg: RunConfig, tgt_lang: str) -> dict[str, float]:
    """OmniSTEval longform on the `instances.log` `hpo-ray eval` wrote into `out_dir` (output: out_dir/omnisteval/)."""
    out_dir = Path(out_dir)
    return run_omnisteval(
        out_dir / SEGMENTS,
        out_dir / REFERENCES,
        out_dir / INSTANCES,
        out_dir / "omnisteval",
        cfg.reward.is_char_level(tgt_lang),
        bleu_tokenizer(tgt_lang),
    )


def stream_log_stats(metrics_log: Path) -> dict:
    """Audio streamed, compute spent and the real-time factor (compute / audio) from simulstream's log."""
    audio: dict[int, float] = {}
    compute, calls, loading = 0.0, 0, None
    for line in metrics_log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line) if line.strip() else {}
        if "model_loading_time" in entry:
            loading = entry["model_loading_time"]
        elif "computation_time" in entry:
            audio[entry["id"]] = max(audio.get(entry["id"], 0.0), entry["total_audio_processed"])
            compute += entry["computation_time"]
            calls += 1
    seconds = sum(audio.values())
    return {
        "audio_seconds": seconds,
        "compute_seconds": compute,
        "processing_calls": calls,
        "rtf": compute / seconds if seconds else float("nan"),
        "model_loading_seconds": loading,
    }


def hardware(device: str) -> dict:
    """What the computation-aware numbers were measured on (the processor ran on `device`)."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "logical_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)), "device": device}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def audio_of(manifest_path: Path, audio_manifest: Path | None) -> dict[str, Path]:
    """Each talk's wav: from `audio_manifest`, or from the one `hpo-ray encode` recorded in encode.json."""
    from hpo_ray.data.audio import AudioManifest

    if audio_manifest is None:
        record = Path(manifest_path).parent / "encode.json"
        if not record.is_file():
            raise FileNotFoundError(f"{manifest_path}: no encode.json beside it names the talks' audio; pass --audio")
        audio_manifest = Path(json.loads(record.read_text())["audio_manifest"])
    return {t.talk_id: t.audio_path for t in AudioManifest(audio_manifest)}


def language_pair(manifest_path: Path, talks: Sequence[Talk]) -> tuple[str, str]:
    """The one (source, target) pair of the talks: simulstream_inference takes one per run."""
    pairs = sorted({(t.src_lang, t.tgt_lang) for t in talks})
    if len(pairs) != 1:
        raise ManifestError(
            manifest_path,
            None,
            "tgt_lang",
            f"simulstream_inference runs one language pair per run, the manifest has {pairs}: split it per pair",
        )
    return pairs[0]


def evaluate_via_simulstream(
    cfg: RunConfig, checkpoint: Path, manifest_path: Path, multiplier: int, out_dir: Path, audio_manifest: Path | None = None
) -> tuple[dict, dict]:
    """`hpo-ray eval` into `out_dir`, then the field's loop on the same talks' audio into `out_dir/simulstream/`.

    Returns (our scores.json, the field's scores.json): OmniSTEval on the simulstream log, OmniSTEval
    on our instances.log, the real-time factor and the hardware.
    """
    out_dir, field = Path(out_dir), Path(out_dir) / FIELD_DIR
    cfg = config_at_multiplier(cfg, multiplier)
    talks = open_manifest(cfg, checkpoint, manifest_path).talks
    src, tgt = language_pair(manifest_path, talks)
    audio = audio_of(manifest_path, audio_manifest)  # checked before any model loads
    missing = [t.talk_id for t in talks if t.talk_id not in audio]
    if missing:
        raise ManifestError(manifest_path, None, "talk_id", f"talks {missing[:5]} have no audio in the audio manifest")
    ours = evaluate(cfg, checkpoint, manifest_path, multiplier, out_dir)
    field.mkdir(parents=True, exist_ok=True)
    processor = write_processor_config(field, cfg, checkpoint, src, tgt)
    (field / TURN_LOG).unlink(missing_ok=True)
    wav_list = write_wav_list(field, talks, audio, [wav_name(t) for t in talks])
    run_simulstream_inference(processor, wav_list, field / METRICS_LOG, src, tgt)
    theirs = {
        "omnisteval": run_omnisteval(
            out_dir / SEGMENTS,
            out_dir / REFERENCES,
            field / METRICS_LOG,
            field / "omnisteval",
            cfg.reward.is_char_level(tgt),
            bleu_tokenizer(tgt),
            processor,
        ),
        "omnisteval_of_instances_log": omnisteval_of_eval(out_dir, cfg, tgt),
        **stream_log_stats(field / METRICS_LOG),
        "hardware": hardware(resolve_device(cfg.rollout.device, "rollout.device")),
        "multiplier": multiplier,
        "turn_seconds": cfg.data.turn_seconds,
        "talks": len(talks),
    }
    (field / SCORES).write_text(json.dumps(theirs, indent=2) + "\n", encoding="utf-8")
    return ours, theirs
