"""`hpo-ray demo` and `hpo-ray study` end to end at toy size: every stage runs for real (synthesis,
tiny model, SFT, HPO on a local Ray, evaluation), in a subprocess each (they start and stop Ray)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TOY = {
    "data": {"synth": {"talks": 12, "min_talk_seconds": 20}},
    "sft": {"epochs": 1},
    "rollout": {"sampling": {"max_new_tokens": 6}, "validation_sampling": {"max_new_tokens": 6}},
    "algorithm": {"steps": 1, "talks_per_step": 2, "group_size": 2},
    "validation": {"every": 1, "talks": 1},
    "checkpoint": {"every": 1},
    "cluster": {"include_dashboard": False, "cpus_per_learner": 0.5, "cpus_per_rollout_worker": 0.5, "cpus_per_reward_actor": 0.25},
    "logging": {"progress": False, "tensorboard": False},
}


def toy_config(tmp_path: Path, base: str, root: Path) -> Path:
    tree = {"base": str(REPO / "configs" / base), "run": {"dir": str(root)}, **TOY}
    tree["data"] = {
        **TOY["data"],
        "train_manifest": str(root / "data/train/manifest.parquet"),
        "dev_manifest": str(root / "data/dev/manifest.parquet"),
        "test_manifest": str(root / "data/test/manifest.parquet"),
        "sft_dir": str(root / "data/sft"),
    }
    tree["model"] = {"path": str(root / "sft")}
    path = tmp_path / f"{base.removesuffix('.yaml')}-toy.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def hpo_ray(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "hpo_ray.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.ray
@pytest.mark.slow
def test_demo_runs_every_stage_then_skips_them_on_rerun(tmp_path):
    root = tmp_path / "demo"
    config = toy_config(tmp_path, "demo.yaml", root)
    out = hpo_ray("demo", "--config", str(config), "--multipliers", "1,2", cwd=tmp_path)
    assert "| SFT | 1 |" in out and "| HPO | 2 |" in out
    assert "scored by OmniSTEval longform" in out and "| 2 | instances.log |" in out  # features-only demo: ideal latency
    for path in (
        "data/meta.json",
        "sft/config.json",
        "hpo/config.json",
        "hpo/model.safetensors",
        "eval/hpo/m2/instances.log",
        "chrf_vs_streamlaal.png",
        "report.md",
    ):
        assert (root / path).is_file(), path
    rerun = hpo_ray("demo", "--config", str(config), "--multipliers", "1,2", cwd=tmp_path)
    assert rerun.count("already done, skipped") == 8  # synth, model, SFT, HPO, two evaluations, two OmniSTEval runs


@pytest.mark.ray
@pytest.mark.slow
def test_study_writes_the_report_with_its_command_seeds_and_claims(tmp_path):
    root = tmp_path / "study"
    config = toy_config(tmp_path, "study.yaml", root)
    report = tmp_path / "results.md"
    hpo_ray(
        "study",
        "--config",
        str(config),
        "--seeds",
        "0",
        "--multipliers",
        "1,2",
        "--heldout-talks",
        "12",
        "--per-multiplier-seeds",
        "0",
        "--out",
        str(report),
        cwd=tmp_path,
    )
    text = report.read_text()
    assert f"hpo-ray study --config {config} --seeds 0 --omit-rate 0.2" in text and "--per-multiplier-seeds 0" in text
    assert text.count("- **(") == 5  # claims a, b, c, then a and c with one model per m
    assert (tmp_path / "results_chrf_vs_streamlaal.png").is_file()
    results = json.loads((root / "results.json").read_text())
    assert set(results["curves"]) == {"sft", "sft-omit", "hpo", "no-hpo", "hpo-omit", "hpo-per-m", "hpo-omit-per-m"}
    assert (root / "seed0" / "hpo-m2_run" / "config.yaml").read_text().count("multiplier: 2") == 1
    assert [p["multiplier"] for p in results["curves"]["hpo"]["0"]] == [1, 2]
    meta = json.loads((root / "data-omit" / "meta.json").read_text())
    assert meta["sft"]["train"]["omitted"] > 0 and json.loads((root / "data" / "meta.json").read_text())["sft"]["train"]["omitted"] == 0
    assert (root / "seed0" / "no-hpo_run" / "config.yaml").read_text().count("hinge: none") == 1
