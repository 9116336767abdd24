"""`ray job submit` of `hpo-ray train` against a `ray start --head` cluster on loopback."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hpo_ray.learner.distributed import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).parents[1]


def wait_http(url: str, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(url)


def test_ray_job_submit_runs_training_on_a_loopback_head(small_run, tmp_path):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _, _, overrides = small_run
    gcs, dash = free_port(), free_port()
    ray_bin = Path(sys.executable).parent / "ray"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{dash}/api/version", 120)
        run_dir = tmp_path / "run"
        cmd = [str(ray_bin), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(REPO),
               "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"), "--",
               sys.executable, "-m", "hpo_ray.cli.main", "train", "--config", str(REPO / "configs" / "demo.yaml"),
               "--run-dir", str(run_dir), "--steps", "1", *overrides, "validation.at_start=false",
               "cluster.cpus_per_learner=0.5", "cluster.cpus_per_rollout_worker=0.5", "cluster.cpus_per_reward_actor=0.25"]
        deadline = time.time() + 600  # the dashboard answers before its job agent is ready (minutes on a loaded machine)
        while True:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            if "No available agent" not in done.stdout + done.stderr or time.time() > deadline:
                break
            time.sleep(3)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "succeeded" in done.stdout + done.stderr
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert steps[-1] == 1
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
