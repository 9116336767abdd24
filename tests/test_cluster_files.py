"""cluster/: the launcher YAML, KubeRay RayJob, SLURM script and runtime_env are well formed."""

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).parents[1] / "cluster"
IMAGE = "your-registry/hpo-ray:0.1.0-cu130"  # built from cluster/Dockerfile; every launcher runs it
NODE_RESOURCES = {"learner_node", "rollout_node", "reward_node"}


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def test_ray_cluster_launcher_yaml_passes_ray_ups_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = load("ray-cluster.yaml")
    validate_config(prepare_config(cfg))  # Ray 2.60's schema, after the defaults `ray up` fills in
    assert cfg["head_node_type"] in cfg["available_node_types"]


def test_ray_cluster_runs_the_image_syncs_no_heavy_folders_and_raises_the_open_file_limit():
    cfg = load("ray-cluster.yaml")
    assert cfg["docker"]["image"] == IMAGE and "--ulimit nofile=65536:65536" in cfg["docker"]["run_options"]
    assert not [c for c in cfg["setup_commands"] if "pip" in c]  # nothing installed at boot
    excludes = cfg["rsync_exclude"]
    for folder in (".git", ".venv"):
        assert f"**/{folder}" in excludes and f"**/{folder}/**" in excludes, folder
    assert "runs/**" in excludes
    for cmd in (c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c):
        assert cmd.startswith("ulimit -n 65536;"), cmd


def test_every_launcher_runs_the_one_image_the_dockerfile_builds():
    assert f"-t {IMAGE} " in (CLUSTER / "Dockerfile").read_text()
    spec = load("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    assert {c["image"] for g in groups for c in g["template"]["spec"]["containers"]} == {IMAGE}
    assert load("ray-cluster.yaml")["docker"]["image"] == IMAGE


def test_launchers_share_one_set_of_node_resources_and_the_paper_configs_pin_pools_to_them(tmp_path):
    from hpo_ray.cluster_shapes import read_node_shapes
    from hpo_ray.config import load_config

    three = tmp_path / "three.sbatch"  # node 2 onwards gets the rollout resource
    three.write_text((CLUSTER / "slurm.sbatch").read_text().replace("#SBATCH --nodes=2", "#SBATCH --nodes=3"))
    for launcher in (CLUSTER / "kuberay-rayjob.yaml", CLUSTER / "ray-cluster.yaml", three):
        names = {r for shape in read_node_shapes(launcher) for r in shape.resources} - {"CPU", "GPU"}
        assert names == NODE_RESOURCES, launcher.name
    for config in sorted((CLUSTER.parent / "configs" / "paper").glob("*.yaml")):
        c = load_config(config, []).cluster
        pinned = {**c.learner_resources, **c.reward_resources, **c.rollout_resources}
        assert {"learner_node", "reward_node"} <= set(pinned) <= NODE_RESOURCES, config.name


def test_kuberay_rayjob_manifest_is_a_complete_rayjob():
    job = load("kuberay-rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("hpo-ray train --config")
    from hpo_ray.cli.main import parse

    assert parse(shlex.split(spec["entrypoint"])[1:]).start == "resume_or_start"  # a re-run job continues its run
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] and any(p["containerPort"] == 8265 for p in head["ports"])
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        assert group["groupName"] and group["replicas"] >= (group["groupName"] != "rollout")  # rollout: 0 when colocated
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert "nvidia.com/gpu" in limits
    yaml.safe_load(spec["runtimeEnvYAML"])


def test_runtime_env_excludes_heavy_folders_and_leaves_the_clusters_mode_and_auth_alone():
    from hpo_ray.env import AUTH_MODE, LOCAL_RAY

    env = load("runtime_env.yaml")
    assert {".git", ".venv", "runs"} <= set(env["excludes"])
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert not {AUTH_MODE, *LOCAL_RAY} & set(env["env_vars"])


def test_environment_defaults_outside_python_copy_hpo_ray_env():
    """Process defaults live in hpo_ray/env.py; the Makefile and the cluster's runtime envs (read before
    Python starts) may repeat some, but only with the same values."""
    from hpo_ray.env import DEFAULTS

    copies = {
        "runtime_env.yaml": load("runtime_env.yaml")["env_vars"],
        "kuberay-rayjob.yaml": yaml.safe_load(load("kuberay-rayjob.yaml")["spec"]["runtimeEnvYAML"])["env_vars"],
        "Makefile": dict(re.findall(r"^export (\w+) \?= (\S+)$", (CLUSTER.parent / "Makefile").read_text(), re.M)),
    }
    assert len(copies["Makefile"]) >= 5
    for where, env in copies.items():
        differ = {k: (v, DEFAULTS.get(k)) for k, v in env.items() if str(v) != DEFAULTS.get(k, str(v))}
        assert not differ, f"{where} disagrees with hpo_ray/env.py DEFAULTS: {differ}"
        assert set(env) - set(DEFAULTS) <= {"PIP_DISABLE_PIP_VERSION_CHECK"}, f"{where} sets defaults env.py lacks"


# -- SLURM: the script run against stand-ins for srun / scontrol, its Ray arguments parsed by Ray's own CLI --
# (SLURM cannot run here; the stand-ins record each step and answer `scontrol show hostnames`.)
FAKE_SRUN = """#!{python}
import json, os, sys, time
argv, node = sys.argv[1:], None
opts = []
while argv and argv[0].startswith("-"):
    if argv[0] == "-w":
        node = argv[1]; argv = argv[2:]
    else:
        opts.append(argv.pop(0))
if argv[0] == "hostname":
    print("10.9.8.7"); sys.exit(0)
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"node": node, "srun": opts, "argv": argv, "nofile": os.popen("ulimit -n").read().strip(),
                          "RAY_ADDRESS": os.environ.get("RAY_ADDRESS")}}) + "\\n")
if node == "n0":
    time.sleep(float(os.environ.get("FAKE_HEAD_SECONDS", "0")))
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
if [[ $1 == show ]]; then printf 'n%s\\n' $(seq 0 $((FAKE_NODES - 1))); else echo "$*" >> "$FAKE_LOG.scontrol"; fi
"""


def run_slurm_script(tmp_path, job_id: int, nodes: int = 3, head_seconds: float = 0, wait: bool = True):
    import json
    import os
    import sys
    import time

    bin_dir = tmp_path / f"bin{job_id}"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN.format(python=sys.executable))
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    log = tmp_path / f"steps{job_id}.jsonl"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_NODES": str(nodes),
        "FAKE_HEAD_SECONDS": str(head_seconds),
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_NODELIST": "n[0-9]",
        "SLURM_CPUS_PER_TASK": "128",
        "SLURM_GPUS_PER_NODE": "8",
    }
    proc = subprocess.Popen(
        ["bash", str(CLUSTER / "slurm.sbatch"), "configs/paper/en-zh-hpo.yaml", "/shared/runs/x", "algorithm.steps=3"],
        env=env,
        start_new_session=True,
    )
    if not wait:
        return proc, log
    assert proc.wait(timeout=60) == 0
    # the worker steps run in the background (they return when the head's job ends): on a busy machine a
    # worker's `srun` may log after the script has exited, so wait (bounded) for one line per node
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= nodes):
        time.sleep(0.1)
    return [json.loads(line) for line in log.read_text().splitlines()]


def ray_start_args(step: dict) -> tuple[list[str], list[str]]:
    """The step's `ray start` options and entrypoint, checked by Ray 2.60's symmetric-run and start commands."""
    from ray.scripts.scripts import start
    from ray.scripts.symmetric_run import curate_and_validate_ray_start_args

    argv = step["argv"]
    assert argv[:2] == ["ray", "symmetric-run"]
    sep = argv.index("--")
    options = curate_and_validate_ray_start_args(argv[2:sep])  # refuses --head / --port / --block
    address = argv[argv.index("--address") + 1]
    start.make_context("start", [*options, "--address", address])  # an unknown option raises here
    return options, argv[sep + 1 :]


def job_ports(options: list[str]) -> set[int]:
    values = dict(o.removeprefix("--").split("=", 1) for o in options if o.startswith("--") and "=" in o)
    ports = {int(v) for k, v in values.items() if k.endswith("-port") and k not in ("min-worker-port", "max-worker-port")}
    return ports | set(range(int(values["min-worker-port"]), int(values["max-worker-port"]) + 1))


def test_slurm_script_starts_every_node_by_symmetric_run_with_its_resources_and_runs_the_job_once(tmp_path):
    import resource

    from hpo_ray.cli.main import parse

    steps = {s["node"]: s for s in run_slurm_script(tmp_path, job_id=1234, nodes=3)}
    assert sorted(steps) == ["n0", "n1", "n2"]
    base = 10000 + (1234 % 22) * 1000
    wanted = {"n0": {"learner_node": 1000}, "n1": {"reward_node": 1000}, "n2": {"rollout_node": 1000}}
    for node, step in steps.items():
        options, entrypoint = ray_start_args(step)
        resources = [o.split("=", 1)[1] for o in options if o.startswith("--resources=")]
        assert [json.loads(r) for r in resources] == [wanted[node]], node
        assert step["argv"][step["argv"].index("--address") + 1] == step["RAY_ADDRESS"] == f"10.9.8.7:{base}"
        assert step["argv"][step["argv"].index("--min-nodes") + 1] == "3"  # the head waits for every node
        assert {"--num-cpus=128", "--num-gpus=8", "--temp-dir=/tmp/ray-1234"} <= set(options)
        assert {"--cpus-per-task=128", "--gpus-per-node=8"} <= set(step["srun"])  # a step does not inherit them
        assert entrypoint == [
            "hpo-ray",
            "train",
            "--config",
            "configs/paper/en-zh-hpo.yaml",
            "--run-dir",
            "/shared/runs/x",
            "--resume-or-start",
            "algorithm.steps=3",
        ]
        assert parse(entrypoint[1:]).start == "resume_or_start"
        if resource.getrlimit(resource.RLIMIT_NOFILE)[1] >= 65536:
            assert step["nofile"] == "65536"


def test_two_slurm_jobs_on_one_node_use_disjoint_port_ranges(tmp_path):
    ports = []
    for job_id in (1234, 1235):
        (head,) = [s for s in run_slurm_script(tmp_path, job_id=job_id, nodes=1) if s["node"] == "n0"]
        options, _ = ray_start_args(head)
        gcs = int(head["RAY_ADDRESS"].rsplit(":", 1)[1])
        ports.append(job_ports(options) | {gcs})
        assert max(ports[-1]) < 32768 and len(ports[-1]) > 900  # below the ephemeral range; a worker port each
    assert not ports[0] & ports[1]


def test_usr1_ahead_of_the_time_limit_requeues_the_job_and_exits_cleanly(tmp_path):
    import os
    import signal
    import time

    proc, log = run_slurm_script(tmp_path, job_id=777, nodes=2, head_seconds=60, wait=False)
    try:
        deadline = time.monotonic() + 30
        while not (log.is_file() and '"node": "n0"' in log.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None, "the head step never started"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGUSR1)  # what --signal=B:USR1@300 sends to the batch shell
        assert proc.wait(timeout=30) == 0
        assert (tmp_path / "steps777.jsonl.scontrol").read_text().split() == ["requeue", "777"]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the stand-in head step still sleeping
        except ProcessLookupError:
            pass


def test_slurm_script_asks_for_whole_nodes_requeue_and_a_warning_signal_and_names_a_real_config():
    text = (CLUSTER / "slurm.sbatch").read_text()
    for line in ("--exclusive", "--mem=0", "--requeue", "--signal=B:USR1@", "--open-mode=append"):
        assert f"#SBATCH {line}" in text, line
    (config,) = set(re.findall(r"sbatch cluster/slurm.sbatch (\S+\.yaml)", text))
    assert (CLUSTER.parent / config).is_file(), config
    assert (
        not re.search(r"^\s*sleep ", text, flags=re.M)
        and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=" not in text
        and "RAY_AUTH_MODE=${" not in text
    )


def test_slurm_script_is_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian package `shellcheck`; .ci/run installs it)")
    result = subprocess.run(["shellcheck", str(CLUSTER / "slurm.sbatch")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_launchers_fix_the_metrics_port_of_every_node(tmp_path):
    starts = [line for line in (CLUSTER / "ray-cluster.yaml").read_text().splitlines() if "ray start" in line]
    assert len(starts) == 2 and all("--metrics-export-port=8080" in line for line in starts), starts
    steps = run_slurm_script(tmp_path, job_id=42, nodes=3)  # SLURM: one port per job, the same on every node
    ports = {o for s in steps for o in ray_start_args(s)[0] if o.startswith("--metrics-export-port=")}
    assert len(ports) == 1, ports
    spec = load("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    assert all(g["rayStartParams"]["metrics-export-port"] == "8080" for g in groups)
    for g in groups:
        assert {"containerPort": 8080, "name": "metrics"} in g["template"]["spec"]["containers"][0]["ports"]


def test_prometheus_config_scrapes_rays_service_discovery_file():
    cfg = load("prometheus/prometheus.yml")
    files = [f for job in cfg["scrape_configs"] for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]
