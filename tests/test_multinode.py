"""Multi-node placement on a simulated 3-node Ray cluster (`ray.cluster_utils.Cluster`)."""

import pytest

from hpo_ray.config import load_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def three_nodes():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"driver_node": 1}})
    cluster.add_node(num_cpus=1, resources={"learner_node": 1})
    cluster.add_node(num_cpus=1, resources={"rollout_node": 1})
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_pools_are_placed_across_nodes_and_a_step_completes(three_nodes, small_run, tmp_path):
    import ray

    from actors.controller import train
    from actors.placement import make_pools

    _, _, overrides = small_run
    cfg = load_config(
        None,
        overrides
        + [
            "cluster.learner_resources={learner_node: 0.5}",
            "cluster.rollout_resources={rollout_node: 0.5}",
            "cluster.reward_resources={driver_node: 0.5}",
            "cluster.cpus_per_learner=0.5",
            "cluster.cpus_per_rollout_worker=0.5",
            "cluster.cpus_per_reward_actor=0.5",
            "validation.at_start=false",
        ],
    )
    nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes()}
    pools = make_pools(cfg)
    try:
        where = {
            name: set(ray.util.placement_group_table(pg)["bundles_to_node_id"].values())
            for name, pg in (("learner", pools.learner), ("rollout", pools.rollout), ("reward", pools.reward))
        }
    finally:
        pools.remove()
    assert all(len(ids) == 1 for ids in where.values())
    (learner,), (rollout,), (reward,) = where["learner"], where["rollout"], where["reward"]
    assert len({learner, rollout, reward}) == 3
    assert "learner_node" in nodes[learner] and "rollout_node" in nodes[rollout] and "driver_node" in nodes[reward]
    history = train(cfg, tmp_path / "run", steps=1)
    assert history[-1]["step"] == 1 and history[-1]["rollout/sequences"] == 4
