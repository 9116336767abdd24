"""`hpo-ray study`: the seeded evidence behind docs/results.md, end to end on CPU.

Two SFT starts from one tiny init: clean dialogues, and dialogues with `--omit-rate` of the target
words dropped. On spoken talks (the default) both hear through the one encoder that SFT stage 1
trains on the clean data, and the held-out talks are encoded with it too. Then, for each seed, HPO
and No-HPO (flat reward) from the clean start and HPO from the corrupted start. Every policy is
evaluated on held-out talks (a fresh synthesis, `--heldout-seed`) at each chunk multiplier; the
table, the spread over seeds and the three claims go to `--out`. Stages whose outputs exist are
skipped, so a rerun only redoes what is missing.
"""

import json
import time
from pathlib import Path

from hpo_ray.cli import demo_speech, pipeline
from hpo_ray.cli.common import add_config_arguments
from hpo_ray.cli.pipeline import run_hpo
from hpo_ray.config import RunConfig, load_config
from hpo_ray.study import mean_curve
from hpo_ray.study_report import NAMES, render

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "study.yaml"
COMMAND = "hpo-ray study"

# arm -> (SFT start, config overrides): the seeded HPO runs of the study.
ARMS = {
    "hpo": ("sft", ["reward.hinge=sentence"]),
    "no-hpo": ("sft", ["reward.hinge=none"]),
    "hpo-omit": ("sft-omit", ["reward.hinge=sentence"]),
    # the learning check of bounded-staleness training: HPO one step off (rollouts of step t+1 run while t trains)
    "hpo-async": ("sft", ["reward.hinge=sentence", "algorithm.max_staleness=1"]),
}
DEFAULT_ARMS = "hpo,no-hpo,hpo-omit"


PER_M_ARMS = ("hpo", "hpo-omit")  # also trained at each multiplier with --per-multiplier-seeds


TAG = "study"


def stage(name: str, done: bool) -> bool:
    return pipeline.stage(name, done, tag=TAG)


def add_arguments(parser) -> None:
    parser.add_argument("--seeds", default="0,1,2", help="HPO seeds (run.seed) of every arm")
    parser.add_argument(
        "--arms",
        default=DEFAULT_ARMS,
        help=f"seeded arms to train, among {', '.join(ARMS)} (hpo is required: every comparison is against it; "
        "hpo-async = HPO with algorithm.max_staleness=1, compared with synchronous HPO seed by seed)",
    )
    parser.add_argument("--omit-rate", type=float, default=0.2, help="fraction of target words dropped from the corrupted SFT data")
    parser.add_argument("--multipliers", default="1,2,3,4", help="chunk multipliers evaluated (latency points)")
    parser.add_argument("--heldout-seed", type=int, default=7, help="data.synth.seed of the held-out evaluation talks")
    parser.add_argument(
        "--heldout-talks", type=int, default=40, help="talks in the held-out synthesis (its test split, 80 %%, is evaluated)"
    )
    parser.add_argument(
        "--per-multiplier-seeds",
        default="",
        help="seeds (a subset of --seeds) for which HPO and HPO-from-corrupted-SFT are also trained at every "
        "other multiplier and evaluated there: one model per latency point, as in the paper",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"), help="the markdown report written at the end")
    add_config_arguments(parser)


def run(args) -> int:
    started = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    multipliers = [int(m) for m in args.multipliers.split(",")]
    per_m_seeds = [int(s) for s in args.per_multiplier_seeds.split(",") if s.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if "hpo" not in arms or not set(arms) <= set(ARMS):
        raise SystemExit(f"hpo-ray study: --arms {args.arms!r} must include hpo and name only {', '.join(ARMS)}")
    if not set(per_m_seeds) <= set(seeds):
        raise SystemExit(f"hpo-ray study: --per-multiplier-seeds {per_m_seeds} must be among --seeds {seeds}")
    config_path = args.config or DEFAULT_CONFIG
    cfg = load_config(config_path, args.overrides)
    root, speech = Path(cfg.run.dir), cfg.data.synth.speech.enabled
    if speech:
        demo_speech.check_feature_paths(cfg, root)
    root.mkdir(parents=True, exist_ok=True)
    prepare_data(cfg, root, args)
    # the SFT starts the chosen arms need (the corrupted one only for hpo-omit)
    starts = {name: root / name for name in ("sft", "sft-omit") if any(ARMS[a][0] == name for a in arms)}
    if speech:
        heldout = speech_starts(cfg, root, starts)
    else:
        heldout = root / "heldout" / "test" / "manifest.parquet"
        pipeline.build_tiny_model(cfg, root / "data" / "train" / "manifest.parquet", root / "init", TAG)
        for name in starts:
            data = root / ("data" if name == "sft" else "data-omit")
            pipeline.supervised_start(cfg, root / "init", starts[name], data / "sft", f"SFT {name}", TAG)
    arm = ArmRunner(config_path, list(args.overrides), starts, root)
    policies: dict[str, dict[int, Path]] = {name: {} for name in arms}
    for seed in seeds:  # seed-major: a study stopped early already holds every arm of its first seeds
        for name in arms:
            policies[name][seed] = arm.train(name, seed)
    per_m: dict[str, dict[int, dict[int, Path]]] = {}
    for seed in per_m_seeds:
        for name in [a for a in PER_M_ARMS if a in arms]:
            at = {m: policies[name][seed] if m == cfg.data.multiplier else arm.train(name, seed, m) for m in multipliers}
            per_m.setdefault(name, {})[seed] = at
    curves = evaluate_policies(cfg, starts, policies, heldout, multipliers, root / "eval")
    curves.update(evaluate_per_multiplier(cfg, per_m, heldout, root / "eval"))
    report = {
        "command": command_line(args),
        "seeds": seeds,
        "arms": arms,
        "per_multiplier_seeds": per_m_seeds,
        "multipliers": multipliers,
        "omit_rate": args.omit_rate,
        "heldout": str(heldout),
        "heldout_seed": args.heldout_seed,
        "curves": curves,
        "minutes": (time.perf_counter() - started) / 60,
        "hpo_runs": hpo_run_minutes(root),
    }
    (root / "results.json").write_text(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report["plot"] = plot_means(curves, args.out.with_name(args.out.stem + "_chrf_vs_streamlaal.png"))
    text = render(cfg, report)
    args.out.write_text(text)
    print(text)
    return 0


class ArmRunner:
    """One seeded HPO run of an arm (at the config's multiplier, or at `m` for one model per m), skipped
    when its policy exists; returns the policy directory."""

    def __init__(self, config_path: Path, overrides: list[str], starts: dict[str, Path], root: Path):
        self.config_path, self.overrides, self.starts, self.root = config_path, overrides, starts, root

    def train(self, arm: str, seed: int, m: int | None = None) -> Path:
        start, arm_overrides = ARMS[arm]
        name = arm if m is None else f"{arm}-m{m}"
        at_m = [] if m is None else [f"data.multiplier={m}", "data.chunk_seconds=null"]
        keys = [f"run.seed={seed}", f"run.name={name}-seed{seed}", f"model.path={self.starts[start]}", *at_m]
        out = self.root / f"seed{seed}" / name
        label = f"HPO {arm} seed {seed}" if m is None else f"HPO {arm} at m = {m} seed {seed}"
        if stage(label, (out / "config.json").is_file()):
            run_hpo(load_config(self.config_path, self.overrides + arm_overrides + keys), self.root / f"seed{seed}" / f"{name}_run", out)
        return out


def speech_starts(cfg: RunConfig, root: Path, starts: dict[str, Path]) -> Path:
    """The SFT starts of a study on spoken talks: the clean start's two-stage SFT (stage 1 kept in `heard/`),
    the corrupted start's stage 2 alone from `heard/` on the same features; then the held-out talks encoded
    with that encoder (HPO leaves it as it is). Returns the held-out features manifest."""
    from hpo_ray.speech.encode import encode_manifest
    from hpo_ray.speech.model import SpeechLLM
    from hpo_ray.speech.sft_speech import speech_finetune, translate_heard
    from hpo_ray.synth import AUDIO_MANIFEST

    features, heard = root / demo_speech.FEATURES, root / "heard"
    pipeline.build_tiny_model(cfg, root / "data" / "train" / AUDIO_MANIFEST, root / "init", TAG, speech=True)
    if stage("two-stage speech SFT sft (hear by CTC, encode train/dev/test, translate)", demo_speech.finetuned(starts["sft"])):
        speech_finetune(cfg, root / "init", root / "data", starts["sft"], features, heard_dir=heard)
    omit = starts.get("sft-omit")
    if omit and stage("speech SFT sft-omit (stage 2 on the corrupted dialogues, same encoder)", (omit / "sft_summary.json").is_file()):
        translate_heard(cfg, heard, root / "data-omit", features, omit, "sft-omit")
    out = features / "heldout"
    if stage("encode the held-out talks with the SFT encoder", (out / "encode.json").is_file()):
        encode_manifest(SpeechLLM.from_pretrained(starts["sft"]), root / "heldout" / "test" / AUDIO_MANIFEST, out, cfg)
    return out / "manifest.parquet"


def prepare_data(cfg: RunConfig, root: Path, args) -> None:
    """Clean and corrupted training data (same talks) and the held-out talks (spoken when the config says)."""
    from hpo_ray.config import apply_overrides, parse_config
    from hpo_ray.synth import synthesize

    def with_synth(**fields) -> RunConfig:
        return parse_config(apply_overrides(cfg.model_dump(mode="json"), [f"data.synth.{k}={v}" for k, v in fields.items()]))

    targets = {
        root / "data": cfg,
        root / "data-omit": with_synth(omit_rate=args.omit_rate),
        root / "heldout": with_synth(seed=args.heldout_seed, talks=args.heldout_talks, dev_fraction=0.1, test_fraction=0.8),
    }
    for folder, folder_cfg in targets.items():
        if stage(f"synthesize {folder.name}", (folder / "meta.json").is_file()):
            synthesize(folder_cfg, folder)


def evaluate_policies(
    cfg: RunConfig, starts: dict[str, Path], policies: dict[str, dict[int, Path]], manifest: Path, multipliers: list[int], out: Path
) -> dict:
    """Scores at each multiplier: `{"sft": [...], "sft-omit": [...], arm: {seed: [...]}}`."""
    from hpo_ray.eval import evaluate_multipliers

    def curve(policy: Path, folder: Path) -> list[dict]:
        folders = [folder / f"m{m}" for m in multipliers]
        if stage(f"evaluate {folder.relative_to(out)}", all((f / "scores.json").is_file() for f in folders)):
            evaluate_multipliers(cfg, policy, manifest, multipliers, folder)
        return [json.loads((f / "scores.json").read_text()) for f in folders]

    curves: dict = {name: curve(path, out / name) for name, path in starts.items()}
    for arm, by_seed in policies.items():
        curves[arm] = {str(seed): curve(path, out / arm / f"seed{seed}") for seed, path in by_seed.items()}
    return curves


def evaluate_per_multiplier(cfg: RunConfig, per_m: dict[str, dict[int, dict[int, Path]]], manifest: Path, out: Path) -> dict:
    """Each per-multiplier model at its own multiplier: `{f"{arm}-per-m": {seed: [...]}}`."""
    from hpo_ray.eval import evaluate_multipliers

    curves: dict = {}
    for arm, by_seed in per_m.items():
        for seed, by_m in by_seed.items():
            folder = out / f"{arm}-per-m" / f"seed{seed}"
            for m, policy in by_m.items():
                if stage(f"evaluate {arm} trained at m = {m}, seed {seed}", (folder / f"m{m}" / "scores.json").is_file()):
                    evaluate_multipliers(cfg, policy, manifest, [m], folder)
            curves.setdefault(f"{arm}-per-m", {})[str(seed)] = [
                json.loads((folder / f"m{m}" / "scores.json").read_text()) for m in sorted(by_m)
            ]
    return curves


def hpo_run_minutes(root: Path) -> dict:
    """How many HPO runs the study holds and their summed step time (from each run's metrics.jsonl)."""
    runs = sorted(root.glob("seed*/*_run/metrics.jsonl"))
    seconds = sum(json.loads(line).get("time/step", 0.0) for path in runs for line in path.read_text().splitlines() if line.strip())
    return {"runs": len(runs), "minutes": seconds / 60}


def plot_means(curves: dict, out: Path) -> str:
    """chrF vs StreamLAAL of every policy (seed means), next to the report; returns the file name."""
    from hpo_ray.plot import plot_curves

    runs = {
        NAMES[key]: (curves[key] if key in ("sft", "sft-omit") else mean_curve({int(s): c for s, c in curves[key].items()}))
        for key in NAMES
        if key in curves
    }
    plot_curves(runs, "chrf", "stream_laal", out, title="held-out talks; HPO arms: mean over seeds")
    return out.name


def command_line(args) -> str:
    parts = [COMMAND]
    if args.config:
        parts += ["--config", str(args.config)]
    if args.arms != DEFAULT_ARMS:
        parts += ["--arms", args.arms]
    parts += [
        "--seeds",
        args.seeds,
        "--omit-rate",
        f"{args.omit_rate:g}",
        "--multipliers",
        args.multipliers,
        "--heldout-seed",
        str(args.heldout_seed),
        "--heldout-talks",
        str(args.heldout_talks),
    ]
    if args.per_multiplier_seeds:
        parts += ["--per-multiplier-seeds", args.per_multiplier_seeds]
    parts += ["--out", str(args.out)]
    return " ".join(parts + list(args.overrides))
