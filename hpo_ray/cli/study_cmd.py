"""`hpo-ray study`: the seeded evidence behind docs/results.md, end to end on CPU.

Two SFT starts from one tiny init — clean dialogues, and dialogues with `--omit-rate` of the target
words dropped — then, for each seed, HPO and No-HPO (flat reward) from the clean start and HPO from
the corrupted start. Every policy is evaluated on held-out talks (a fresh synthesis, `--heldout-seed`)
at each chunk multiplier; the table, the spread over seeds and the three claims go to `--out`.
Stages whose outputs exist are skipped, so a rerun only redoes what is missing.
"""

import json
import time
from pathlib import Path

from hpo_ray.cli import demo_cmd
from hpo_ray.cli.common import add_config_arguments
from hpo_ray.cli.demo_cmd import run_hpo
from hpo_ray.config import RunConfig, load_config
from hpo_ray.study import (
    Claim,
    claim_beats_start,
    claim_not_below,
    claim_robust,
    faster_than_baseline,
    gain_spread,
    mean_curve,
    metric_spread,
    paired_deltas,
)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "study.yaml"
COMMAND = "hpo-ray study"

# arm -> (SFT start, config overrides): the seeded HPO runs of the study.
ARMS = {
    "hpo": ("sft", ["reward.hinge=sentence"]),
    "no-hpo": ("sft", ["reward.hinge=none"]),
    "hpo-omit": ("sft-omit", ["reward.hinge=sentence"]),
}


NAMES = {
    "sft": "SFT (clean)",
    "hpo": "HPO",
    "no-hpo": "No-HPO",
    "sft-omit": "SFT (corrupted)",
    "hpo-omit": "HPO from corrupted SFT",
    "hpo-per-m": "HPO, one model per m",
    "hpo-omit-per-m": "HPO from corrupted SFT, one model per m",
}
PER_M_ARMS = ("hpo", "hpo-omit")  # also trained at each multiplier with --per-multiplier-seeds


def stage(name: str, done: bool) -> bool:
    return demo_cmd.stage(name, done, tag="study")


def add_arguments(parser) -> None:
    parser.add_argument("--seeds", default="0,1,2", help="HPO seeds (run.seed) of every arm")
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
    config_path = args.config or DEFAULT_CONFIG
    cfg = load_config(config_path, args.overrides)
    root = Path(cfg.run.dir)
    root.mkdir(parents=True, exist_ok=True)
    heldout = prepare_data(cfg, root, args)
    starts = {"sft": root / "sft", "sft-omit": root / "sft-omit"}
    if stage("build the tiny model", (root / "init" / "config.json").is_file()):
        from hpo_ray.model.prepare import prepare_tiny_policy

        prepare_tiny_policy(cfg, [root / "data" / "train" / "manifest.parquet"], root / "init")
    for name, data in (("sft", root / "data"), ("sft-omit", root / "data-omit")):
        if stage(f"SFT {name}", (starts[name] / "sft_summary.json").is_file()):
            from hpo_ray.sft import finetune

            finetune(cfg, root / "init", starts[name], data / "sft")
    policies: dict[str, dict[int, Path]] = {}
    for seed in seeds:
        for arm, (start, overrides) in ARMS.items():
            arm_cfg = load_config(
                config_path,
                list(args.overrides) + overrides + [f"run.seed={seed}", f"run.name={arm}-seed{seed}", f"model.path={starts[start]}"],
            )
            out = root / f"seed{seed}" / arm
            if stage(f"HPO {arm} seed {seed}", (out / "config.json").is_file()):
                run_hpo(arm_cfg, root / f"seed{seed}" / f"{arm}_run", out)
            policies.setdefault(arm, {})[seed] = out
    per_m_seeds = [int(s) for s in args.per_multiplier_seeds.split(",") if s.strip()]
    if not set(per_m_seeds) <= set(seeds):
        raise SystemExit(f"hpo-ray study: --per-multiplier-seeds {per_m_seeds} must be among --seeds {seeds}")
    per_m: dict[str, dict[int, dict[int, Path]]] = {}
    for seed in per_m_seeds:
        for arm in PER_M_ARMS:
            start, overrides = ARMS[arm]
            for m in multipliers:
                out = policies[arm][seed] if m == cfg.data.multiplier else root / f"seed{seed}" / f"{arm}-m{m}"
                if m != cfg.data.multiplier and stage(f"HPO {arm} at m = {m} seed {seed}", (out / "config.json").is_file()):
                    run_hpo(
                        load_config(
                            config_path,
                            list(args.overrides)
                            + overrides
                            + [
                                f"run.seed={seed}",
                                f"run.name={arm}-m{m}-seed{seed}",
                                f"model.path={starts[start]}",
                                f"data.multiplier={m}",
                                "data.chunk_seconds=null",
                            ],
                        ),
                        root / f"seed{seed}" / f"{arm}-m{m}_run",
                        out,
                    )
                per_m.setdefault(arm, {}).setdefault(seed, {})[m] = out
    curves = evaluate_policies(cfg, starts, policies, heldout, multipliers, root / "eval")
    curves.update(evaluate_per_multiplier(cfg, per_m, heldout, root / "eval"))
    report = {
        "command": command_line(args),
        "seeds": seeds,
        "per_multiplier_seeds": per_m_seeds,
        "multipliers": multipliers,
        "omit_rate": args.omit_rate,
        "heldout": str(heldout),
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


def prepare_data(cfg: RunConfig, root: Path, args) -> Path:
    """Clean and corrupted training data (same talks) and the held-out talks; returns the held-out manifest."""
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
    return root / "heldout" / "test" / "manifest.parquet"


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


def fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render(cfg: RunConfig, report: dict) -> str:
    """docs/results.md: method, per-arm table (mean ± std over seeds), matched-latency gains, claims."""
    curves = report["curves"]
    seeded = {arm: {int(s): c for s, c in curves[arm].items()} for arm in NAMES if arm in curves and arm not in ("sft", "sft-omit")}
    single = {name: {0: curves[name]} for name in ("sft", "sft-omit")}
    names = NAMES
    rows = ["| policy | m | chrF | BLEU | StreamLAAL (s) | length ratio | seeds |", "|---|---|---|---|---|---|---|"]
    for key in [k for k in NAMES if k in curves]:
        by_seed = single.get(key) or seeded[key]
        spreads = {metric: metric_spread(by_seed, metric) for metric in ("chrf", "bleu", "stream_laal", "length_ratio")}
        for m in report["multipliers"]:
            cells = [
                spreads[k][m].plain(3 if k in ("stream_laal", "length_ratio") else 2) if m in spreads[k] else "n/a"
                for k in ("chrf", "bleu", "stream_laal", "length_ratio")
            ]
            rows.append(f"| {names[key]} | {m} | " + " | ".join(cells) + f" | {len(by_seed)} |")
    compared = [
        ("HPO vs SFT (clean)", seeded["hpo"], curves["sft"]),
        ("HPO vs No-HPO (same seed)", seeded["hpo"], seeded["no-hpo"]),
        ("No-HPO vs SFT (clean)", seeded["no-hpo"], curves["sft"]),
        ("HPO vs SFT, corrupted start", seeded["hpo-omit"], curves["sft-omit"]),
    ]
    if "hpo-per-m" in seeded:
        compared += [
            ("HPO one model per m vs SFT (clean)", seeded["hpo-per-m"], curves["sft"]),
            ("HPO one model per m vs SFT, corrupted start", seeded["hpo-omit-per-m"], curves["sft-omit"]),
        ]
    header = [
        "| comparison | " + " | ".join(f"m = {m}" for m in report["multipliers"]) + " |",
        "|---|" + "---|" * len(report["multipliers"]),
    ]
    gain_rows, strict_rows = list(header), list(header)
    for label, cand, base in compared:
        spread, strict = gain_spread(cand, base), gain_spread(cand, base, strict=True)
        faster = set().union(*(faster_than_baseline(c, base[s] if isinstance(base, dict) else base) for s, c in cand.items()))
        gain_rows.append(
            f"| {label} | "
            + " | ".join((str(spread[m]) + (" †" if m in faster else "")) if m in spread else "n/a" for m in report["multipliers"])
            + " |"
        )
        strict_rows.append(f"| {label} | " + " | ".join(str(strict[m]) if m in strict else "n/a" for m in report["multipliers"]) + " |")
    pairs = [(label.replace(" vs ", " − "), cand, base) for label, cand, base in compared if not label.startswith("No-HPO")]
    pair_rows = [
        "| comparison | " + " | ".join(f"m = {m}: ΔchrF / ΔStreamLAAL (s)" for m in report["multipliers"]) + " |",
        "|---|" + "---|" * len(report["multipliers"]),
    ]
    for label, cand, base in pairs:
        dq, dl = paired_deltas(cand, base, "chrf"), paired_deltas(cand, base, "stream_laal")
        pair_rows.append(
            f"| {label} | "
            + " | ".join(f"{dq[m].mean:+.2f} / {dl[m].mean:+.2f}" if m in dq and m in dl else "n/a" for m in report["multipliers"])
            + " |"
        )
    claims: list[Claim] = [
        claim_beats_start(seeded["hpo"], curves["sft"]),
        claim_not_below(seeded["hpo"], seeded["no-hpo"], "No-HPO"),
        claim_robust(seeded["hpo-omit"], curves["sft-omit"]),
    ]
    if "hpo-per-m" in seeded:
        claims += [
            claim_beats_start(seeded["hpo-per-m"], curves["sft"], label=" (one model per m)"),
            claim_robust(seeded["hpo-omit-per-m"], curves["sft-omit"], label=" (one model per m)"),
        ]
    claim_rows = [f"- **{c.name}: {'held' if c.held else 'did not hold'}** — {c.detail}." for c in claims]
    per_seed = [
        "| policy | seed | " + " | ".join(f"m = {m} chrF / StreamLAAL / len" for m in report["multipliers"]) + " |",
        "|---|---|" + "---|" * len(report["multipliers"]),
    ]
    for key in seeded:
        for seed, curve in sorted(seeded[key].items()):
            cells = [" / ".join(fmt(p.get(k)) for k in ("chrf", "stream_laal", "length_ratio")) for p in curve]
            per_seed.append(f"| {names[key]} | {seed} | " + " | ".join(cells) + " |")
    a = cfg.algorithm
    return "\n".join(
        [
            "# Results: HPO on synthetic simultaneous speech translation",
            "",
            "Generated by:",
            "",
            "```",
            report["command"],
            "```",
            "",
            f"({report['hpo_runs']['runs']} HPO runs of {cfg.algorithm.steps} steps, {report['hpo_runs']['minutes']:.0f} min of "
            f"training steps in all on the machine that wrote it; this invocation took {report['minutes']:.0f} min. "
            "Stages already done are skipped, so "
            "delete `" + str(cfg.run.dir) + "` to recompute everything). The numbers are deterministic for fixed seeds on one "
            "machine (fp32, greedy evaluation); the spread below is over HPO seeds, which is the noise to compare against.",
            "",
            "## Setup",
            "",
            f"- Talks: the toy-SST language (language seed {cfg.data.synth.language_seed}); training data = "
            f"{cfg.data.synth.talks} talks (synth seed {cfg.data.synth.seed}); evaluation on held-out talks "
            f"(`{report['heldout']}`, a fresh synthesis), never seen in SFT or HPO.",
            f"- Policy: tiny Qwen3 (hidden {cfg.model.tiny.hidden_size}, {cfg.model.tiny.num_layers} layers) built from "
            f"config; SFT {cfg.sft.epochs} epochs (SFT seed {cfg.sft.seed}, one SFT checkpoint per data condition).",
            f"- Corrupted data: the same talks with {report['omit_rate']:.0%} of the SFT target words omitted "
            "(`data.synth.omit_rate`); references for the reward and for evaluation stay clean.",
            f"- RL: {a.steps} steps × {a.talks_per_step} talks × {a.group_size} rollouts, reward quality "
            f"`{cfg.reward.quality}` (β = {cfg.reward.chrf_beta:g}), latency `{cfg.reward.latency}`. HPO = sentence hinge; "
            "No-HPO = the flat reward α·z(Q) − β·z(L) (`reward.hinge=none`); everything else equal, same seeds "
            f"{report['seeds']}.",
            "- Latency points: chunk multipliers m (a turn = m × "
            f"{cfg.data.chunk_frames} frames of {cfg.data.frame_seconds:g} s). Two protocols: every arm is trained at "
            f"m = {cfg.data.multiplier} and evaluated at every m (seeds {report['seeds']}); and, as in the paper, one HPO "
            'model per m, each trained and evaluated at its own m ("one model per m"; seeds '
            f"{report.get('per_multiplier_seeds') or 'none'}).",
            "- Reported chrF is sacrebleu's standard chrF (β = 2); StreamLAAL in seconds; length ratio = output / reference characters.",
            "",
            "## Claims",
            "",
            *claim_rows,
            "",
            "*Matched latency*: at the StreamLAAL L of each of a policy's points (one per multiplier), both curves are "
            "read at their best chrF among their points with StreamLAAL ≤ L — what each reaches within that latency. "
            "When every baseline point is slower than L, the baseline cannot run at that latency; it is then read at "
            "the same multiplier (marked † below), and the *strict rule* reads its fastest point instead.",
            "",
            "## Mean ± std over seeds",
            "",
            *rows,
            "",
            *([f"![chrF vs StreamLAAL]({report['plot']})", ""] if report.get("plot") else []),
            "## chrF gain at matched latency (mean ± std [min, max] over seeds)",
            "",
            *gain_rows,
            "",
            "† In at least one seed the policy is faster at this multiplier than every baseline point, so the baseline "
            "has no point at that latency; it is then compared with the baseline at the same multiplier (the operating "
            "point it replaces, which is slower). The strict rule compares it with the baseline's fastest point instead "
            "(quality the baseline only reaches at a higher latency):",
            "",
            *strict_rows,
            "",
            "## Same multiplier: differences in chrF and StreamLAAL (mean over seeds)",
            "",
            "Negative ΔStreamLAAL = lower latency than the baseline at the same chunk size.",
            "",
            *pair_rows,
            "",
            "## Every seed",
            "",
            *per_seed,
            "",
        ]
    )
