"""A SIGKILLed `hpo-ray train` driver resumes from its last checkpoint with the same data order."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hpo_ray.data.manifest import Manifest
from hpo_ray.data.sampler import TalkSampler

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def train_cmd(run_dir, overrides, resume=False):
    cmd = [sys.executable, "-m", "hpo_ray.cli.main", "train", "--config", "configs/demo.yaml", "--run-dir", str(run_dir),
           "--steps", "3", *overrides, "checkpoint.every=1", "validation.every=1", "validation.at_start=false",
           "cluster.num_cpus=2", "cluster.cpus_per_learner=0.5", "cluster.cpus_per_rollout_worker=0.5",
           "cluster.cpus_per_reward_actor=0.25"]
    return cmd + (["--resume"] if resume else [])


def test_sigkilled_driver_resumes_with_the_same_data_order(small_run, tmp_path):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _, _, overrides = small_run
    run_dir = tmp_path / "run"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    first = subprocess.Popen(train_cmd(run_dir, overrides), cwd=repo, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = run_dir / "checkpoints" / "step_00000001"
    deadline = time.time() + 300
    while not ckpt.is_dir() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert ckpt.is_dir(), "the first run never wrote its step-1 checkpoint"
    os.killpg(first.pid, signal.SIGKILL)  # the driver and everything in its session, mid-run
    first.wait()
    assert not (run_dir / "checkpoints" / "step_00000003").exists()

    done = subprocess.run(train_cmd(run_dir, overrides, resume=True), cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    latest = json.loads((run_dir / "checkpoints" / "step_00000003" / "trainer_state.json").read_text())
    assert latest["step"] == 3
    order = [json.loads(line) for line in (run_dir / "data_order.jsonl").read_text().splitlines()]
    resumed = {o["step"]: o["talks"] for o in order}  # later lines (the resumed run) win for repeated steps
    talks = Manifest(next(o.split("=", 1)[1] for o in overrides if o.startswith("data.train_manifest=")))
    sampler = TalkSampler(len(talks), seed=42, shuffle=True)
    expected = {step: [talks[i].talk_id for i in sampler.draw(2)] for step in range(3)}
    assert resumed == expected
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[-2:] == [2, 3] and 1 in steps
