"""A real learner rank (DeepSpeed ZeRO-2 over gloo, tiny Qwen3, in this process): resume runs no
code from a checkpoint and falls back past damaged ones; a non-finite loss never reaches the weights."""

import logging
import math
import shutil
from dataclasses import replace

import pytest
import torch

from hpo_ray.config import load_config
from hpo_ray.learner.checkpoint import CheckpointStore
from hpo_ray.learner.checkpoint_manifest import write_manifest
from hpo_ray.learner.distributed import free_port
from hpo_ray.learner.finite import NonFiniteTrainingError, SkipGuard
from hpo_ray.learner.safe_load import UnsafeCheckpointFileError, load_restricted
from tests.test_learner_group import make_items

STATE = "deepspeed/state"


@pytest.fixture(scope="module")
def trainer(tiny_policy_dir):
    from hpo_ray.learner.trainer import PolicyTrainer

    cfg = load_config(None, ["learner.zero_stage=2", "learner.optimizer.lr=0.001", "learner.device=cpu"])
    return PolicyTrainer(cfg, str(tiny_policy_dir), 0, 1, "127.0.0.1", free_port())


@pytest.fixture(scope="module")
def items(layout, tmp_path_factory):
    return make_items(layout, tmp_path_factory.mktemp("features"), n=4, seed=3)


def update(trainer, items):
    normaliser = float(sum(sum(i.assistant_mask[1:]) for i in items))
    return trainer.train_step(items, [0] * len(items), [normaliser], passes=1)


@pytest.fixture(scope="module")
def two_checkpoints(trainer, items, tmp_path_factory):
    """Checkpoints of steps 1 and 2 (one update apart), and the weights each holds."""
    store = CheckpointStore(tmp_path_factory.mktemp("ckpt") / "checkpoints", keep_best=0, keep_last=3)
    weights = {}
    for step in (1, 2):
        update(trainer, items)
        tmp = store.begin(step)
        trainer.save_checkpoint(tmp / "deepspeed", {"step": step})
        store.commit(step, {"step": step})
        weights[step] = trainer.full_state_dict()
    return store.root, weights


@pytest.fixture
def store(two_checkpoints, tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(two_checkpoints[0], root)
    return CheckpointStore(root, keep_best=0, keep_last=3)


def assert_resumes_step_1(store, trainer, weights, caplog, damaged_file):
    with caplog.at_level(logging.WARNING, logger="hpo_ray.learner.checkpoint"):
        verified = store.latest_verified()
    assert verified.info.step == 1
    assert [r.path.name for r in verified.rejected] == ["step_00000002"]
    assert damaged_file in str(verified.rejected[0])
    assert "step_00000002" in caplog.text and damaged_file in caplog.text
    assert (store.root / "latest").read_text().strip() == "step_00000001"
    assert trainer.load_checkpoint(verified.info.path / "deepspeed")["step"] == 1
    got = trainer.full_state_dict()
    assert all(torch.equal(got[k], weights[1][k]) for k in weights[1])


class Payload:
    """Unpickling this runs `exec` (a stand-in for `os.system`): it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_crafted_pickle_checkpoint_runs_no_code_and_resume_falls_back(store, trainer, two_checkpoints, tmp_path, caplog):
    marker = tmp_path / "code-ran"
    crafted = store.root / "step_00000002" / STATE / "mp_rank_00_model_states.pt"
    torch.save({"module": Payload(marker)}, crafted)
    write_manifest(store.root / "step_00000002")  # the attacker also rewrites the checksums
    assert_resumes_step_1(store, trainer, two_checkpoints[1], caplog, "mp_rank_00_model_states.pt")
    assert "builtins.exec" in caplog.text
    with pytest.raises(UnsafeCheckpointFileError, match="mp_rank_00_model_states.pt.*weights-only"):
        trainer.load_checkpoint(crafted.parents[1])  # the learner's own loader refuses it too
    assert not marker.exists(), "code from the checkpoint ran"
    torch.load(crafted, weights_only=False)  # what DeepSpeed's stock loader does: the file is live
    assert marker.exists()


def _flip(path):
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


@pytest.mark.parametrize(
    "damaged, damage",
    [
        (f"{STATE}/mp_rank_00_model_states.pt", _flip),
        (f"{STATE}/zero_pp_rank_0_mp_rank_00_optim_states.pt", _flip),
        (f"{STATE}/mp_rank_00_model_states.pt", _truncate),
        (f"{STATE}/zero_pp_rank_0_mp_rank_00_optim_states.pt", _truncate),
        ("trainer_state.json", _truncate),
        ("checkpoint.json", _truncate),  # used to resume step 1 silently while `latest` named step 2
    ],
)
def test_damaged_newest_checkpoint_is_detected_and_resume_loads_the_previous(store, trainer, two_checkpoints, caplog, damaged, damage):
    damage(store.root / "step_00000002" / damaged)
    assert_resumes_step_1(store, trainer, two_checkpoints[1], caplog, damaged)
    expected = "sha256" if damage is _flip else "bytes, expected"
    assert expected in caplog.text


def test_inf_advantage_skips_the_update_counts_it_and_leaves_weights_and_optimizer_alone(trainer, items):
    trainer.skips = SkipGuard(3)
    before, moments = trainer.full_state_dict(), trainer.optimizer_fingerprint()
    bad = [replace(items[0], advantage=math.inf)] + items[1:]
    metrics = update(trainer, bad)
    assert metrics["learner/skipped_updates"] == 1.0 and metrics["optimizer_steps"] == 0
    after = trainer.full_state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert trainer.optimizer_fingerprint() == moments
    good = update(trainer, items)
    assert good["learner/skipped_updates"] == 0.0 and good["optimizer_steps"] == 1 and math.isfinite(good["loss"])


def test_repeated_non_finite_losses_stop_the_run_and_nothing_non_finite_is_saved(trainer, items, tmp_path):
    trainer.skips = SkipGuard(2)
    bad = [replace(item, advantage=-math.inf) for item in items]
    update(trainer, bad)
    update(trainer, items)  # an applied step resets the count
    update(trainer, bad)
    with pytest.raises(NonFiniteTrainingError, match="2 optimiser steps in a row.*max_skipped_updates=2"):
        update(trainer, bad)
    trainer.save_checkpoint(tmp_path / "ckpt", {"step": 9})
    saved = load_restricted(tmp_path / "ckpt" / "state" / "mp_rank_00_model_states.pt")["module"]
    assert saved and all(torch.isfinite(t).all() for t in saved.values())


def test_a_checkpoint_of_non_finite_weights_is_refused(trainer, tmp_path):
    name, param = next(iter(trainer.engine.module.named_parameters()))
    kept = param.detach().clone()
    with torch.no_grad():
        param.view(-1)[0] = math.nan
    try:
        with pytest.raises(NonFiniteTrainingError, match=f"non-finite weights.*{name}"):
            trainer.save_checkpoint(tmp_path / "ckpt", {"step": 3})
    finally:
        with torch.no_grad():
            param.copy_(kept)
    assert not (tmp_path / "ckpt").exists()
