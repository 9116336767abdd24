"""Bad input to `hpo-ray`: one line on stderr and exit 2, before Ray starts (traceback only with --debug)."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hpo_ray.cli.main import main, parse
from hpo_ray.model.files import ModelFilesError, check_policy_dir
from tests.conftest import talk_row, write_manifest

WIDTH = 8


@pytest.fixture
def setup(tmp_path, tiny_tokenizer):
    """A config with a valid 2-talk manifest and a small HF-layout policy directory (real safetensors,
    the tiny tokenizer)."""
    frames = {f"features/t{i}.npy": np.zeros((90, WIDTH), np.float32) for i in range(2)}
    manifest = write_manifest(tmp_path / "data", [talk_row(f"t{i}", f"features/t{i}.npy") for i in range(2)], frames)
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "config.json").write_text(json.dumps({"hidden_size": WIDTH, "model_type": "qwen3"}))
    save_file({"embed.weight": torch.zeros(16, WIDTH), "norm.weight": torch.ones(WIDTH)}, policy / "model.safetensors")
    tiny_tokenizer.save_pretrained(policy)
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{path: {policy}}}\ndata: {{train_manifest: {manifest}}}\nalgorithm: {{talks_per_step: 2}}\n")
    return tmp_path, config, policy


def break_input(case: str, root, policy) -> list[str]:
    """Damage one input for `case`; returns the extra command-line words."""
    weights = policy / "model.safetensors"
    if case == "unknown key":
        return ["algorithm.nope=1"]
    if case == "bad manifest row":
        (root / "data" / "features" / "t1.npy").unlink()
        return []
    if case == "broken config.json":
        (policy / "config.json").write_text('{"hidden_size": 8,')
        return []
    if case == "missing weights":
        weights.unlink()
        return []
    if case == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:-7])
        return []
    if case == "garbage weights":
        weights.write_bytes(b"\xff" * 64)
        return []
    if case == "too many talks per step":
        return ["algorithm.talks_per_step=5"]
    if case == "used run dir":
        (root / "run").mkdir()
        (root / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
        return []
    if case == "resume without a checkpoint":
        return ["--resume"]
    if case == "overwrite a foreign dir":
        (root / "run").mkdir()
        (root / "run" / "notes.txt").write_text("mine")
        return ["--overwrite"]
    raise AssertionError(case)


CASES = {
    "unknown key": "algorithm.nope",
    "bad manifest row": "features_path",
    "broken config.json": "config.json: not valid JSON",
    "missing weights": "no model.safetensors",
    "truncated weights": "truncated",
    "garbage weights": "does not fit",
    "too many talks per step": "5 is more than the 2 talks",
    "used run dir": "is not empty",
    "resume without a checkpoint": "no checkpoint",
    "overwrite a foreign dir": "not a run's outputs",
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_no_traceback(setup, capsys, case):
    root, config, policy = setup
    extra = break_input(case, root, policy)
    # options placed among the overrides on purpose: argparse must not reject them
    code = main(
        [
            "train",
            "--config",
            str(config),
            "logging.progress=false",
            "--run-dir",
            str(root / "run"),
            "--steps",
            "2",
            *extra,
            "cluster.num_cpus=1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("hpo-ray train: ") and "Traceback" not in err, err
    assert CASES[case] in err, err


def test_debug_shows_the_error_with_its_traceback(setup):
    root, config, policy = setup
    (policy / "config.json").write_text("{")
    with pytest.raises(ModelFilesError, match="config.json"):
        main(["train", "--config", str(config), "--run-dir", str(root / "run"), "--debug"])


def test_options_may_come_anywhere_among_the_overrides():
    args = parse(["train", "--config", "c.yaml", "a.b=1", "--steps", "2", "c.d=x", "--resume", "e=3"])
    assert args.overrides == ["a.b=1", "c.d=x", "e=3"] and args.steps == 2 and args.start == "resume"
    assert parse(["train", "--config", "c.yaml", "--overwrite"]).start == "overwrite"
    assert parse(["train", "--config", "c.yaml"]).start == "new"


def test_policy_check_reads_sharded_safetensors_and_names_a_missing_shard(setup):
    _, _, policy = setup
    shutil.move(policy / "model.safetensors", policy / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"embed.weight": "model-00001-of-00002.safetensors", "norm.weight": "model-00002-of-00002.safetensors"}}
    (policy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFilesError, match="model-00002-of-00002.safetensors: missing"):
        check_policy_dir(policy)
    index["weight_map"]["norm.weight"] = "model-00001-of-00002.safetensors"
    (policy / "model.safetensors.index.json").write_text(json.dumps(index))
    assert check_policy_dir(policy)["hidden_size"] == WIDTH
