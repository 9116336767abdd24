"""`hpo-ray plot --runs DIR [DIR ...] --output plot.png [--metric chrf|bleu|quality] [--latency stream_laal|hpo_latency] [--labels ...]`.

Each DIR holds `scores.json` files from `hpo-ray eval` (e.g. DIR/m1, DIR/m2, ...); one curve per DIR.
"""

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hpo_ray.plot import LATENCIES, METRICS

    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders, each with scores.json files below it")
    parser.add_argument("--output", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--metric", choices=METRICS, default="chrf", help="quality axis (quality = the configured reward.quality)")
    parser.add_argument("--latency", choices=LATENCIES, default="stream_laal", help="latency axis")
    parser.add_argument("--labels", nargs="+", default=None, help="curve labels, one per run (default: folder names)")
    parser.add_argument("--title", default=None, help="figure title")


def run(args: argparse.Namespace) -> int:
    from hpo_ray.plot import PlotError, load_runs, plot_curves

    try:
        runs = load_runs(args.runs, args.labels)
        plot_curves(runs, args.metric, args.latency, args.output, args.title)
    except PlotError as exc:
        print(f"hpo-ray plot: {exc}", file=sys.stderr)
        return 2
    points = sum(len(p) for p in runs.values())
    print(f"plotted {len(runs)} runs ({points} points), {args.metric} vs {args.latency} -> {args.output}")
    return 0
