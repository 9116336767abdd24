"""`hpo-ray plan --config C --cluster F`: does every pool's placement group fit the nodes that launcher
file starts (KubeRay RayJob/RayCluster, `ray up` YAML, SLURM script, or a node list)? Exit 0 when it
fits, 1 with the shortfall named (pool, bundle, resource) when it does not."""

import argparse
import sys

from hpo_ray.cli.common import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        required=True,
        help="launcher file: cluster/kuberay-rayjob.yaml, cluster/ray-cluster.yaml, cluster/slurm.sbatch, or a YAML node list",
    )
    add_config_arguments(parser, required=True)


def run(args: argparse.Namespace) -> int:
    from hpo_ray.cluster_plan import describe, plan, pool_specs
    from hpo_ray.cluster_shapes import LauncherError, read_node_shapes

    cfg = config_from_args(args)
    try:
        nodes = read_node_shapes(args.cluster)
    except LauncherError as exc:
        print(f"hpo-ray plan: {exc}", file=sys.stderr)
        return 2
    pools = pool_specs(cfg)
    result = plan(pools, nodes)
    print("\n".join(describe(pools, nodes, result)))
    return 0 if result.fits else 1


def check_live_cluster(cfg) -> None:
    """`hpo-ray train`'s check against the connected Ray cluster: fail fast, naming the shortfall,
    instead of waiting on a placement group that can never be placed."""
    import ray

    from hpo_ray.cluster_plan import plan, pool_specs
    from hpo_ray.cluster_shapes import live_node_shapes
    from hpo_ray.config import ConfigError

    if not cfg.cluster.check_fit:
        return
    result = plan(pool_specs(cfg), live_node_shapes(ray.nodes()))
    if not result.fits:
        raise ConfigError(
            "cluster",
            "the pools do not fit the live cluster: "
            + "; ".join(map(str, result.shortfalls))
            + " (cluster.check_fit=false skips this check on an autoscaling cluster)",
        )
