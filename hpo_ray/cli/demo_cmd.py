"""`hpo-ray demo`: the embedded default job, end to end on CPU.

synthesize talks → build the tiny model → SFT → HPO → evaluate SFT and HPO at several latency
points (chunk multipliers) → runs/demo/report.md with a table and quality–latency plots.
On spoken talks (`data.synth.speech.enabled`, the default) the model is a speech LLM, SFT is the two-stage
`sft-speech` (hear, encode every split, translate), HPO trains on the encoded features, and the test talks'
audio is encoded chunk by chunk with each policy's encoder before evaluation (`hpo_ray/cli/demo_speech.py`).
Each stage is skipped when its output already exists, so a rerun continues where it stopped.
"""

import json
import shutil
import time
from pathlib import Path

from hpo_ray.cli.common import add_config_arguments
from hpo_ray.config import RunConfig, load_config

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def add_arguments(parser) -> None:
    parser.add_argument("--multipliers", default="1,2,3,4", help="chunk multipliers evaluated (latency points)")
    parser.add_argument("--fresh", action="store_true", help="delete the run folder first")
    add_config_arguments(parser)


def stage(name: str, done: bool, tag: str = "demo"):
    """Print a stage header (with the UTC time, so stage durations can be read off the log); returns whether to run it."""
    print(f"[{tag} {time.strftime('%H:%M:%S', time.gmtime())}] {name}: {'already done, skipped' if done else 'running'}",
          flush=True)
    return not done


def run(args) -> int:
    cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
    root = Path(cfg.run.dir)
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    data, init, sft, hpo = root / "data", root / "init", Path(cfg.model.path), root / "hpo"
    started = time.perf_counter()
    if cfg.data.synth.speech.enabled:
        from hpo_ray.cli.demo_speech import features_dir

        features_dir(cfg)  # the manifests HPO reads must be where sft-speech encodes: checked before any stage

    if stage("synthesize talks", (data / "meta.json").is_file()):
        from hpo_ray.synth import synthesize

        synthesize(cfg, data)
    speech = cfg.data.synth.speech.enabled
    if stage("build the tiny model", (init / "config.json").is_file()):
        build_model(cfg, data, init)
    if stage("supervised fine-tuning" + (" on speech: hear, encode, translate" if speech else ""),
             (sft / "sft_summary.json").is_file()):
        if speech:
            from hpo_ray.cli.demo_speech import speech_sft

            speech_sft(cfg, data, init, sft)
        else:
            from hpo_ray.sft import finetune

            finetune(cfg, init, sft, Path(cfg.data.sft_dir))
    if stage("HPO training", (hpo / "config.json").is_file()):
        run_hpo(cfg, root / "hpo_run", hpo)
    multipliers = [int(m) for m in args.multipliers.split(",")]
    results = evaluate_all(cfg, {"SFT": sft, "HPO": hpo}, multipliers, root / "eval")
    write_report(cfg, results, root, time.perf_counter() - started)
    print((root / "report.md").read_text())
    return 0


def build_model(cfg: RunConfig, data: Path, out: Path) -> None:
    """The tiny policy (tokenizer from the train talks); on spoken talks with a fresh speech encoder."""
    from hpo_ray.model.prepare import prepare_tiny_policy

    if not cfg.data.synth.speech.enabled:
        prepare_tiny_policy(cfg, [data / "train" / "manifest.parquet"], out)
        return
    from hpo_ray.cli.demo_speech import build_speech_model

    build_speech_model(cfg, data, out)


def run_hpo(cfg: RunConfig, run_dir: Path, out: Path) -> None:
    """HPO from the SFT policy; the final policy is exported to `out` (HF format)."""
    from hpo_ray.cli.train_cmd import connect, preflight
    from hpo_ray.env import apply_ray_mode

    apply_ray_mode(cfg.cluster.address, cfg.cluster.local_auth)  # before `import ray`, as connect() does
    import ray

    preflight(cfg)
    if not ray.is_initialized():
        connect(cfg)
    from hpo_ray.run_dir import prepare_run_dir

    from actors.controller import train

    train(cfg, run_dir, cfg.algorithm.steps, resume=prepare_run_dir(run_dir, "resume_or_start"))
    ray.shutdown()
    from hpo_ray.learner.checkpoint import CheckpointStore

    latest = CheckpointStore(run_dir / "checkpoints", keep_best=cfg.checkpoint.keep_best,
                             keep_last=cfg.checkpoint.keep_last).latest_verified().info
    if latest is None:
        raise RuntimeError(f"HPO wrote no checkpoint under {run_dir}")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(latest.path / "policy", out)


def evaluate_all(cfg: RunConfig, policies: dict[str, Path], multipliers: list[int], out: Path) -> dict[str, list[dict]]:
    """Scores of each policy on the test talks at each multiplier (one engine load per policy)."""
    from hpo_ray.eval import evaluate_multipliers
    from hpo_ray.speech.encode import features_manifest

    results: dict[str, list[dict]] = {}
    for name, path in policies.items():
        folders = [out / name.lower() / f"m{m}" for m in multipliers]
        if stage(f"evaluate {name} at multipliers {multipliers}", all((f / "scores.json").is_file() for f in folders)):
            # an audio manifest is encoded with this policy's own encoder first (a features manifest is used as is)
            manifest = features_manifest(cfg, path, Path(cfg.data.test_manifest), out / name.lower() / "encoded")
            evaluate_multipliers(cfg, path, manifest, multipliers, out / name.lower())
        results[name] = [json.loads((f / "scores.json").read_text()) for f in folders]
    return results


def input_line(cfg: RunConfig) -> str:
    """What the policies heard, for the report."""
    if cfg.data.synth.speech.enabled:
        return (f"input: audio (spoken by eSpeak NG, {cfg.model.speech.sample_rate} Hz; the test talks' wavs encoded "
                "chunk by chunk by each policy's speech encoder); tiny Qwen3 speech LLM, two-stage SFT (hear, then translate)")
    return "input: pre-rendered feature vectors (no audio); tiny Qwen3 policy"


def write_report(cfg: RunConfig, results: dict[str, list[dict]], root: Path, seconds: float) -> None:
    from hpo_ray.plot import plot_curves

    plot_curves(results, "chrf", "stream_laal", root / "chrf_vs_streamlaal.png")
    plot_curves(results, "bleu", "stream_laal", root / "bleu_vs_streamlaal.png")
    rows = ["| system | m | chrF | BLEU | StreamLAAL (s) | HPO latency (s) | length ratio |", "|---|---|---|---|---|---|---|"]
    def fmt(value, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    for name, points in results.items():
        for p in points:
            rows.append(f"| {name} | {p['multiplier']} | {fmt(p['chrf'], 2)} | {fmt(p['bleu'], 2)} | {fmt(p['stream_laal'], 3)} | "
                        f"{fmt(p['hpo_latency'], 3)} | {fmt(p['length_ratio'], 3)} |")
    text = "\n".join([
        "# hpo-ray demo report", "",
        f"Synthetic talks (seed {cfg.data.synth.seed}, language seed {cfg.data.synth.language_seed}), test split; "
        f"{input_line(cfg)}; SFT → {cfg.algorithm.steps} HPO steps. Wall time {seconds / 60:.1f} min on this machine.", "",
        *rows, "", "![chrF vs StreamLAAL](chrf_vs_streamlaal.png)", "", "![BLEU vs StreamLAAL](bleu_vs_streamlaal.png)", "",
    ])
    (root / "report.md").write_text(text)
