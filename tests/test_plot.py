"""`hpo-ray plot`: one quality–latency curve per run, sorted by latency, written as a real PNG."""

import argparse
import json

import pytest
from matplotlib.image import imread

from hpo_ray.cli import plot_cmd
from hpo_ray.plot import PlotError, load_runs, plot_curves


def point(m: int, chrf: float, laal: float | None) -> dict:
    return {
        "multiplier": m,
        "chrf": chrf,
        "bleu": chrf / 2,
        "quality_metric": "chrf",
        "quality": chrf,
        "stream_laal": laal,
        "hpo_latency": 2 * m,
        "length_ratio": 1.0,
    }


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    plot_cmd.add_arguments(parser)
    return plot_cmd.run(parser.parse_args(argv))


def test_one_curve_per_run_with_points_sorted_by_latency(tmp_path):
    runs = {
        "SFT": [point(3, 40, 2.5), point(1, 30, 1.2), point(2, 35, 1.9)],
        "HPO": [point(2, 45, 2.0), point(1, 41, 1.4), point(4, 50, None)],
    }
    out = tmp_path / "curves.png"
    lines = plot_curves(runs, "chrf", "stream_laal", out)
    assert [line.get_label() for line in lines] == ["SFT", "HPO"]
    assert list(lines[0].get_xdata()) == [1.2, 1.9, 2.5] and list(lines[0].get_ydata()) == [30, 35, 40]
    assert list(lines[1].get_xdata()) == [1.4, 2.0]  # the point without a StreamLAAL is left out
    assert len(lines[0].axes.get_lines()) == 2
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_plot_cli_reads_one_run_per_folder(tmp_path):
    for run, base in (("sft", 30), ("hpo", 40)):
        for m in (1, 2, 3):
            folder = tmp_path / run / f"m{m}"
            folder.mkdir(parents=True)
            (folder / "scores.json").write_text(json.dumps(point(m, base + m, 0.6 * m)))
    out = tmp_path / "plot.png"
    assert (
        cli(["--runs", str(tmp_path / "sft"), str(tmp_path / "hpo"), "--output", str(out), "--metric", "bleu", "--latency", "hpo_latency"])
        == 0
    )
    assert imread(out).ndim == 3
    runs = load_runs([tmp_path / "sft", tmp_path / "hpo"], ["SFT", "HPO"])
    assert {k: len(v) for k, v in runs.items()} == {"SFT": 3, "HPO": 3}
    lines = plot_curves(runs, "bleu", "hpo_latency", tmp_path / "again.png")
    assert [list(line.get_xdata()) for line in lines] == [[2, 4, 6], [2, 4, 6]]


def test_missing_metric_names_the_scores_file(tmp_path, capsys):
    folder = tmp_path / "run" / "m1"
    folder.mkdir(parents=True)
    (folder / "scores.json").write_text(json.dumps({"multiplier": 1, "chrf": 30.0}))
    with pytest.raises(PlotError, match=r"m1/scores.json: no 'stream_laal'"):
        plot_curves(load_runs([tmp_path / "run"]), "chrf", "stream_laal", tmp_path / "x.png")
    assert cli(["--runs", str(tmp_path / "empty"), "--output", str(tmp_path / "y.png")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
