"""docs/results.md from a study's `results.json`: the per-arm table (mean ± std over seeds), chrF gains
at matched latency, same-multiplier differences, the claims and every seed's numbers."""

from hpo_ray.config import RunConfig
from hpo_ray.study import (
    Claim,
    claim_async_matches,
    claim_beats_start,
    claim_not_below,
    claim_robust,
    claim_targets,
    faster_than_baseline,
    gain_spread,
    metric_spread,
    paired_deltas,
)

NAMES = {
    "sft": "SFT (default data)",
    "hpo": "HPO",
    "no-hpo": "No-HPO",
    "sft-omit": "SFT (corrupted)",
    "hpo-omit": "HPO from corrupted SFT",
    "hpo-per-m": "HPO, one model per m",
    "hpo-omit-per-m": "HPO from corrupted SFT, one model per m",
    "hpo-async": "HPO, one step off (max_staleness 1)",
}
STARTS = ("sft", "sft-omit")  # one SFT checkpoint per data condition; every other arm is seeded


def fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def seeded_curves(curves: dict) -> dict:
    """`{arm: {seed: curve}}` of the seeded arms."""
    return {arm: {int(s): c for s, c in curves[arm].items()} for arm in NAMES if arm in curves and arm not in STARTS}


def arm_table(curves: dict, seeded: dict, multipliers: list[int]) -> list[str]:
    rows = ["| policy | m | chrF | BLEU | StreamLAAL (s) | length ratio | seeds |", "|---|---|---|---|---|---|---|"]
    for key in [k for k in NAMES if k in curves]:
        by_seed = {0: curves[key]} if key in STARTS else seeded[key]
        spreads = {metric: metric_spread(by_seed, metric) for metric in ("chrf", "bleu", "stream_laal", "length_ratio")}
        for m in multipliers:
            cells = [
                spreads[k][m].plain(3 if k in ("stream_laal", "length_ratio") else 2) if m in spreads[k] else "n/a"
                for k in ("chrf", "bleu", "stream_laal", "length_ratio")
            ]
            rows.append(f"| {NAMES[key]} | {m} | " + " | ".join(cells) + f" | {len(by_seed)} |")
    return rows


def comparisons(curves: dict, seeded: dict) -> list[tuple]:
    """(label, candidate seeds, baseline) of every comparison the report makes."""
    compared = [("HPO vs SFT (default data)", seeded["hpo"], curves["sft"])]
    if "no-hpo" in seeded:
        compared += [
            ("HPO vs No-HPO (same seed)", seeded["hpo"], seeded["no-hpo"]),
            ("No-HPO vs SFT (default data)", seeded["no-hpo"], curves["sft"]),
        ]
    if "hpo-omit" in seeded:
        compared.append(("HPO vs SFT, corrupted start", seeded["hpo-omit"], curves["sft-omit"]))
    if "hpo-async" in seeded:
        compared.append(("HPO one step off vs HPO (same seed)", seeded["hpo-async"], seeded["hpo"]))
    if "hpo-per-m" in seeded:
        compared.append(("HPO one model per m vs SFT (default data)", seeded["hpo-per-m"], curves["sft"]))
    if "hpo-omit-per-m" in seeded:
        compared.append(("HPO one model per m vs SFT, corrupted start", seeded["hpo-omit-per-m"], curves["sft-omit"]))
    return compared


def gain_tables(compared: list[tuple], multipliers: list[int]) -> tuple[list[str], list[str]]:
    """chrF gain at matched latency: the default rule (†: compared at the same multiplier) and the strict rule."""
    header = ["| comparison | " + " | ".join(f"m = {m}" for m in multipliers) + " |", "|---|" + "---|" * len(multipliers)]
    gain_rows, strict_rows = list(header), list(header)
    for label, cand, base in compared:
        spread, strict = gain_spread(cand, base), gain_spread(cand, base, strict=True)
        faster = set().union(*(faster_than_baseline(c, base[s] if isinstance(base, dict) else base) for s, c in cand.items()))
        cells = [(str(spread[m]) + (" †" if m in faster else "")) if m in spread else "n/a" for m in multipliers]
        gain_rows.append(f"| {label} | " + " | ".join(cells) + " |")
        strict_rows.append(f"| {label} | " + " | ".join(str(strict[m]) if m in strict else "n/a" for m in multipliers) + " |")
    return gain_rows, strict_rows


def pair_table(compared: list[tuple], multipliers: list[int]) -> list[str]:
    """Same-multiplier differences in chrF and StreamLAAL, mean over seeds."""
    rows = [
        "| comparison | " + " | ".join(f"m = {m}: ΔchrF / ΔStreamLAAL (s)" for m in multipliers) + " |",
        "|---|" + "---|" * len(multipliers),
    ]
    for label, cand, base in compared:
        if label.startswith("No-HPO"):
            continue
        dq, dl = paired_deltas(cand, base, "chrf"), paired_deltas(cand, base, "stream_laal")
        cells = [f"{dq[m].mean:+.2f} / {dl[m].mean:+.2f}" if m in dq and m in dl else "n/a" for m in multipliers]
        rows.append(f"| {label.replace(' vs ', ' − ')} | " + " | ".join(cells) + " |")
    return rows


def claim_lines(curves: dict, seeded: dict) -> list[str]:
    claims: list[Claim] = [claim_beats_start(seeded["hpo"], curves["sft"])]
    if "no-hpo" in seeded:
        claims.append(claim_not_below(seeded["hpo"], seeded["no-hpo"], "No-HPO"))
    if "hpo-omit" in seeded:
        claims.append(claim_robust(seeded["hpo-omit"], curves["sft-omit"]))
    claims.append(claim_targets(seeded["hpo"], curves["sft"]))
    if "hpo-async" in seeded:
        claims.append(claim_async_matches(seeded["hpo-async"], seeded["hpo"]))
    if "hpo-per-m" in seeded:
        claims.append(claim_beats_start(seeded["hpo-per-m"], curves["sft"], label=" (one model per m)"))
    if "hpo-omit-per-m" in seeded:
        claims.append(claim_robust(seeded["hpo-omit-per-m"], curves["sft-omit"], label=" (one model per m)"))
    return [f"- **{c.name}: {'held' if c.held else 'did not hold'}** — {c.detail}." for c in claims]


def per_seed_table(seeded: dict, multipliers: list[int]) -> list[str]:
    rows = [
        "| policy | seed | " + " | ".join(f"m = {m} chrF / StreamLAAL / len" for m in multipliers) + " |",
        "|---|---|" + "---|" * len(multipliers),
    ]
    for key in seeded:
        for seed, curve in sorted(seeded[key].items()):
            cells = [" / ".join(fmt(p.get(k)) for k in ("chrf", "stream_laal", "length_ratio")) for p in curve]
            rows.append(f"| {NAMES[key]} | {seed} | " + " | ".join(cells) + " |")
    return rows


def preamble(cfg: RunConfig, report: dict) -> list[str]:
    """The command, what the run cost, and the setup (data, policy, RL, latency points)."""
    a, synth = cfg.algorithm, cfg.data.synth
    return [
        "# Results: HPO on synthetic simultaneous speech translation",
        "",
        "Generated by:",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"({report['hpo_runs']['runs']} HPO runs of {a.steps} steps, {report['hpo_runs']['minutes']:.0f} min of "
        f"training steps in all on the machine that wrote it; this invocation took {report['minutes']:.0f} min. "
        "Stages already done are skipped, so "
        "delete `" + str(cfg.run.dir) + "` to recompute everything). The numbers are deterministic for fixed seeds on one "
        "machine (fp32, greedy evaluation); the spread below is over HPO seeds, which is the noise to compare against.",
        "",
        "## Setup",
        "",
        f"- Talks: the toy-SST language (language seed {synth.language_seed}); training data = "
        f"{synth.talks} talks (synth seed {synth.seed}); evaluation on held-out talks "
        f"(`{report['heldout']}`, a fresh synthesis, seed {report.get('heldout_seed', 'n/a')}), never seen in SFT or HPO.",
        *input_line(cfg),
        f"- Policy: tiny Qwen3 (hidden {cfg.model.tiny.hidden_size}, {cfg.model.tiny.num_layers} layers) built from "
        f"config; SFT {cfg.sft.epochs} epochs (SFT seed {cfg.sft.seed}, one SFT checkpoint per data condition).",
        f"- Errors in the default SFT data (docs/data.md): {synth.omit_rate:.0%} of the target words omitted, "
        f"{synth.premature_rate:.0%} guessed early, {synth.segmentation_slip_rate:.0%} of the sentence boundaries "
        "slipped a turn.",
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
    ]


def input_line(cfg: RunConfig) -> list[str]:
    """What the policies took as input: audio through the SFT encoder, or feature vectors."""
    if not cfg.data.synth.speech.enabled:
        return ["- Input: feature vectors, not audio (each source word a fixed random vector plus noise)."]
    hear = cfg.sft.hear
    return [
        "- Input: audio. Every talk is spoken by eSpeak NG; the policies hear it through the chunk-causal speech "
        f"encoder (`{cfg.model.speech.projector}` projector) that SFT stage 1 trains by CTC on the clean training talks "
        f"({hear.epochs} epochs on sentence crops, {hear.talk_epochs} on whole talks). Both SFT starts translate from that "
        "one encoder's frames, HPO leaves it frozen, and the held-out talks are encoded with it chunk by chunk."
    ]


MATCHED_LATENCY = (
    "*Matched latency*: at the StreamLAAL L of each of a policy's points (one per multiplier), both curves are "
    "read at their best chrF among their points with StreamLAAL ≤ L — what each reaches within that latency. "
    "When every baseline point is slower than L, the baseline cannot run at that latency; it is then read at "
    "the same multiplier (marked † below), and the *strict rule* reads its fastest point instead."
)
STRICT_RULE = (
    "† In at least one seed the policy is faster at this multiplier than every baseline point, so the baseline "
    "has no point at that latency; it is then compared with the baseline at the same multiplier (the operating "
    "point it replaces, which is slower). The strict rule compares it with the baseline's fastest point instead "
    "(quality the baseline only reaches at a higher latency):"
)


def render(cfg: RunConfig, report: dict) -> str:
    """docs/results.md: setup, claims, per-arm table, matched-latency gains, same-m differences, every seed."""
    curves, multipliers = report["curves"], report["multipliers"]
    seeded = seeded_curves(curves)
    compared = comparisons(curves, seeded)
    gain_rows, strict_rows = gain_tables(compared, multipliers)
    plot = [f"![chrF vs StreamLAAL]({report['plot']})", ""] if report.get("plot") else []
    return "\n".join(
        [
            *preamble(cfg, report),
            "## Claims",
            "",
            *claim_lines(curves, seeded),
            "",
            MATCHED_LATENCY,
            "",
            "## Mean ± std over seeds",
            "",
            *arm_table(curves, seeded, multipliers),
            "",
            *plot,
            "## chrF gain at matched latency (mean ± std [min, max] over seeds)",
            "",
            *gain_rows,
            "",
            STRICT_RULE,
            "",
            *strict_rows,
            "",
            "## Same multiplier: differences in chrF and StreamLAAL (mean over seeds)",
            "",
            "Negative ΔStreamLAAL = lower latency than the baseline at the same chunk size.",
            "",
            *pair_table(compared, multipliers),
            "",
            "## Every seed",
            "",
            *per_seed_table(seeded, multipliers),
            "",
        ]
    )
