"""Quality–latency curves: one line per run through its `scores.json` points (one per chunk multiplier),
drawn with matplotlib's Agg canvas (no display, no global pyplot state)."""

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from hpo_ray.errors import InputError

if TYPE_CHECKING:
    from matplotlib.lines import Line2D

METRICS = ("chrf", "bleu", "quality")
LATENCIES = ("stream_laal", "hpo_latency")
AXIS_LABELS = {"chrf": "chrF", "bleu": "BLEU", "stream_laal": "StreamLAAL (s)", "hpo_latency": "HPO latency (s)"}


class PlotError(InputError):
    """Plot input is unusable; the message names the run folder or scores file."""


def load_runs(run_dirs: list[Path], labels: list[str] | None = None) -> dict[str, list[dict]]:
    """Every `scores.json` under each run folder (recursively), keyed by label (default: the folder name)."""
    if labels is not None and len(labels) != len(run_dirs):
        raise PlotError(f"{len(labels)} labels for {len(run_dirs)} runs")
    runs: dict[str, list[dict]] = {}
    for i, folder in enumerate(run_dirs):
        folder = Path(folder)
        if not folder.is_dir():
            raise PlotError(f"run folder not found: {folder}")
        files = sorted(folder.rglob("scores.json"))
        if not files:
            raise PlotError(f"{folder}: no scores.json found (run `hpo-ray eval --output {folder}/m1` first)")
        label = labels[i] if labels is not None else folder.resolve().name
        if label in runs:
            raise PlotError(f"two runs are labelled {label!r}: pass --labels")
        points = []
        for path in files:
            try:
                point = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise PlotError(f"{path}: not valid JSON: {exc}") from None
            if not isinstance(point, dict):
                raise PlotError(f"{path}: expected a JSON object")
            points.append({**point, "_source": str(path)})
        runs[label] = points
    return runs


def _value(point: dict, key: str, run: str) -> float | None:
    where = point.get("_source", f"run {run!r}")
    if key not in point:
        raise PlotError(f"{where}: no {key!r} in the scores")
    value = point[key]
    if value is None:
        return None  # written as null when undefined (e.g. no sentence was aligned)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlotError(f"{where}: {key!r} must be a number, got {value!r}")
    return float(value) if math.isfinite(value) else None


def plot_curves(runs: dict[str, list[dict]], metric: str, latency: str, out_path: str | Path, title: str | None = None) -> list["Line2D"]:
    """Draw `metric` against `latency` for every run (points sorted by latency) and save a PNG.

    Points whose metric or latency is undefined are left out. Returns one line per run, in order.
    """
    if metric not in METRICS:
        raise PlotError(f"metric must be one of {METRICS}, got {metric!r}")
    if latency not in LATENCIES:
        raise PlotError(f"latency must be one of {LATENCIES}, got {latency!r}")
    if not runs:
        raise PlotError("no runs to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: `hpo-ray` imports every command's module
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lines, quality_names = [], set()
    for label, points in runs.items():
        xy = []
        for point in points:
            x, y = _value(point, latency, label), _value(point, metric, label)
            if x is not None and y is not None:
                xy.append((x, y, point.get("multiplier")))
            if metric == "quality":
                quality_names.add(point.get("quality_metric", "quality"))
        xy.sort(key=lambda p: p[0])
        (line,) = ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=label)
        for x, y, m in xy:
            if m is not None:
                ax.annotate(f"m{m}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        lines.append(line)
    y_label = AXIS_LABELS.get(metric) or " / ".join(sorted(str(n) for n in quality_names))
    ax.set_xlabel(AXIS_LABELS[latency])
    ax.set_ylabel(y_label)
    ax.set_title(title or f"{y_label} vs {AXIS_LABELS[latency]}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, format="png")
    return lines
