"""`hpo-ray plan` and the live fit check: a config's pools against a cluster's nodes, shortfalls named."""

from pathlib import Path

import pytest

from hpo_ray.cli.main import main
from hpo_ray.cluster_plan import NodeShape, plan, pool_specs
from hpo_ray.cluster_shapes import LauncherError, read_node_shapes
from hpo_ray.config import ConfigError, load_config

ROOT = Path(__file__).parents[1]
PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
LAUNCHERS = ["cluster/kuberay-rayjob.yaml", "cluster/ray-cluster.yaml", "cluster/slurm.sbatch"]


def test_pools_are_the_placement_groups_the_run_reserves():
    cfg = load_config(
        None,
        [
            "learner.num_ranks=2",
            "cluster.num_rollout_workers=3",
            "cluster.cpus_per_learner=1",
            "cluster.cpus_per_rollout_worker=2",
            "cluster.reward_resources={reward_node: 1}",
        ],
    )
    pools = {p.name: p for p in pool_specs(cfg)}
    assert len(pools["learner"].bundles) == 2 and pools["learner"].bundles[0] == {"CPU": 1.0}
    assert pools["rollout"].bundles == [{"CPU": 2.0}] * 3
    assert pools["reward"].bundles[0]["reward_node"] == 1.0
    colocated = {
        p.name: p
        for p in pool_specs(load_config(None, ["cluster.colocate=true", "cluster.cpus_per_learner=1", "cluster.cpus_per_rollout_worker=2"]))
    }
    assert "rollout" not in colocated and colocated["learner"].bundles[0] == {"CPU": 3.0}


def test_a_shortfall_names_the_pool_the_bundle_and_the_resource():
    cfg = load_config(None, ["cluster.num_reward_actors=3", "cluster.gpus_per_reward_actor=1"])
    result = plan(pool_specs(cfg), [NodeShape("cpu", {"CPU": 8}), NodeShape("gpu", {"CPU": 8, "GPU": 2})])
    assert not result.fits and result.placements["learner"]
    (short,) = result.shortfalls
    assert (short.pool, short.bundle, short.resource, short.needed, short.largest_free) == ("reward", 2, "GPU", 1.0, 0.0)
    assert "cluster.num_reward_actors" in str(short)


def test_strict_spread_needs_one_node_per_bundle():
    cfg = load_config(None, ["cluster.placement_strategy=STRICT_SPREAD", "learner.num_ranks=2"])
    assert not plan(pool_specs(cfg), [NodeShape("big", {"CPU": 16})]).fits
    assert plan(pool_specs(cfg), [NodeShape("n", {"CPU": 16}, count=2)]).fits


def test_resources_free_apart_but_not_together_are_reported_as_such():
    cfg = load_config(None, ["cluster.gpus_per_reward_actor=1", "cluster.cpus_per_reward_actor=4"])
    result = plan(pool_specs(cfg), [NodeShape("cpu", {"CPU": 8}), NodeShape("gpu", {"CPU": 1, "GPU": 8})])
    assert "no node has CPU=4 and GPU=1 free together" in str(result.shortfalls[0])


@pytest.mark.parametrize("config", PAPER, ids=lambda p: p.stem)
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_each_paper_config_fits_the_shipped_launchers(config, launcher, capsys):
    assert main(["plan", "--config", str(config), "--cluster", str(ROOT / launcher)]) == 0
    assert capsys.readouterr().out.strip().endswith("fits")


def test_plan_exits_1_and_names_the_shortfall_for_a_config_that_does_not_fit(capsys):
    config = str(PAPER[0])
    assert main(["plan", "--config", config, "--cluster", str(ROOT / LAUNCHERS[0]), "cluster.num_reward_actors=9"]) == 1
    assert "pool reward: bundle 8 needs GPU=1 but at most 0 is free" in capsys.readouterr().out


def test_launcher_readers_take_kuberay_quantities_and_reject_unknown_files(tmp_path):
    nodes = {n.name: n for n in read_node_shapes(ROOT / "cluster/kuberay-rayjob.yaml")}
    assert nodes["head"].resources == {"CPU": 8.0}
    assert nodes["learner"].resources == {"CPU": 128.0, "GPU": 8.0, "learner_node": 1000.0}
    (tmp_path / "x.yaml").write_text("foo: 1\n")
    with pytest.raises(LauncherError, match="not a KubeRay"):
        read_node_shapes(tmp_path / "x.yaml")
    (tmp_path / "n.yaml").write_text("nodes:\n  - {name: a, count: 2, resources: {CPU: 500m, GPU: lots}}\n")
    with pytest.raises(LauncherError, match=r"nodes\[0\].resources.GPU: not a number"):
        read_node_shapes(tmp_path / "n.yaml")


@pytest.fixture(scope="module")
def kuberay_shaped_cluster():
    """A simulated cluster with the KubeRay manifest's node shapes (GPUs and custom resources declared logically)."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    head, *workers = read_node_shapes(ROOT / "cluster/kuberay-rayjob.yaml")

    def args(node: NodeShape) -> dict:
        r = dict(node.resources)
        return {"num_cpus": int(r.pop("CPU")), "num_gpus": int(r.pop("GPU", 0)), "resources": r}

    cluster = Cluster(initialize_head=True, head_node_args=args(head))
    for node in workers:
        for _ in range(node.count):
            cluster.add_node(**args(node))
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_the_live_check_agrees_with_ray_placing_the_paper_pools(kuberay_shaped_cluster):
    from actors.placement import make_pools
    from hpo_ray.cli.plan_cmd import check_live_cluster

    cfg = load_config(PAPER[0], [])
    check_live_cluster(cfg)
    make_pools(cfg, timeout_s=60).remove()  # Ray places every bundle, as the plan said
    too_big = load_config(PAPER[0], ["cluster.num_reward_actors=9"])
    with pytest.raises(ConfigError, match="pool reward: bundle 8 needs GPU=1"):
        check_live_cluster(too_big)
    with pytest.raises(RuntimeError, match="cannot place the reward pool"):
        make_pools(too_big, timeout_s=5)


def test_a_slurm_script_gives_each_node_index_the_custom_resources_it_declares(tmp_path):
    text = (ROOT / "cluster" / "slurm.sbatch").read_text().replace("#SBATCH --nodes=2", "#SBATCH --nodes=4")
    (script := tmp_path / "four.sbatch").write_text(text)
    shapes = {s.name: s for s in read_node_shapes(script)}
    assert shapes["slurm node 0"].resources == {"CPU": 128.0, "GPU": 8.0, "learner_node": 1000.0}
    assert shapes["slurm node 1"].resources["reward_node"] == 1000.0
    assert shapes["slurm nodes 2-3"].count == 2 and shapes["slurm nodes 2-3"].resources["rollout_node"] == 1000.0
    (one := tmp_path / "one.sbatch").write_text(text.replace("#SBATCH --nodes=4", "#SBATCH --nodes=1"))
    cfg = load_config(PAPER[0], [])
    result = plan(pool_specs(cfg), read_node_shapes(one))
    assert not result.fits and {s.pool for s in result.shortfalls} == {"reward"}  # no node 1: no reward_node
    (bad := tmp_path / "bad.sbatch").write_text(text.replace("OTHER_NODE_RESOURCES='{", "OTHER_NODE_RESOURCES='["))
    with pytest.raises(LauncherError, match="OTHER_NODE_RESOURCES"):
        read_node_shapes(bad)
