"""`hpo-ray demo` (on spoken talks, the default, and on feature vectors) and `hpo-ray study` end to end at toy size:
every stage runs for real (synthesis, tiny model, SFT, HPO on a local Ray, evaluation), in a subprocess
each (they start and stop Ray)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hpo_ray.synth.espeak import missing_reason

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
    config = toy_config(tmp_path, "demo-vectors.yaml", root)
    out = hpo_ray("demo", "--vectors", "--config", str(config), "--multipliers", "1,2", cwd=tmp_path)
    assert "| SFT | 1 |" in out and "| HPO | 2 |" in out
    assert "scored by OmniSTEval longform" in out and "| 2 | instances.log |" in out  # features-only demo: ideal latency
    assert "**Input: feature vectors, not audio**" in out and "| HPO training |" in out
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
    rerun = hpo_ray("demo", "--vectors", "--config", str(config), "--multipliers", "1,2", cwd=tmp_path)
    assert rerun.count("already done, skipped") == 8  # synth, model, SFT, HPO, two evaluations, two OmniSTEval runs


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
def test_speech_demo_runs_on_audio_end_to_end_then_skips_every_stage_on_rerun(tmp_path):
    from hpo_ray.data.audio import AudioManifest
    from hpo_ray.speech.model import SpeechLLM

    root = tmp_path / "demo-speech"
    tree = {"base": str(REPO / "configs" / "demo.yaml"), "run": {"dir": str(root)}, **TOY}
    tree["data"] = {
        "synth": {"talks": 6, "min_talk_seconds": 15, "speech": {"workers": 1}},
        **{f"{s}_manifest": str(root / "features" / s / "manifest.parquet") for s in ("train", "dev", "test")},
    }
    tree["model"] = {"path": str(root / "sft")}
    tree["sft"] = {"epochs": 1, "hear": {"epochs": 1}}
    tree["algorithm"] = {**TOY["algorithm"], "steps": 2}
    config = tmp_path / "demo-speech-toy.yaml"
    config.write_text(yaml.safe_dump(tree))
    hpo_ray("demo", "--config", str(config), "--multipliers", "1,2", cwd=tmp_path)  # spoken talks: the default
    report = (root / "report.md").read_text()
    assert "**Input: audio.** 6 synthetic talks spoken by eSpeak NG" in report
    assert "streams the test talks' wav files through simulstream" in report
    for m in (1, 2):
        assert f"| SFT | {m} |" in report and f"| HPO | {m} |" in report
    number = r"\d+\.\d+"
    # OmniSTEval on the simulstream log: BLEU, chrF, ideal and computation-aware StreamLAAL, LongYAAL, RTF (the toy
    # policy may write too little for LongYAAL, which OmniSTEval then gives as NaN: the report says n/a).
    row = rf"\| 1 \| simulstream log \| {number} \| {number} \| {number} \| {number} \| ({number}|n/a) \| {number} \|"
    assert re.search(row, report), report
    assert "Computation-aware latency and RTF measured on" in report
    assert re.search(rf"\| two-stage speech SFT \(hear by CTC, encode train/dev/test, translate\) \| {number} \|", report)
    # The test frames SFT and HPO were scored on are the HPO policy's own encoder streaming the test audio.
    talk = next(iter(AudioManifest(root / "data" / "test" / "audio_manifest.parquet")))
    frames = np.load(root / "features" / "test" / "features" / f"{talk.talk_id}.npy")
    np.testing.assert_allclose(SpeechLLM.from_pretrained(root / "hpo").encode(talk.samples()), frames, atol=1e-5)
    rerun = hpo_ray("demo", "--config", str(config), "--multipliers", "1,2", cwd=tmp_path)
    assert rerun.count("already done, skipped") == 7  # synth, model, speech SFT, HPO, two evaluations, simulstream
    assert not re.search(r"^\[demo\] .*: running$", rerun, re.M)
    assert re.search(rf"\| HPO training \| {number} \(earlier run\) \|", (root / "report.md").read_text())  # times kept


def demo_parser():
    """`hpo-ray demo`'s own argument parser."""
    import argparse

    from hpo_ray.cli import demo_cmd

    parser = argparse.ArgumentParser()
    demo_cmd.add_arguments(parser)
    return parser


@pytest.mark.parametrize(
    "flags, config, speech",
    [
        ([], "demo.yaml", True),  # `make demo`: spoken talks
        (["--speech"], "demo.yaml", True),
        (["--vectors"], "demo-vectors.yaml", False),
        (["--config", str(REPO / "configs" / "demo-vectors.yaml")], "demo-vectors.yaml", False),  # the config says
        (["--config", str(REPO / "configs" / "demo-vectors.yaml"), "--speech"], "demo-vectors.yaml", True),
        (["--config", str(REPO / "configs" / "demo.yaml"), "--vectors"], "demo.yaml", False),
    ],
)
def test_demo_runs_on_spoken_talks_unless_told_vectors(flags, config, speech):
    from hpo_ray.cli import demo_cmd

    cfg = demo_cmd.demo_config(demo_parser().parse_args(flags))
    assert cfg.data.synth.speech.enabled is speech
    assert str(cfg.run.dir) == ("runs/demo" if config == "demo.yaml" else "runs/demo-vectors")
    if config == "demo.yaml":
        assert cfg.model.speech.projector == "ctc" and str(cfg.data.train_manifest) == "runs/demo/features/train/manifest.parquet"


def test_report_says_n_a_for_a_latency_omnisteval_gives_as_nan():
    from hpo_ray.cli import demo_cmd

    row = {"multiplier": 1, "source": "simulstream log", "BLEU": 1.5, "chrF": 2.5, "LongLAAL (CU)": 1500.0, "LongLAAL (CA)": 1600.0}
    row |= {"LongYAAL (CU)": float("nan"), "rtf": 0.1, "hardware": {"cpu": "x", "usable_cores": 2, "device": "cpu"}}
    assert "| 1 | simulstream log | 1.50 | 2.50 | 1.500 | 1.600 | n/a | 0.100 |" in demo_cmd.field_table([row])


def test_demo_report_gives_hpo_minus_sft_at_matched_latency_and_flags_a_falling_frontier():
    from hpo_ray.cli import demo_cmd

    def point(m, chrf, bleu, laal, ratio=1.0):
        return {"multiplier": m, "chrf": chrf, "bleu": bleu, "stream_laal": laal, "length_ratio": ratio}

    sft = [point(1, 50.0, 20.0, 2.0), point(2, 55.0, 25.0, 2.5), point(3, 54.0, 24.0, 3.0)]
    hpo = [point(1, 53.0, 22.0, 1.9, 0.95), point(2, 56.0, 26.0, 2.4), point(3, 57.0, 27.0, 3.1)]
    text = "\n".join(demo_cmd.gain_lines({"SFT": sft, "HPO": hpo}))
    assert "| 1 | +3.00 † | +2.00 † | 0.950 |" in text  # faster than every SFT point: SFT at the same m
    assert "| 2 | +6.00 | +6.00 | 1.000 |" in text  # SFT's best within 2.4 s is its m = 1 point
    assert "| 3 | +2.00 | +2.00 | 1.000 |" in text
    assert "- SFT: StreamLAAL rises strictly with m; chrF falls as m grows (m = 3: -1.00)." in text
    assert "- HPO: StreamLAAL rises strictly with m; chrF never falls as m grows." in text


@pytest.mark.parametrize("scorer, column", [("comet", "| comet (sentence mean) |"), ("chrf", None)])
def test_demo_report_gives_a_model_based_scorer_its_own_column(tmp_path, scorer, column):
    from hpo_ray.cli import demo_cmd
    from hpo_ray.config import load_config

    def point(m, quality):
        row = {"multiplier": m, "chrf": 50.0 + m, "bleu": 20.0, "stream_laal": 1.0 + m, "hpo_latency": 1.0, "length_ratio": 1.0}
        return row | {"quality_metric": scorer, "quality": quality}

    results = {"SFT": [point(1, 0.61), point(2, 0.62)], "HPO": [point(1, 0.7123), point(2, 0.72)]}
    demo_cmd.write_report(load_config(REPO / "configs" / "demo-vectors.yaml"), results, tmp_path, 60.0)
    text = (tmp_path / "report.md").read_text()
    if column:
        assert column in text and "| HPO | 1 | 51.00 | 20.00 | 0.7123 | 2.000 |" in text
    else:
        assert "sentence mean" not in text and "| HPO | 1 | 51.00 | 20.00 | 2.000 |" in text


def test_demo_refuses_both_speech_and_vectors(capsys):
    with pytest.raises(SystemExit):
        demo_parser().parse_args(["--speech", "--vectors"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_speech_demo_refuses_manifests_outside_its_features_folder(tmp_path):
    root = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "hpo_ray.cli.main",
        "demo",
        "--speech",
        "--config",
        str(REPO / "configs" / "demo-vectors.yaml"),
        f"run.dir={root}",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "config error at data.train_manifest" in done.stderr, done.stderr[-2000:]
    assert str(root / "features" / "train" / "manifest.parquet") in done.stderr and not root.exists()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
def test_study_on_spoken_talks_writes_the_report_with_its_command_seeds_and_claims(tmp_path):
    from hpo_ray.data.audio import AudioManifest
    from hpo_ray.speech.model import SpeechLLM

    root = tmp_path / "study"
    tree = {"base": str(REPO / "configs" / "study.yaml"), "run": {"dir": str(root)}, **TOY}
    tree["data"] = {
        "synth": {"talks": 6, "min_talk_seconds": 15, "speech": {"workers": 1}},
        **{f"{s}_manifest": str(root / "features" / s / "manifest.parquet") for s in ("train", "dev", "test")},
    }
    tree["model"] = {"path": str(root / "sft")}
    tree["sft"] = {"epochs": 1, "hear": {"epochs": 1, "talk_epochs": 1}}
    config = tmp_path / "study-toy.yaml"
    config.write_text(yaml.safe_dump(tree))
    report = tmp_path / "results.md"
    args = ["--seeds", "0", "--multipliers", "1,2", "--heldout-seed", "9", "--heldout-talks", "10", "--per-multiplier-seeds", "0"]
    hpo_ray("study", "--config", str(config), *args, "--out", str(report), cwd=tmp_path)
    text = report.read_text()
    assert f"hpo-ray study --config {config} --seeds 0 --omit-rate 0.2" in text and "--per-multiplier-seeds 0" in text
    assert "- Input: audio. Every talk is spoken by eSpeak NG" in text and "seed 9)" in text
    assert text.count("- **(") == 6  # claims a, b, c, d, then a and c with one model per m
    assert (tmp_path / "results_chrf_vs_streamlaal.png").is_file()
    results = json.loads((root / "results.json").read_text())
    assert set(results["curves"]) == {"sft", "sft-omit", "hpo", "no-hpo", "hpo-omit", "hpo-per-m", "hpo-omit-per-m"}
    assert (root / "seed0" / "hpo-m2_run" / "config.yaml").read_text().count("multiplier: 2") == 1
    assert [p["multiplier"] for p in results["curves"]["hpo"]["0"]] == [1, 2]
    meta = json.loads((root / "data-omit" / "meta.json").read_text())
    default = json.loads((root / "data" / "meta.json").read_text())["sft"]["train"]["omitted"]  # the demo data's own rate
    assert meta["sft"]["train"]["omitted"] > 2 * default
    assert (root / "seed0" / "no-hpo_run" / "config.yaml").read_text().count("hinge: none") == 1
    # One encoder: the corrupted start and every HPO policy hear exactly the held-out frames they were scored on.
    assert results["heldout"] == str(root / "features" / "heldout" / "manifest.parquet")
    talk = next(iter(AudioManifest(root / "heldout" / "test" / "audio_manifest.parquet")))
    frames = np.load(root / "features" / "heldout" / "features" / f"{talk.talk_id}.npy")
    for policy in ("sft-omit", "seed0/hpo-omit", "seed0/no-hpo"):
        np.testing.assert_allclose(SpeechLLM.from_pretrained(root / policy).encode(talk.samples()), frames, atol=1e-5)
    omit_sft = (root / "features" / "sft-omit" / "train.jsonl").read_text()
    assert "../train/manifest.parquet" in omit_sft and omit_sft != (root / "features" / "sft" / "train.jsonl").read_text()
