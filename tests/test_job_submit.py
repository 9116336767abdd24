"""A real two-node Ray cluster in cluster mode with token auth, kept on loopback: a head raylet on
127.0.0.2 and a worker raylet on 127.0.0.3 that joins it with `ray start --address` (Ray rewrites only
127.0.0.1 / localhost / ::1 to the default-route address, so these stay on loopback). `ray job
submit` with the token runs `hpo-ray train` with its pools pinned to both nodes; without the token
the job API refuses. The cluster is stopped by the process groups this test started (never `ray stop`)."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpo_ray.env import AUTH_MODE, LOCAL_RAY
from hpo_ray.learner.distributed import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).parents[1]
RAY = Path(sys.executable).parent / "ray"
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


@dataclass
class TwoNodes:
    env: dict[str, str]  # a cluster client's environment: cluster mode, token auth
    dashboard: str
    token: str


def cluster_environment(token_path: Path) -> dict[str, str]:
    """This process's environment without the single-machine settings, with token auth on."""
    drop = {*LOCAL_RAY, AUTH_MODE, "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env | {AUTH_MODE: "token", "RAY_AUTH_TOKEN_PATH": str(token_path), "RAY_USAGE_STATS_ENABLED": "0"}


def own_ports() -> list[str]:
    """Explicit free ports for a node's services, so that no default port is shared with another Ray here."""
    names = (
        "node-manager-port",
        "object-manager-port",
        "metrics-export-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
    )
    return [f"--{name}={free_port()}" for name in names]


def start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [str(RAY), "start", "--block", "--disable-usage-stats", "--num-cpus=1", *own_ports(), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def get_json(url: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        return json.loads(r.read())


def wait_for(what: str, check, timeout_s: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a raylet exited while waiting for {what}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(what)


def alive_nodes(dashboard: str, token: str) -> set[str]:
    nodes = get_json(f"{dashboard}/nodes?view=summary", token)["data"]["summary"]
    return {n["raylet"]["nodeManagerAddress"] for n in nodes if n["raylet"]["state"] == "ALIVE"}


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group this test started (the node's raylet, GCS, agents), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def two_nodes():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    root = Path(tempfile.mkdtemp(prefix="hpo2n-", dir="/tmp"))  # short: Ray's socket paths live under it
    token = secrets.token_hex(32)
    (root / "token").write_text(token)
    env = cluster_environment(root / "token")
    gcs, dash = free_port(HEAD_IP), free_port(HEAD_IP)
    dashboard = f"http://{HEAD_IP}:{dash}"
    procs = [
        start_node(
            [
                "--head",
                f"--node-ip-address={HEAD_IP}",
                f"--port={gcs}",
                f"--temp-dir={root / 'ray'}",
                f"--dashboard-host={HEAD_IP}",
                f"--dashboard-port={dash}",
                f"--ray-client-server-port={free_port()}",
                '--resources={"head_node": 1}',
            ],
            env,
            root / "head.log",
        )
    ]
    try:
        wait_for("the head's dashboard", lambda: get_json(f"{dashboard}/api/version", token), 180, procs)
        # its own temp dir, as on its own machine: two runtime-env agents unpacking the job's working
        # dir into one session folder race (a driver then saw half-unpacked packages)
        procs.append(
            start_node(
                [
                    f"--address={HEAD_IP}:{gcs}",
                    f"--node-ip-address={WORKER_IP}",
                    f"--temp-dir={root / 'ray-worker'}",
                    '--resources={"worker_node": 1}',
                ],
                env,
                root / "worker.log",
            )
        )
        wait_for("two alive nodes", lambda: alive_nodes(dashboard, token) == {HEAD_IP, WORKER_IP}, 180, procs)
        yield TwoNodes(env, dashboard, token)
    except Exception:
        print(*[(root / f).read_text()[-3000:] for f in ("head.log", "worker.log") if (root / f).exists()], sep="\n")
        raise
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def test_job_api_refuses_a_client_without_the_token(two_nodes):
    assert isinstance(get_json(f"{two_nodes.dashboard}/api/jobs/", two_nodes.token), list)
    with pytest.raises(urllib.error.HTTPError) as refused:
        get_json(f"{two_nodes.dashboard}/api/jobs/", None)
    assert refused.value.code in (401, 403)


def test_job_with_the_token_trains_a_step_with_pools_on_both_nodes(two_nodes, small_run, tmp_path):
    _, _, overrides = small_run
    run_dir = tmp_path / "run"
    cmd = [
        str(RAY),
        "job",
        "submit",
        "--address",
        two_nodes.dashboard,
        "--working-dir",
        str(REPO),
        "--runtime-env",
        str(REPO / "cluster" / "runtime_env.yaml"),
        "--",
        sys.executable,
        "-m",
        "hpo_ray.cli.main",
        "train",
        "--config",
        str(REPO / "configs" / "demo-vectors.yaml"),
        "--run-dir",
        str(run_dir),
        "--steps",
        "1",
        *overrides,
        "validation.at_start=false",
        "cluster.learner_resources={head_node: 0.5}",
        "cluster.rollout_resources={worker_node: 0.5}",
        "cluster.cpus_per_learner=0.5",
        "cluster.cpus_per_rollout_worker=0.5",
        "cluster.cpus_per_reward_actor=0.25",
    ]
    deadline = time.time() + 300  # the dashboard answers before its job agent is ready
    while True:
        done = subprocess.run(cmd, env=two_nodes.env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in done.stdout + done.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 1
