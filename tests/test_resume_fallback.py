"""`hpo-ray train --resume` past a damaged newest checkpoint: a warning naming the file, then the run
continues from the previous intact one (and re-saves the damaged step)."""

import json
import os
import subprocess

import pytest

from hpo_ray.learner.checkpoint import CheckpointStore

from tests.test_resume import train_cmd

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_resume_skips_a_corrupted_newest_checkpoint_and_continues_from_the_previous(small_run, tmp_path):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _, _, overrides = small_run
    run_dir, repo = tmp_path / "run", os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    two_steps = train_cmd(run_dir, overrides)
    two_steps[two_steps.index("--steps") + 1] = "2"
    first = subprocess.run(two_steps, cwd=repo, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoints = run_dir / "checkpoints"
    damaged = checkpoints / "step_00000002" / "deepspeed" / "state" / "mp_rank_00_model_states.pt"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))

    done = subprocess.run(train_cmd(run_dir, overrides, resume=True), cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step_00000002 failed verification" in done.stderr
    assert "deepspeed/state/mp_rank_00_model_states.pt: sha256" in done.stderr
    assert "resuming from" in done.stderr and "step_00000001" in done.stderr
    store = CheckpointStore(checkpoints, keep_best=0)
    assert store.verify(checkpoints / "step_00000002") == [], "step 2 was trained again and re-saved intact"
    assert json.loads((checkpoints / "step_00000003" / "trainer_state.json").read_text())["step"] == 3
