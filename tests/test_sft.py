"""SFT on dialogue-form data: the loss falls, an HF policy is written, bad records are named."""

import json

import pytest

from hpo_ray.cli.main import main
from hpo_ray.sft import SftDataError, load_sft_examples


def test_sft_lowers_the_dev_loss_and_writes_an_hf_policy(small_run, tmp_path, capsys):
    data, policy, overrides = small_run
    code = main(
        [
            "sft",
            "--init",
            str(policy),
            "--out",
            str(tmp_path / "sft"),
            *overrides,
            "sft.epochs=3",
            "sft.lr=0.01",
            "sft.batch_size=2",
            "sft.warmup_steps=2",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train_dialogues"] > 0 and summary["dev_dialogues"] > 0
    assert summary["dev_loss_after"] < summary["dev_loss_before"]
    names = {p.name for p in (tmp_path / "sft").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "sft_summary.json"} <= names


def test_bad_sft_record_is_reported_with_file_line_and_field(small_run, layout, tmp_path):
    data, _, _ = small_run
    good = (data / "sft" / "train.jsonl").read_text().splitlines()[0]
    record = json.loads(good)
    record["manifest"] = str((data / "sft" / record["manifest"]).resolve())
    record["turns"][1] = {"frames": 0, "text": "x"}
    path = tmp_path / "bad.jsonl"
    path.write_text(good.replace(json.loads(good)["manifest"], record["manifest"]) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(SftDataError, match=r"bad.jsonl line 2 field 'turns\[1\]'"):
        load_sft_examples(path, layout)
