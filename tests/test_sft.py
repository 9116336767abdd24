"""SFT on dialogue-form data: the loss falls, an HF policy is written, bad records are named."""

import json

import pytest
import torch

from hpo_ray.cli.main import main
from hpo_ray.sft import SftDataError, assistant_loss, batch_loss, collate, load_sft_examples


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


def test_row_by_row_loss_and_gradient_equal_the_padded_batch(small_run):
    """SFT runs each dialogue of a batch on its own (no padding, no mask); loss and gradient stay the batch's."""
    from hpo_ray.dialogue import DialogueLayout
    from hpo_ray.model.build import load_policy

    data, policy, _ = small_run
    model, tokenizer = load_policy(policy, dtype="float32")
    layout = DialogueLayout(tokenizer)
    batch = load_sft_examples(data / "sft" / "train.jsonl", layout, model.config.hidden_size)[:3]
    assert len({len(e.input_ids) for e in batch}) > 1  # the padded batch really pads
    model.train()
    padded, n = assistant_loss(model, layout, *collate(batch, tokenizer.pad_token_id, torch.device("cpu")))
    padded.backward()
    want = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    value, count = batch_loss(model, layout, batch, torch.device("cpu"), backward=True)
    assert count == n
    assert abs(value - padded.item()) < 1e-5
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[k], atol=1e-6, rtol=1e-4, msg=k)
