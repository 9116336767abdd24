"""Atomic checkpoint directories: crashes never expose half-written checkpoints; resume finds the newest
one whose manifest verifies and names what failed in the newer ones."""

import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from hpo_ray.learner.checkpoint import CheckpointError, CheckpointStore, load_trainer_state
from hpo_ray.learner.rng_state import capture_rng_state, restore_rng_state


def visible(root):
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_save_then_resume_restores_trainer_state_and_every_rng(tmp_path):
    store = CheckpointStore(tmp_path, keep_best=0)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.rand(), torch.rand(1)
    state = {"step": 10, "data_position": {"epoch": 1, "index": 37}, "rng": capture_rng_state()}
    store.save(10, state)
    want = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3).tolist())

    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    info = store.latest()
    loaded = load_trainer_state(info.path)
    assert info.step == 10 and loaded["data_position"] == {"epoch": 1, "index": 37}
    restore_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), np.random.randn(), torch.rand(3).tolist()) == want
    assert json.loads((tmp_path / "step_00000010" / "trainer_state.json").read_text())["step"] == 10
    assert (tmp_path / "latest").read_text().strip() == "step_00000010"


def test_exception_while_writing_keeps_the_previous_checkpoint_and_hides_the_new_one(tmp_path):
    store = CheckpointStore(tmp_path, keep_best=0)
    store.save(10, {"step": 10}, save_fn=lambda d: (d / "policy.bin").write_bytes(b"old"))

    def crash(d):
        (d / "policy.bin").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        store.save(20, {"step": 20}, save_fn=crash)
    assert visible(tmp_path) == ["latest", "step_00000010"]
    assert not any(p.name.startswith(".tmp-step") for p in tmp_path.iterdir())
    assert store.latest().step == 10
    assert (store.latest().path / "policy.bin").read_bytes() == b"old"


def test_a_killed_writer_leaves_nothing_visible_and_resume_picks_the_last_complete(tmp_path):
    store = CheckpointStore(tmp_path, keep_best=0)
    store.save(10, {"step": 10})
    script = textwrap.dedent(f"""
        import os
        from hpo_ray.learner.checkpoint import CheckpointStore
        def die(d):
            (d / "model.safetensors").write_bytes(b"x" * 100000)
            os._exit(9)  # no cleanup, no exception handling: like a SIGKILL
        CheckpointStore({str(tmp_path)!r}, keep_best=0).save(20, {{"step": 20}}, save_fn=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr.decode()
    assert (tmp_path / ".tmp-step_00000020" / "model.safetensors").exists()  # the debris is there...
    assert [i.step for i in CheckpointStore(tmp_path, keep_best=0).checkpoints()] == [10]  # ...but invisible
    assert load_trainer_state(store.latest().path) == {"step": 10}
    store.save(30, {"step": 30})  # the next save cleans the debris
    assert not (tmp_path / ".tmp-step_00000020").exists()
    assert store.latest().step == 30


def test_keep_best_by_criterion_plus_the_newest(tmp_path):
    store = CheckpointStore(tmp_path, keep_best=2, keep_last=1, higher_is_better=True)
    for step, crit in [(10, 0.3), (20, 0.9), (30, 0.1), (40, 0.8), (50, 0.2)]:
        store.save(step, {"step": step}, criterion=crit)
    assert [i.step for i in store.checkpoints()] == [20, 40, 50]
    assert [i.step for i in store.best()] == [20, 40, 50]
    low = CheckpointStore(tmp_path / "low", keep_best=1, keep_last=1, higher_is_better=False)
    for step, crit in [(10, 3.0), (20, 1.0), (30, 2.0)]:
        low.save(step, {"step": step}, criterion=crit)
    assert [i.step for i in low.checkpoints()] == [20, 30]


def test_resaving_a_step_replaces_it_atomically(tmp_path):
    store = CheckpointStore(tmp_path, keep_best=0, keep_last=3)
    store.save(10, {"step": 10, "try": 1})
    store.save(20, {"step": 20})
    store.save(10, {"step": 10, "try": 2})
    assert load_trainer_state(tmp_path / "step_00000010")["try"] == 2
    assert store.latest().step == 20 and (tmp_path / "latest").read_text().strip() == "step_00000020"
    assert visible(tmp_path) == ["latest", "step_00000010", "step_00000020"]


def test_multi_rank_protocol_begin_write_commit(tmp_path):
    store = CheckpointStore(tmp_path, keep_best=0)
    tmp = store.begin(5)
    for rank in range(2):  # every rank writes its shard into the shared temporary directory
        (tmp / f"zero_rank_{rank}.pt").write_bytes(bytes([rank]) * 10)
    assert store.latest() is None
    path = store.commit(5, {"step": 5}, criterion=0.5)
    assert sorted(p.name for p in path.iterdir()) == [
        "checkpoint.json",
        "manifest.json",
        "trainer_state.json",
        "zero_rank_0.pt",
        "zero_rank_1.pt",
    ]
    with pytest.raises(FileNotFoundError, match="call begin first"):
        store.commit(6, {"step": 6})


def test_hf_export_hook_writes_a_loadable_safetensors_policy(tmp_path):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg)
    store = CheckpointStore(tmp_path, keep_best=0)
    path = store.save(1, {"step": 1}, save_fn=lambda d: model.save_pretrained(d / "policy"))
    assert (path / "policy" / "model.safetensors").is_file()
    loaded = Qwen3ForCausalLM.from_pretrained(path / "policy")
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_non_json_state_is_refused_and_nothing_is_written(tmp_path):
    store = CheckpointStore(tmp_path, keep_best=0)
    with pytest.raises(TypeError, match="trainer_state must be JSON-serialisable"):
        store.save(1, {"weights": torch.zeros(2)})
    assert visible(tmp_path) == [] and store.latest() is None
    with pytest.raises(ValueError, match="criterion must be finite"):
        store.save(2, {"step": 2}, criterion=float("nan"))


def test_rng_state_is_plain_json_and_bad_state_is_reported():
    text = json.dumps(capture_rng_state())
    restore_rng_state(json.loads(text))
    with pytest.raises(ValueError, match="invalid RNG state"):
        restore_rng_state({"python": {}})


def payload(d, text=b"weights"):
    (d / "deepspeed").mkdir()
    (d / "deepspeed" / "shard.safetensors").write_bytes(text * 100)


def test_commit_writes_a_manifest_of_every_file_size_and_sha256(tmp_path):
    import hashlib

    path = CheckpointStore(tmp_path, keep_best=0).save(1, {"step": 1}, save_fn=payload)
    files = json.loads((path / "manifest.json").read_text())["files"]
    on_disk = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(files) == on_disk == ["checkpoint.json", "deepspeed/shard.safetensors", "trainer_state.json"]
    for rel, entry in files.items():
        data = (path / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert CheckpointStore(tmp_path, keep_best=0).verify(path) == []


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda d: (d / "deepspeed" / "shard.safetensors").unlink(), "deepspeed/shard.safetensors: missing"),
        (lambda d: (d / "deepspeed" / "extra.pt").write_bytes(b"x"), "deepspeed/extra.pt: not in the manifest"),
        (lambda d: (d / "manifest.json").unlink(), "manifest.json: missing"),
        (lambda d: (d / "manifest.json").write_text('{"format": 1, "fil'), "manifest.json: unreadable"),
        (lambda d: (d / "checkpoint.json").write_text("{}"), "checkpoint.json: 2 bytes, expected"),
    ],
)
def test_missing_stray_and_unlisted_files_are_named(tmp_path, damage, expected):
    store = CheckpointStore(tmp_path, keep_best=0, keep_last=2)
    store.save(1, {"step": 1}, save_fn=payload)
    damage(store.save(2, {"step": 2}, save_fn=payload))
    verified = store.latest_verified()
    assert verified.info.step == 1 and expected in str(verified.rejected[0])


def test_a_checkpoint_moved_to_another_step_name_is_rejected(tmp_path):
    store = CheckpointStore(tmp_path, keep_best=0, keep_last=2)
    store.save(1, {"step": 1}, save_fn=payload)
    os.replace(store.save(2, {"step": 2}, save_fn=payload), tmp_path / "step_00000007")
    verified = store.latest_verified()
    assert verified.info.step == 1 and "says step 2, but the directory is step_00000007" in str(verified.rejected[0])


def test_no_intact_checkpoint_is_an_error_naming_each_and_none_at_all_is_none(tmp_path):
    store = CheckpointStore(tmp_path, keep_best=0, keep_last=2)
    assert store.latest_verified().info is None
    for step in (1, 2):
        path = store.save(step, {"step": step}, save_fn=payload)
        (path / "deepspeed" / "shard.safetensors").write_bytes(b"tampered")
    with pytest.raises(CheckpointError, match="no intact checkpoint.*step_00000002: .*shard.safetensors.*step_00000001"):
        store.latest_verified()
