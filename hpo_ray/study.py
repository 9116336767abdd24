"""The evidence study's arithmetic: quality at matched latency, spread over seeds, the three claims.

A *curve* is one policy's eval points, one per chunk multiplier (`scores.json` dicts with
`multiplier`, `chrf`, `stream_laal`, `length_ratio`, ...). Comparing two policies "at matched
latency" reads both curves at the StreamLAAL L of each of the candidate's points: each policy's best
quality among its points with StreamLAAL ≤ L (what it reaches within that latency; the candidate's
own point is among them). When every baseline point is slower than L, the baseline cannot run at
that latency at all; it is then read at the same multiplier (the operating point the candidate
replaces, slower by construction), and `strict=True` reads its fastest point instead, which favours
the baseline.
"""

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

QUALITY = "chrf"
LATENCY = "stream_laal"


def baseline_quality_at(baseline: Sequence[Mapping], latency: float, quality: str = QUALITY, multiplier: int | None = None) -> float:
    """The baseline's quality at `latency`: its best point with StreamLAAL ≤ latency; when every point is
    slower, its point at `multiplier` (if given and present), else its fastest point."""
    if not baseline:
        raise ValueError("baseline curve has no points")
    timed = [p for p in baseline if finite(p.get(LATENCY))]
    if not timed:  # a baseline that wrote nothing has no latency; any latency is "matched"
        return max(p[quality] for p in baseline)
    baseline = timed
    within = [p[quality] for p in baseline if p[LATENCY] <= latency]
    if within:
        return max(within)
    same = by_multiplier(baseline).get(multiplier) if multiplier is not None else None
    return (same or min(baseline, key=lambda p: p[LATENCY]))[quality]


def matched_gains(
    candidate: Sequence[Mapping], baseline: Sequence[Mapping], quality: str = QUALITY, strict: bool = False
) -> dict[int, float]:
    """Per multiplier of `candidate`: its quality minus the baseline's quality at its latency (see the
    module docstring for points faster than every baseline point; `strict` = the baseline's fastest point).

    Points without a StreamLAAL (a policy that wrote nothing) have no latency to match and are left out.
    """
    timed = [p for p in candidate if finite(p.get(LATENCY)) and finite(p.get(quality))]
    return {
        int(p["multiplier"]): max(q[quality] for q in timed if q[LATENCY] <= p[LATENCY])
        - baseline_quality_at(baseline, p[LATENCY], quality, None if strict else int(p["multiplier"]))
        for p in timed
    }


def faster_than_baseline(candidate: Sequence[Mapping], baseline: Sequence[Mapping]) -> set[int]:
    """Multipliers at which the candidate is faster than every baseline point (no matched baseline point)."""
    fastest = min((p[LATENCY] for p in baseline if finite(p.get(LATENCY))), default=None)
    return {int(p["multiplier"]) for p in candidate if fastest is not None and finite(p.get(LATENCY)) and p[LATENCY] < fastest}


def by_multiplier(curve: Sequence[Mapping]) -> dict[int, Mapping]:
    return {int(p["multiplier"]): p for p in curve}


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation and range of one number over seeds."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        values = [float(v) for v in values]
        if not values:
            raise ValueError("no values")
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, min(values), max(values), len(values))

    def __str__(self) -> str:
        return f"{self.mean:+.2f} ± {self.std:.2f} [{self.low:+.2f}, {self.high:+.2f}]"

    def plain(self, digits: int = 2) -> str:
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def metric_spread(curves: Mapping[int, Sequence[Mapping]], metric: str) -> dict[int, Spread]:
    """Per multiplier, the spread of `metric` over the seeds' curves (`curves[seed]`)."""
    per_m: dict[int, list[float]] = {}
    for curve in curves.values():
        for m, p in by_multiplier(curve).items():
            if finite(p.get(metric)):
                per_m.setdefault(m, []).append(p[metric])
    return {m: Spread.of(v) for m, v in sorted(per_m.items())}


def mean_curve(curves: Mapping[int, Sequence[Mapping]], metrics: Sequence[str] = ("chrf", "bleu", LATENCY, "length_ratio")) -> list[dict]:
    """One curve of per-multiplier means over the seeds' curves (for plotting)."""
    spreads = {k: metric_spread(curves, k) for k in metrics}
    ms = sorted(set().union(*(s.keys() for s in spreads.values())))
    return [{"multiplier": m, **{k: spreads[k][m].mean if m in spreads[k] else None for k in metrics}} for m in ms]


def gain_spread(
    candidates: Mapping[int, Sequence[Mapping]],
    baselines: Mapping[int, Sequence[Mapping]] | Sequence[Mapping],
    quality: str = QUALITY,
    strict: bool = False,
) -> dict[int, Spread]:
    """Per multiplier, the spread over seeds of the matched-latency gain; `baselines` is one curve or one per seed."""
    per_m: dict[int, list[float]] = {}
    for seed, curve in candidates.items():
        base = baselines[seed] if isinstance(baselines, Mapping) else baselines
        for m, g in matched_gains(curve, base, quality, strict).items():
            per_m.setdefault(m, []).append(g)
    return {m: Spread.of(v) for m, v in sorted(per_m.items())}


def paired_deltas(
    candidates: Mapping[int, Sequence[Mapping]], baselines: Mapping[int, Sequence[Mapping]] | Sequence[Mapping], metric: str
) -> dict[int, Spread]:
    """Per multiplier, the spread over seeds of candidate − baseline in `metric` at the same multiplier."""
    per_m: dict[int, list[float]] = {}
    for seed, curve in candidates.items():
        base = by_multiplier(baselines[seed] if isinstance(baselines, Mapping) else baselines)
        for m, p in by_multiplier(curve).items():
            if m in base and finite(p.get(metric)) and finite(base[m].get(metric)):
                per_m.setdefault(m, []).append(p[metric] - base[m][metric])
    return {m: Spread.of(v) for m, v in sorted(per_m.items())}


@dataclass(frozen=True)
class Claim:
    """One claim of the study, whether it held, and the numbers behind the verdict."""

    name: str
    held: bool
    detail: str


def claim_beats_start(hpo: Mapping[int, Sequence[Mapping]], sft: Sequence[Mapping], lowest_margin: float = 5.0, label: str = "") -> Claim:
    """(a) HPO's chrF at matched latency beats its SFT start at every multiplier, by `lowest_margin` at the lowest."""
    name = f"(a) HPO{label} beats its SFT start at matched latency"
    if not gain_spread(hpo, sft):
        return Claim(name, False, "HPO wrote nothing at any multiplier")

    def verdict(strict: bool) -> tuple[bool, str]:
        gains = gain_spread(hpo, sft, strict=strict)
        lowest = min(gains)
        failing = [m for m, g in gains.items() if g.mean <= 0]
        return (
            not failing and gains[lowest].mean >= lowest_margin,
            f"gain at m = {lowest} is {gains[lowest].mean:+.2f}" + (f"; not above 0 at m = {failing}" if failing else ""),
        )

    held, detail = verdict(False)
    strict_held, strict_detail = verdict(True)
    return Claim(
        name,
        held,
        f"mean matched-latency gain > 0 at every multiplier and ≥ {lowest_margin:g} at the lowest: "
        f"{detail} (strict rule: {'holds' if strict_held else 'does not hold'}, {strict_detail})",
    )


def claim_not_below(hpo: Mapping[int, Sequence[Mapping]], other: Mapping[int, Sequence[Mapping]], name: str) -> Claim:
    """(b) HPO ≥ another policy at matched latency: the mean gain over seeds is ≥ 0 at every multiplier."""

    def failing(strict: bool) -> dict[int, float]:
        return {m: g.mean for m, g in gain_spread(hpo, other, strict=strict).items() if g.mean < 0}

    def listed(bad: dict[int, float]) -> str:
        return "below at " + ", ".join(f"m = {m} ({g:+.2f})" for m, g in bad.items()) if bad else "≥ 0 everywhere"

    bad, strict_bad = failing(False), failing(True)
    detail = f"mean matched-latency gain ≥ 0 at every multiplier: {listed(bad)} (strict rule: {listed(strict_bad)})"
    return Claim(f"(b) HPO ≥ {name} at matched latency", not bad, detail)


def claim_robust(
    hpo: Mapping[int, Sequence[Mapping]],
    sft: Sequence[Mapping],
    max_latency_ratio: float = 1.25,
    min_length_ratio: float = 0.9,
    label: str = "",
) -> Claim:
    """(c) From a corrupted SFT start: chrF up at every multiplier, StreamLAAL not blown up, length ratio kept.

    "No latency collapse": the mean StreamLAAL stays within `max_latency_ratio` × the SFT start's at
    the same multiplier; "no shrinking": the mean length ratio stays ≥ `min_length_ratio`.
    """
    start = by_multiplier(sft)
    chrf = metric_spread(hpo, QUALITY)
    lat = metric_spread(hpo, LATENCY)
    length = metric_spread(hpo, "length_ratio")
    problems, notes = [], []
    for m in chrf:
        if chrf[m].mean <= start[m][QUALITY]:
            problems.append(f"m = {m}: chrF {chrf[m].mean:.2f} ≤ SFT {start[m][QUALITY]:.2f}")
        if m not in lat or not finite(start[m].get(LATENCY)):
            problems.append(f"m = {m}: no StreamLAAL to compare (a policy wrote nothing)")
        elif start[m].get("length_ratio", 1.0) < 0.5:
            notes.append(
                f"m = {m}: the start wrote {start[m]['length_ratio']:.2f} of the reference, its StreamLAAL "
                f"({start[m][LATENCY]:.2f} s) is no latency reference (HPO: {lat[m].mean:.2f} s)"
            )
        elif lat[m].mean > max_latency_ratio * start[m][LATENCY]:
            problems.append(f"m = {m}: StreamLAAL {lat[m].mean:.2f} s > {max_latency_ratio:g} × SFT {start[m][LATENCY]:.2f} s")
        if length[m].mean < min_length_ratio:
            problems.append(f"m = {m}: length ratio {length[m].mean:.3f} < {min_length_ratio:g}")
    detail = (
        f"chrF above the corrupted SFT start at every multiplier, StreamLAAL ≤ {max_latency_ratio:g} × the start's, "
        f"length ratio ≥ {min_length_ratio:g}"
        + ("; failed: " + "; ".join(problems) if problems else "")
        + ("; latency not checked at " + "; ".join(notes) if notes else "")
    )
    return Claim(f"(c) HPO{label} from corrupted SFT data improves quality without collapse", not problems, detail)


def claim_targets(
    hpo: Mapping[int, Sequence[Mapping]],
    sft: Sequence[Mapping],
    margin: float = 3.0,
    noise_factor: float = 2.0,
    length_band: tuple[float, float] = (0.9, 1.1),
    label: str = "",
) -> Claim:
    """(d) The evidence targets: at every multiplier the mean matched-latency gain over SFT is ≥ `margin`
    and > `noise_factor` × its std over seeds, and HPO's mean length ratio lies within `length_band`."""
    gains, length = gain_spread(hpo, sft), metric_spread(hpo, "length_ratio")
    problems = []
    for m, g in gains.items():
        if g.mean < margin:
            problems.append(f"m = {m}: gain {g.mean:+.2f} < {margin:g}")
        if g.mean <= noise_factor * g.std:
            problems.append(f"m = {m}: gain {g.mean:+.2f} ≤ {noise_factor:g} × std {g.std:.2f}")
    for m, r in length.items():
        if not length_band[0] <= r.mean <= length_band[1]:
            problems.append(f"m = {m}: length ratio {r.mean:.3f} outside [{length_band[0]:g}, {length_band[1]:g}]")
    if not gains:
        problems.append("HPO wrote nothing at any multiplier")
    detail = (
        f"mean matched-latency gain ≥ {margin:g} chrF and > {noise_factor:g} × its seed std at every multiplier, "
        f"length ratio within [{length_band[0]:g}, {length_band[1]:g}]" + ("; failed: " + "; ".join(problems) if problems else "")
    )
    return Claim(f"(d) HPO{label} ≥ SFT + {margin:g} chrF above seed noise, length kept", not problems, detail)


def claim_async_matches(
    asynchronous: Mapping[int, Sequence[Mapping]], synchronous: Mapping[int, Sequence[Mapping]], noise_factor: float = 2.0
) -> Claim:
    """(e) The learning check: one-step-off HPO is not below synchronous HPO at matched latency by more than
    `noise_factor` × the synchronous arm's chrF std over seeds, at every multiplier (seeds paired)."""
    gains, noise = gain_spread(asynchronous, synchronous), metric_spread(synchronous, QUALITY)
    cells, problems = [], []
    for m, g in gains.items():
        bound = noise_factor * noise[m].std if m in noise else 0.0
        cells.append(f"m = {m}: {g.mean:+.2f} (bound −{bound:.2f})")
        if g.mean < -bound:
            problems.append(f"m = {m}")
    detail = (
        f"mean matched-latency chrF of max_staleness=1 minus synchronous (same seed) ≥ −{noise_factor:g} × the "
        "synchronous seed std at every multiplier: " + ", ".join(cells) + (f"; below at {', '.join(problems)}" if problems else "")
    )
    return Claim("(e) asynchronous HPO (max_staleness 1) learns as well as synchronous HPO", bool(gains) and not problems, detail)


def finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
