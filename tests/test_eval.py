"""`hpo-ray eval`: a real tiny policy on synthetic talks, its SimulEval/MuST-C files read by OmniSTEval,
and our StreamLAAL checked against OmniSTEval's LongLAAL on outputs both resegmenters split alike.

Definitional differences to OmniSTEval (so only comparable cases are compared exactly):
- resegmentation: ours is exact mWER (edit distance); OmniSTEval's SoftSegmenter aligns words by
  character-set Jaccard similarity with free gaps, so on garbage output the two split differently;
- OmniSTEval's LongLAAL does not clip delays at the sentence start (ours does, as StreamLAAL v2.0);
- units of a talk's final, partial turn carry the talk end (the audio actually read) in the reward and
  in instances.log alike.
"""

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpo_ray.cli import eval_cmd
from hpo_ray.config import load_config
from hpo_ray.data.manifest import Manifest, ManifestError, turn_spans
from hpo_ray.eval import TalkOutput, config_at_multiplier, evaluate, write_outputs
from tests.conftest import talk_row, write_manifest

# validation_sampling must be restated whole: a partial override rebuilds it from SamplingConfig (greedy=False).
FAST = ["rollout.validation_sampling.max_new_tokens=6", "rollout.validation_sampling.greedy=true", "logging.progress=false"]


def cli(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def omnisteval(out: Path, result: Path, char_level: bool, bleu_tokenizer: str = "13a") -> dict[str, float]:
    """Run OmniSTEval's long-form CLI (no COMET, no Moses tokenisation) on an eval folder; its scores by name."""
    cmd = [
        sys.executable,
        "-m",
        "omnisteval.cli",
        "longform",
        "--speech_segmentation",
        str(out / "segments.yaml"),
        "--ref_sentences_file",
        str(out / "references.txt"),
        "--hypothesis_file",
        str(out / "instances.log"),
        "--char_level" if char_level else "--word_level",
        "--bleu_tokenizer",
        bleu_tokenizer,
        "--output_folder",
        str(result),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (result / "scores.tsv").read_text().strip().splitlines()[1:]
    return {name: float(value) for name, value in (row.split("\t") for row in rows)}


@pytest.fixture(scope="module")
def cli_eval(small_run, tmp_path_factory):
    """`hpo-ray eval` at m=1 on the small run's test talks with the tiny (untrained) policy."""
    data, policy, overrides = small_run
    out = tmp_path_factory.mktemp("eval") / "m1"
    argv = [
        "--checkpoint",
        str(policy),
        "--data",
        str(data / "test" / "manifest.parquet"),
        "--multiplier",
        "1",
        "--output",
        str(out),
        *overrides,
        *FAST,
    ]
    assert cli(eval_cmd, argv) == 0
    return out, Manifest(data / "test" / "manifest.parquet")


def test_eval_files_are_accepted_by_omnisteval(cli_eval, tmp_path):
    out, manifest = cli_eval
    instances = [json.loads(line) for line in (out / "instances.log").read_text().splitlines()]
    n_sentences = sum(len(t.ref_sentences) for t in manifest)
    assert len(instances) == len(manifest)
    assert len((out / "references.txt").read_text().splitlines()) == n_sentences
    assert len((out / "sources.txt").read_text().splitlines()) == n_sentences
    for inst, talk in zip(instances, manifest):
        assert inst["source"] == [f"{talk.talk_id}.wav"]
        assert inst["source_length"] == pytest.approx(talk.seconds * 1000)
        assert len(inst["delays"]) == len(inst["prediction"].split()) == inst["prediction_length"]
        assert inst["delays"] == sorted(inst["delays"]) and inst["elapsed"] == inst["delays"]
        assert all(0 < d <= inst["source_length"] for d in inst["delays"])
    scores = omnisteval(out, tmp_path / "omni", char_level=False)
    assert {"BLEU", "chrF", "LongLAAL (CU)", "LongYAAL (CU)"} <= set(scores)
    assert all(math.isfinite(v) for v in scores.values())
    reseg = [json.loads(line) for line in (tmp_path / "omni" / "instances.resegmented.jsonl").read_text().splitlines()]
    assert len(reseg) == n_sentences
    # LAAL agreement with OmniSTEval is proven on oracle outputs below (untrained output rarely resegments alike).


def test_scores_json_has_the_metrics_and_they_are_finite(cli_eval):
    out, manifest = cli_eval
    scores = json.loads((out / "scores.json").read_text())
    for key in ("chrf", "bleu", "stream_laal", "hpo_latency", "length_ratio", "quality"):
        assert isinstance(scores[key], float) and math.isfinite(scores[key]), key
    assert 0 <= scores["chrf"] <= 100 and 0 <= scores["bleu"] <= 100
    assert scores["multiplier"] == 1 and scores["talks"] == len(manifest) and scores["quality_metric"] == "chrf"
    assert scores["checkpoint"] and scores["bleu_tokenizer"] == {"de": "13a"}
    # rollouts.jsonl is `hpo-ray score` input: re-scoring it reproduces our StreamLAAL.
    from hpo_ray.cli import score_cmd

    rescored = out / "rescored.jsonl"
    assert cli(score_cmd, ["--input", str(out / "rollouts.jsonl"), "--output", str(rescored), "reward.normalize=false"]) == 0
    again = [json.loads(line)["stream_laal"] for line in rescored.read_text().splitlines()]
    assert sum(again) / len(again) == pytest.approx(scores["stream_laal"])


def test_multiplier_two_runs_half_as_many_turns_with_one_engine(small_run, tmp_path):
    from hpo_ray.rollout.factory import make_engine

    data, policy, overrides = small_run
    cfg = load_config(None, [*overrides, *FAST])
    manifest_path = data / "train" / "manifest.parquet"
    talks = Manifest(manifest_path).talks
    engine = make_engine(cfg, policy)
    one = evaluate(cfg, policy, manifest_path, 1, tmp_path / "m1", engine=engine)
    two = evaluate(cfg, policy, manifest_path, 2, tmp_path / "m2", engine=engine)
    assert one["turns"] == sum(len(turn_spans(t.n_frames, 14)) for t in talks)
    per_talk = {
        m: [len(json.loads(line)["turns"]) for line in (tmp_path / f"m{m}" / "rollouts.jsonl").read_text().splitlines()] for m in (1, 2)
    }
    assert per_talk[2] == [math.ceil(n / 2) for n in per_talk[1]]
    assert two["turn_seconds"] == pytest.approx(2 * one["turn_seconds"]) and two["multiplier"] == 2
    for line, talk in zip((tmp_path / "m2" / "instances.log").read_text().splitlines(), talks):
        inst = json.loads(line)
        allowed = {min(k * 2240.0, talk.seconds * 1000) for k in range(1, 20)}
        assert all(any(abs(d - a) < 1e-3 for a in allowed) for d in inst["delays"])


def test_bad_manifest_is_reported_before_the_model_loads(tiny_policy_dir, tmp_path, capsys):
    policy = tmp_path / "policy"
    shutil.copytree(tiny_policy_dir, policy)
    (policy / "model.safetensors").write_bytes(b"not a safetensors file")  # loading it would fail differently
    width = json.loads((policy / "config.json").read_text())["hidden_size"]
    row = talk_row("t0", "t0.npy", n_sent=3)
    row["segments"] = row["segments"][:2]
    manifest = write_manifest(tmp_path / "data", [row], {"t0.npy": np.zeros((80, width), np.float32)})
    with pytest.raises(ManifestError, match="row 0 field 'segments'"):
        evaluate(load_config(None, FAST), policy, manifest, 1, tmp_path / "out")
    shutil.copy(tiny_policy_dir / "model.safetensors", policy / "model.safetensors")  # the CLI checks weight files first
    assert cli(eval_cmd, ["--checkpoint", str(policy), "--data", str(manifest), "--output", str(tmp_path / "o"), *FAST]) == 2
    assert "field 'segments'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _oracle(talk, data, char_level: bool) -> list[str]:
    """A perfect simultaneous output: unit i of n of a sentence is written once its share of the segment is heard."""
    turn_seconds = data.turn_seconds
    n_turns = len(turn_spans(talk.n_frames, data.turn_frames))
    turns = [[] for _ in range(n_turns)]
    for (start, end), ref in zip(talk.segments, talk.ref_sentences):
        units = list(ref.replace(" ", "")) if char_level else ref.split()
        for i, unit in enumerate(units):
            heard = start + (i + 1) / len(units) * (end - start)
            turns[min(math.ceil(heard / turn_seconds - 1e-9) - 1, n_turns - 1)].append(unit)
    return [("" if char_level else " ").join(t) for t in turns]


def _zh_manifest(folder: Path) -> Path:
    refs = [["我今天买了一本书。", "他们在公园里跑步。", "我用 GPU 训练模型。"], ["天气很好！", "我们明天见。"]]
    rows, frames = [], {}
    for k, sents in enumerate(refs):
        row = talk_row(f"zh{k}", f"zh{k}.npy", n_sent=len(sents), seconds_per_sent=2.3, tgt_lang="zh", ref_sentences=sents)
        rows.append(row)
        frames[f"zh{k}.npy"] = np.zeros((round(len(sents) * 2.3 / 0.08) + 3, 8), np.float32)
    return write_manifest(folder, rows, frames)


@pytest.mark.parametrize("lang,multiplier", [("de", 1), ("de", 3), ("zh", 1), ("zh", 2)])
def test_oracle_outputs_score_like_omnisteval(small_run, tmp_path, lang, multiplier):
    data, _, overrides = small_run
    cfg = config_at_multiplier(load_config(None, overrides), multiplier)
    path = data / "train" / "manifest.parquet" if lang == "de" else _zh_manifest(tmp_path / "zh")
    char = lang == "zh"
    talks = Manifest(path).talks
    outputs = [TalkOutput(t, 0, _oracle(t, cfg.data, char)) for t in talks]
    ours = write_outputs(tmp_path / "out", outputs, cfg)
    theirs = omnisteval(tmp_path / "out", tmp_path / "omni", char_level=char, bleu_tokenizer="zh" if char else "13a")
    assert ours["chrf"] == pytest.approx(100) and ours["bleu"] == pytest.approx(100)
    assert theirs["chrF"] == pytest.approx(100) and theirs["BLEU"] == pytest.approx(100)
    assert ours["length_ratio"] == pytest.approx(1) and ours["empty_sentences"] == 0
    if char:
        instances = [json.loads(line) for line in (tmp_path / "out" / "instances.log").read_text().splitlines()]
        assert all(" " not in i["prediction"] and len(i["delays"]) == len(i["prediction"]) for i in instances)
    # Same segmentation on both sides: LongLAAL (ms) is our StreamLAAL, final partial turns included
    # (their units carry the talk end in the reward and in instances.log alike).
    assert abs(ours["stream_laal"] - theirs["LongLAAL (CU)"] / 1000) < 1e-6
    assert ours["stream_laal"] > 0


def test_several_samples_need_sampling_not_greedy(small_run, tmp_path):
    from hpo_ray.config import ConfigError

    data, policy, overrides = small_run
    with pytest.raises(ConfigError, match="rollout.validation_sampling.greedy"):
        evaluate(load_config(None, [*overrides, *FAST]), policy, data / "test" / "manifest.parquet", 1, tmp_path, samples=2)


def test_ten_minute_talk_is_translated_to_its_end_with_a_bounded_kv_cache(tiny_policy_dir, tmp_path):
    """600 s (268 turns at m=2, ~11k dialogue tokens) through `evaluate` with a 512-token window: nothing
    is cut, the last turns write, and the KV cache measured inside the engine never holds more than the window."""
    config = json.loads((tiny_policy_dir / "config.json").read_text())
    width, frames = config["hidden_size"], 7500
    rng = np.random.default_rng(0)
    row = talk_row("lecture", "lecture.npy", n_sent=100, seconds_per_sent=6.0)
    manifest = write_manifest(tmp_path / "data", [row], {"lecture.npy": rng.standard_normal((frames, width)).astype(np.float32)})
    cfg = load_config(
        None,
        [
            "rollout.max_total_tokens=512",
            "rollout.validation_sampling.greedy=false",
            "rollout.validation_sampling.max_new_tokens=1",
            "logging.progress=false",
        ],
    )
    scores = evaluate(cfg, tiny_policy_dir, manifest, 2, tmp_path / "out")
    (rollout,) = [json.loads(line) for line in (tmp_path / "out" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollout["turns"]) == len(turn_spans(frames, 28)) == scores["turns"]
    assert scores["truncated"] == scores["truncated_talks"] == 0 and scores["context_slides"] > 10
    assert any(text.strip() for text in rollout["turns"][-3:])  # output covers the end of the talk
    (instance,) = [json.loads(line) for line in (tmp_path / "out" / "instances.log").read_text().splitlines()]
    assert instance["delays"][-1] >= instance["source_length"] - 3 * 2240.0
    # the bound: ≤ 512 tokens held; bytes ≤ K+V × layers × kv heads × head dim × 4 B × 2·512 (the growing buffer)
    assert scores["context_max_tokens"] == 512 and scores["peak_kv_tokens"] <= 512
    head_dim = config.get("head_dim") or width // config["num_attention_heads"]
    bound = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * 4 * 2 * 512
    assert 0 < scores["peak_kv_bytes"] <= bound
