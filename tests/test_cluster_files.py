"""cluster/: the launcher YAML, KubeRay RayJob, SLURM script and runtime_env are well formed."""

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
