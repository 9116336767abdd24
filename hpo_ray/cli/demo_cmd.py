"""`hpo-ray demo`: the embedded default job, end to end on CPU, on spoken talks.

speak the talks (eSpeak NG) → the tiny speech LLM → two-stage SFT (hear by CTC, encode, translate;
`demo_speech.py`) → HPO → evaluate SFT and HPO at several latency points (chunk multipliers) →
simulstream + OmniSTEval on the HPO policy streaming the test audio → runs/demo/report.md with tables,
quality–latency plots and stage times. `--vectors` (configs/demo-vectors.yaml) runs the same job on
feature vectors instead of audio (each source word a fixed random vector plus noise): faster, no
eSpeak NG. Each stage is skipped when its output already exists, so a rerun continues.
"""

import json
import math
import os
import shutil
import time
from pathlib import Path

from hpo_ray.cli import demo_speech
from hpo_ray.cli.common import add_config_arguments
from hpo_ray.cli.pipeline import StageLog, build_tiny_model, run_hpo, stage, supervised_start
from hpo_ray.config import RunConfig, load_config

TAG = "demo"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIG = CONFIGS / "demo.yaml"  # spoken talks
VECTORS_CONFIG = CONFIGS / "demo-vectors.yaml"  # feature vectors
STAGE_TIMES = "stage_seconds.json"
VECTOR_INPUT = (
    "**Input: feature vectors, not audio** (each source word a fixed random vector plus noise); "
    "`hpo-ray demo` without `--vectors` runs the same job on spoken talks."
)


def add_arguments(parser) -> None:
    parser.add_argument("--multipliers", default="1,2,3,4", help="chunk multipliers evaluated (latency points)")
    parser.add_argument("--fresh", action="store_true", help="delete the run folder first")
    inputs = parser.add_mutually_exclusive_group()
    inputs.add_argument("--speech", action="store_true", help="spoken talks (the default; with --config: data.synth.speech.enabled=true)")
    inputs.add_argument(
        "--vectors",
        action="store_true",
        help="feature vectors instead of audio: configs/demo-vectors.yaml unless --config, data.synth.speech.enabled=false",
    )
    add_config_arguments(parser)


def demo_config(args) -> RunConfig:
    """demo.yaml (spoken talks), or demo-vectors.yaml with `--vectors`; an explicit `--config` wins, and
    `--speech` / `--vectors` then switch its talks to audio / feature vectors (else the config says)."""
    config = args.config or (VECTORS_CONFIG if args.vectors else DEFAULT_CONFIG)
    switch = ["data.synth.speech.enabled=true"] if args.speech else ["data.synth.speech.enabled=false"] if args.vectors else []
    return load_config(config, [*args.overrides, *switch])


def run(args) -> int:
    cfg = demo_config(args)
    speech, root = cfg.data.synth.speech.enabled, Path(cfg.run.dir)
    if speech:
        demo_speech.check_feature_paths(cfg, root)
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    data, init, sft, hpo = root / "data", root / "init", Path(cfg.model.path), root / "hpo"
    log, started = StageLog(TAG, root / STAGE_TIMES), time.perf_counter()

    if log("synthesize talks" + (" (spoken)" if speech else ""), (data / "meta.json").is_file()):
        from hpo_ray.synth import synthesize

        synthesize(cfg, data)
    if speech:
        demo_speech.speech_start(cfg, root, log)
    else:
        build_tiny_model(cfg, data / "train" / "manifest.parquet", init, log)
        supervised_start(cfg, init, sft, Path(cfg.data.sft_dir), "supervised fine-tuning", log)
    if log("HPO training", (hpo / "config.json").is_file()):
        run_hpo(cfg, root / "hpo_run", hpo)
    multipliers = [int(m) for m in args.multipliers.split(",")]
    results = evaluate_all(cfg, {"SFT": sft, "HPO": hpo}, multipliers, root / "eval", log)
    field = field_scores(cfg, hpo, multipliers, root / "eval", log)
    log.close()
    streamed = any(row["source"] == "simulstream log" for row in field)
    notes = demo_speech.input_lines(cfg, root, streamed) if speech else [VECTOR_INPUT]
    write_report(cfg, results, root, time.perf_counter() - started, field, notes, log)
    print((root / "report.md").read_text())
    return 0


def evaluate_all(
    cfg: RunConfig, policies: dict[str, Path], multipliers: list[int], out: Path, tag: "str | StageLog" = TAG
) -> dict[str, list[dict]]:
    """Scores of each policy on the test talks at each multiplier (one engine load per policy)."""
    from hpo_ray.eval import evaluate_multipliers

    results: dict[str, list[dict]] = {}
    for name, path in policies.items():
        folders = [out / name.lower() / f"m{m}" for m in multipliers]
        if stage(f"evaluate {name} at multipliers {multipliers}", all((f / "scores.json").is_file() for f in folders), tag):
            evaluate_multipliers(cfg, path, Path(cfg.data.test_manifest), multipliers, out / name.lower())
        results[name] = [json.loads((f / "scores.json").read_text()) for f in folders]
    return results


def field_scores(cfg: RunConfig, policy: Path, multipliers: list[int], out: Path, tag: "str | StageLog" = TAG) -> list[dict]:
    """The HPO policy as OmniSTEval scores it (docs/evaluation.md): a speech LLM whose test talks have audio is
    streamed through simulstream_inference (ideal and computation-aware latency, real-time factor) at
    `data.multiplier`; otherwise OmniSTEval scores its `instances.log` at every multiplier (ideal latency only)."""
    from hpo_ray.data.manifest import Manifest
    from hpo_ray.serve.field_eval import FIELD_DIR, SCORES, evaluate_via_simulstream, omnisteval_of_eval, read_omnisteval_scores
    from hpo_ray.speech.encoder import ENCODER_FOLDER

    manifest = Path(cfg.data.test_manifest)
    tgt = Manifest(manifest, check_values=False).talks[0].tgt_lang
    if (policy / ENCODER_FOLDER / "config.json").is_file() and (manifest.parent / "encode.json").is_file():
        m, folder = cfg.data.multiplier, out / "hpo_simulstream" / f"m{cfg.data.multiplier}"
        if stage(f"stream HPO through simulstream + OmniSTEval at m={m}", (folder / FIELD_DIR / SCORES).is_file(), tag):
            evaluate_via_simulstream(cfg, policy, manifest, m, folder)
        field = json.loads((folder / FIELD_DIR / SCORES).read_text())
        return [{"multiplier": m, "source": "simulstream log", **field["omnisteval"], "rtf": field["rtf"], "hardware": field["hardware"]}]
    rows = []
    for m in multipliers:
        folder = out / "hpo" / f"m{m}"
        if stage(f"OmniSTEval on HPO's instances.log at m={m}", (folder / "omnisteval" / "scores.tsv").is_file(), tag):
            omnisteval_of_eval(folder, cfg, tgt)
        rows.append({"multiplier": m, "source": "instances.log", **read_omnisteval_scores(folder / "omnisteval")})
    return rows


def field_table(field: list[dict]) -> list[str]:
    """The report's OmniSTEval section."""

    def ms(row: dict, key: str) -> str:  # OmniSTEval gives NaN where a talk's hypothesis has no words to time
        return "n/a" if key not in row or not math.isfinite(row[key]) else f"{row[key] / 1000:.3f}"

    lines = [
        "## The HPO policy scored by OmniSTEval longform (docs/evaluation.md)",
        "",
        "| m | hypothesis | BLEU | chrF | LongLAAL (StreamLAAL-style) ideal (s) | LongLAAL comp.-aware (s) | LongYAAL ideal (s) | RTF |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in field:
        ca = ms(row, "LongLAAL (CA)") if "rtf" in row else "n/a (no compute in instances.log)"
        rtf = f"{row['rtf']:.3f}" if "rtf" in row else "n/a"
        lines.append(
            f"| {row['multiplier']} | {row['source']} | {row['BLEU']:.2f} | {row['chrF']:.2f} | "
            f"{ms(row, 'LongLAAL (CU)')} | {ca} | {ms(row, 'LongYAAL (CU)')} | {rtf} |"
        )
    hardware = [row["hardware"] for row in field if "hardware" in row]
    if hardware:
        hw = hardware[0]
        lines += [
            "",
            f"Computation-aware latency and RTF measured on {hw['cpu']}, {hw['usable_cores']} usable cores, "
            f"device {hw['device']}" + (f" ({hw['gpu']})" if "gpu" in hw else "") + ".",
        ]
    else:
        lines += [
            "",
            "The demo policy reads pre-encoded features, so the talks were not streamed as audio; for "
            "computation-aware latency and the real-time factor run `hpo-ray eval --via simulstream` on a "
            "speech LLM (docs/evaluation.md).",
        ]
    return lines


def gain_lines(results: dict[str, list[dict]]) -> list[str]:
    """HPO − SFT at matched latency, chrF and BLEU, per multiplier (one HPO seed: for the spread over seeds and
    No-HPO, `hpo-ray study`), and whether each policy's curve behaves like SST: StreamLAAL strictly rising with m,
    quality never falling."""
    from hpo_ray.study import LATENCY, faster_than_baseline, finite, matched_gains

    if not {"SFT", "HPO"} <= results.keys():
        return []
    sft, hpo = results["SFT"], results["HPO"]
    gains = {metric: matched_gains(hpo, sft, metric) for metric in ("chrf", "bleu")}
    faster = faster_than_baseline(hpo, sft)
    lines = [
        "## HPO − SFT at matched latency (one HPO seed)",
        "",
        "At each HPO point's StreamLAAL L, each policy is read at its best score among its points with StreamLAAL ≤ L "
        "(† where every SFT point is slower: SFT at the same m). The spread over HPO seeds and the No-HPO baseline are "
        "`hpo-ray study`'s (docs/results.md).",
        "",
        "| m | ΔchrF | ΔBLEU | HPO length ratio |",
        "|---|---|---|---|",
    ]
    for p in hpo:
        m = int(p["multiplier"])
        cells = [f"{gains[k][m]:+.2f}" + (" †" if m in faster else "") if m in gains[k] else "n/a" for k in ("chrf", "bleu")]
        ratio = "n/a" if p.get("length_ratio") is None else f"{p['length_ratio']:.3f}"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {ratio} |")
    lines.append("")
    for name, curve in results.items():
        points = sorted(curve, key=lambda p: p["multiplier"])
        steps = list(zip(points, points[1:]))
        rising = all(finite(p.get(LATENCY)) and finite(q.get(LATENCY)) and q[LATENCY] > p[LATENCY] for p, q in steps)
        falls = [(p, q) for p, q in steps if finite(p.get("chrf")) and finite(q.get("chrf")) and q["chrf"] < p["chrf"]]
        dips = [f"m = {q['multiplier']}: {q['chrf'] - p['chrf']:+.2f}" for p, q in falls]
        lines.append(
            f"- {name}: StreamLAAL {'rises strictly' if rising else 'does not rise strictly'} with m; chrF "
            + (f"falls as m grows ({', '.join(dips)})." if dips else "never falls as m grows.")
        )
    return [*lines, ""]


def write_report(
    cfg: RunConfig,
    results: dict[str, list[dict]],
    root: Path,
    seconds: float,
    field: list[dict] | None = None,
    notes: list[str] | None = None,
    stages: StageLog | None = None,
) -> None:
    """report.md: what the input was (`notes`), SFT and HPO per multiplier, the plots, the OmniSTEval
    section and each stage's wall time."""
    from hpo_ray.plot import plot_curves

    plot_curves(results, "chrf", "stream_laal", root / "chrf_vs_streamlaal.png")
    plot_curves(results, "bleu", "stream_laal", root / "bleu_vs_streamlaal.png")
    # a model-based reward scorer (COMET, MetricX with a local model) gets its own column beside chrF and BLEU
    scorer = next((p.get("quality_metric") for points in results.values() for p in points), None)
    scorer = scorer if scorer not in (None, "chrf", "bleu") else None
    extra = (f" {scorer} (sentence mean) |", "---|") if scorer else ("", "")
    rows = [
        f"| system | m | chrF | BLEU |{extra[0]} StreamLAAL (s) | HPO latency (s) | length ratio |",
        f"|---|---|---|---|{extra[1]}---|---|---|",
    ]

    def fmt(value, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    for name, points in results.items():
        for p in points:
            quality = f" {fmt(p.get('quality'), 4)} |" if scorer else ""
            rows.append(
                f"| {name} | {p['multiplier']} | {fmt(p['chrf'], 2)} | {fmt(p['bleu'], 2)} |{quality} {fmt(p['stream_laal'], 3)} | "
                f"{fmt(p['hpo_latency'], 3)} | {fmt(p['length_ratio'], 3)} |"
            )
    total = f"; the stages below took {stages.total() / 60:.1f} min in all" if stages else ""
    text = "\n".join(
        [
            "# hpo-ray demo report",
            "",
            f"Synthetic talks (seed {cfg.data.synth.seed}, language seed {cfg.data.synth.language_seed}), test split; "
            f"tiny Qwen3 policy; SFT → {cfg.algorithm.steps} HPO steps. Wall time {seconds / 60:.1f} min on this machine "
            f"for this invocation{total} ({len(os.sched_getaffinity(0))} usable cores, load average "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end).",
            "",
            *([*notes, ""] if notes else []),
            *rows,
            "",
            "![chrF vs StreamLAAL](chrf_vs_streamlaal.png)",
            "",
            "![BLEU vs StreamLAAL](bleu_vs_streamlaal.png)",
            "",
            *gain_lines(results),
            *(field_table(field) + [""] if field else []),
            *(["## Stages", "", *stages.table(), ""] if stages else []),
        ]
    )
    (root / "report.md").write_text(text)
