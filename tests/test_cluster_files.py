"""cluster/: the launcher YAML, KubeRay RayJob, SLURM script and runtime_env are well formed."""

import shlex
import subprocess
from pathlib import Path

import yaml

CLUSTER = Path(__file__).parents[1] / "cluster"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def test_ray_cluster_launcher_yaml_has_the_fields_ray_up_requires():
    cfg = load("ray-cluster.yaml")
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers"):
        assert key in cfg, key
    assert cfg["provider"]["type"] and cfg["head_node_type"] in cfg["available_node_types"]
    for name, node in cfg["available_node_types"].items():
        assert {"node_config", "resources", "max_workers"} <= set(node), name
    gpu_types = [n for n in cfg["available_node_types"].values() if n["resources"].get("GPU")]
    assert {"learner_node", "rollout_node"} <= {k for n in gpu_types for k in n["resources"]}


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
        assert group["groupName"] and group["replicas"] >= 1
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert "nvidia.com/gpu" in limits
    yaml.safe_load(spec["runtimeEnvYAML"])


def test_slurm_script_parses_and_starts_a_ray_head_and_the_job():
    script = CLUSTER / "slurm.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "#SBATCH --nodes=" in text and "ray start --head" in text and "hpo-ray train" in text


def test_runtime_env_excludes_heavy_folders_and_leaves_the_clusters_mode_and_auth_alone():
    from hpo_ray.env import AUTH_MODE, LOCAL_RAY

    env = load("runtime_env.yaml")
    assert {".git", ".venv", "runs"} <= set(env["excludes"])
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert not {AUTH_MODE, *LOCAL_RAY} & set(env["env_vars"])


def test_launchers_fix_the_metrics_port_of_every_node():
    starts = [line for name in ("slurm.sbatch", "ray-cluster.yaml")
              for line in (CLUSTER / name).read_text().replace("\\\n", " ").splitlines() if "ray start" in line]
    assert len(starts) == 4 and all("--metrics-export-port=" in line for line in starts), starts
    spec = load("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    assert all(g["rayStartParams"]["metrics-export-port"] == "8080" for g in groups)
    for g in groups:
        assert {"containerPort": 8080, "name": "metrics"} in g["template"]["spec"]["containers"][0]["ports"]


def test_prometheus_config_scrapes_rays_service_discovery_file():
    cfg = load("prometheus/prometheus.yml")
    files = [f for job in cfg["scrape_configs"] for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]
