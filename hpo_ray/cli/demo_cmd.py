"""`hpo-ray demo`: the embedded default job, end to end on CPU.

synthesize talks → build the tiny model → SFT → HPO → evaluate SFT and HPO at several latency
points (chunk multipliers) → OmniSTEval on the HPO policy (via simulstream when it is a speech LLM
with spoken test talks) → runs/demo/report.md with tables and quality–latency plots.
Each stage is skipped when its output already exists, so a rerun continues where it stopped.
"""

import json
import shutil
import time
from pathlib import Path

from hpo_ray.cli.common import add_config_arguments
from hpo_ray.cli.pipeline import build_tiny_model, run_hpo, stage, supervised_start
from hpo_ray.config import RunConfig, load_config

TAG = "demo"
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def add_arguments(parser) -> None:
    parser.add_argument("--multipliers", default="1,2,3,4", help="chunk multipliers evaluated (latency points)")
    parser.add_argument("--fresh", action="store_true", help="delete the run folder first")
    add_config_arguments(parser)


def run(args) -> int:
    cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
    root = Path(cfg.run.dir)
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    data, init, sft, hpo = root / "data", root / "init", Path(cfg.model.path), root / "hpo"
    started = time.perf_counter()

    if stage("synthesize talks", (data / "meta.json").is_file(), TAG):
        from hpo_ray.synth import synthesize

        synthesize(cfg, data)
    build_tiny_model(cfg, data / "train" / "manifest.parquet", init, TAG)
    supervised_start(cfg, init, sft, Path(cfg.data.sft_dir), "supervised fine-tuning", TAG)
    if stage("HPO training", (hpo / "config.json").is_file(), TAG):
        run_hpo(cfg, root / "hpo_run", hpo)
    multipliers = [int(m) for m in args.multipliers.split(",")]
    results = evaluate_all(cfg, {"SFT": sft, "HPO": hpo}, multipliers, root / "eval")
    field = field_scores(cfg, hpo, multipliers, root / "eval")
    write_report(cfg, results, root, time.perf_counter() - started, field)
    print((root / "report.md").read_text())
    return 0


def evaluate_all(cfg: RunConfig, policies: dict[str, Path], multipliers: list[int], out: Path) -> dict[str, list[dict]]:
    """Scores of each policy on the test talks at each multiplier (one engine load per policy)."""
    from hpo_ray.eval import evaluate_multipliers

    results: dict[str, list[dict]] = {}
    for name, path in policies.items():
        folders = [out / name.lower() / f"m{m}" for m in multipliers]
        if stage(f"evaluate {name} at multipliers {multipliers}", all((f / "scores.json").is_file() for f in folders), TAG):
            evaluate_multipliers(cfg, path, Path(cfg.data.test_manifest), multipliers, out / name.lower())
        results[name] = [json.loads((f / "scores.json").read_text()) for f in folders]
    return results


def field_scores(cfg: RunConfig, policy: Path, multipliers: list[int], out: Path) -> list[dict]:
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
        if stage(f"stream HPO through simulstream + OmniSTEval at m={m}", (folder / FIELD_DIR / SCORES).is_file(), TAG):
            evaluate_via_simulstream(cfg, policy, manifest, m, folder)
        field = json.loads((folder / FIELD_DIR / SCORES).read_text())
        return [{"multiplier": m, "source": "simulstream log", **field["omnisteval"], "rtf": field["rtf"], "hardware": field["hardware"]}]
    rows = []
    for m in multipliers:
        folder = out / "hpo" / f"m{m}"
        if stage(f"OmniSTEval on HPO's instances.log at m={m}", (folder / "omnisteval" / "scores.tsv").is_file(), TAG):
            omnisteval_of_eval(folder, cfg, tgt)
        rows.append({"multiplier": m, "source": "instances.log", **read_omnisteval_scores(folder / "omnisteval")})
    return rows


def field_table(field: list[dict]) -> list[str]:
    """The report's OmniSTEval section."""

    def ms(row: dict, key: str) -> str:
        return "n/a" if key not in row else f"{row[key] / 1000:.3f}"

    lines = [
        "## The HPO policy scored by OmniSTEval longform (docs/evaluation.md)",
        "",
        "| m | hypothesis | BLEU | chrF | StreamLAAL ideal (s) | StreamLAAL comp.-aware (s) | LongYAAL ideal (s) | RTF |",
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


def write_report(cfg: RunConfig, results: dict[str, list[dict]], root: Path, seconds: float, field: list[dict] | None = None) -> None:
    from hpo_ray.plot import plot_curves

    plot_curves(results, "chrf", "stream_laal", root / "chrf_vs_streamlaal.png")
    plot_curves(results, "bleu", "stream_laal", root / "bleu_vs_streamlaal.png")
    rows = ["| system | m | chrF | BLEU | StreamLAAL (s) | HPO latency (s) | length ratio |", "|---|---|---|---|---|---|---|"]

    def fmt(value, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    for name, points in results.items():
        for p in points:
            rows.append(
                f"| {name} | {p['multiplier']} | {fmt(p['chrf'], 2)} | {fmt(p['bleu'], 2)} | {fmt(p['stream_laal'], 3)} | "
                f"{fmt(p['hpo_latency'], 3)} | {fmt(p['length_ratio'], 3)} |"
            )
    text = "\n".join(
        [
            "# hpo-ray demo report",
            "",
            f"Synthetic talks (seed {cfg.data.synth.seed}, language seed {cfg.data.synth.language_seed}), test split; "
            f"tiny Qwen3 policy; SFT → {cfg.algorithm.steps} HPO steps. Wall time {seconds / 60:.1f} min on this machine.",
            "",
            *rows,
            "",
            "![chrF vs StreamLAAL](chrf_vs_streamlaal.png)",
            "",
            "![BLEU vs StreamLAAL](bleu_vs_streamlaal.png)",
            "",
            *(field_table(field) + [""] if field else []),
        ]
    )
    (root / "report.md").write_text(text)
