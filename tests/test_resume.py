"""A SIGKILLed `hpo-ray train` driver resumes from its last checkpoint with the same data order, and
no step appears twice in metrics.jsonl, data_order.jsonl or TensorBoard."""

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


def train_cmd(run_dir, overrides, start=None):
    cmd = [
        sys.executable,
        "-m",
        "hpo_ray.cli.main",
        "train",
        "--config",
        "configs/demo-vectors.yaml",
        "--run-dir",
        str(run_dir),
        "--steps",
        "4",
        *overrides,
        "checkpoint.every=2",
        "validation.every=1",
        "validation.at_start=false",
        "logging.tensorboard=true",
        "cluster.num_cpus=2",
        "cluster.cpus_per_learner=0.5",
        "cluster.cpus_per_rollout_worker=0.5",
        "cluster.cpus_per_reward_actor=0.25",
    ]
    return cmd + ([start] if start else [])


def logged_steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def test_sigkilled_driver_resumes_with_the_same_data_order_and_no_step_logged_twice(small_run, tmp_path):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _, _, overrides = small_run
    run_dir = tmp_path / "run"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    first = subprocess.Popen(
        train_cmd(run_dir, overrides), cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    # wait until step 3 is logged: the checkpoint is step 2's, so step 3 is in the logs twice unless they are cut back
    metrics, deadline = run_dir / "metrics.jsonl", time.time() + 400
    while first.poll() is None and time.time() < deadline and not (metrics.is_file() and 3 in logged_steps(metrics)):
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and everything in its session, mid-run
    first.wait()
    assert 3 in logged_steps(metrics), "the first run never logged step 3"
    assert (run_dir / "checkpoints" / "step_00000002").is_dir() and not (run_dir / "checkpoints" / "step_00000004").exists()

    again = subprocess.run(train_cmd(run_dir, overrides), cwd=repo, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr  # a new run into the used dir is refused
    done = subprocess.run(train_cmd(run_dir, overrides, "--resume"), cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    latest = json.loads((run_dir / "checkpoints" / "step_00000004" / "trainer_state.json").read_text())
    assert latest["step"] == 4
    order = [json.loads(line) for line in (run_dir / "data_order.jsonl").read_text().splitlines()]
    assert [o["step"] for o in order] == [1, 2, 3, 4]
    talks = Manifest(next(o.split("=", 1)[1] for o in overrides if o.startswith("data.train_manifest=")))
    sampler = TalkSampler(len(talks), seed=42, shuffle=True)
    assert [o["talks"] for o in order] == [[talks[i].talk_id for i in sampler.draw(2)] for _ in range(4)]
    assert logged_steps(metrics) == [1, 2, 3, 4]
    for tag, steps in tensorboard_steps(run_dir / "tensorboard").items():
        assert steps == [1, 2, 3, 4], (tag, steps)


def tensorboard_steps(folder) -> dict[str, list[int]]:
    """Steps of each scalar as TensorBoard shows them (it hides the events a later `purge_step` cut)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in ("reward/quality", "val/quality", "time/step")}
