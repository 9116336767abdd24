"""Node shapes (what each node offers Ray) read from the launcher files in `cluster/`.

Readers are registered by format: a KubeRay RayJob / RayCluster manifest, a `ray up` cluster YAML,
a SLURM batch script (`#SBATCH` lines), or a plain node list
(`nodes: [{name, count, resources: {CPU, GPU, custom...}}]`). Each gives what `ray start` would
declare, so `hpo-ray plan` can check a config before anything is submitted.
"""

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import yaml

from hpo_ray.cluster_plan import NodeShape


class LauncherError(ValueError):
    """A launcher file cannot be read as node shapes; the message names the file and the field."""


def _quantity(value, path: Path, where: str) -> float:
    """A Kubernetes/Ray quantity: 8, "8", "500m" (milli-CPUs)."""
    text = str(value).strip()
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise LauncherError(f"{path}: {where}: not a number: {value!r}") from None


def _custom(value, path: Path, where: str) -> dict[str, float]:
    """`--resources` as Ray takes it: a JSON object, possibly quoted once more for KubeRay."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: float(v) for k, v in value.items()}
    text = str(value).strip()
    if text.startswith('"') and text.endswith('"'):
        text = json.loads(text)
    try:
        return {k: float(v) for k, v in json.loads(text).items()}
    except (ValueError, AttributeError):
        raise LauncherError(f"{path}: {where}: resources must be a JSON object, got {value!r}") from None


def _kuberay_group(group: dict, path: Path, where: str, count: int) -> NodeShape:
    params = group.get("rayStartParams") or {}
    containers = (((group.get("template") or {}).get("spec") or {}).get("containers")) or []
    limits = ((containers[0].get("resources") or {}).get("limits") or {}) if containers else {}
    cpus = params.get("num-cpus", limits.get("cpu"))
    if cpus is None:
        raise LauncherError(f"{path}: {where}: neither rayStartParams.num-cpus nor a container cpu limit")
    gpus = params.get("num-gpus", limits.get("nvidia.com/gpu", 0))
    resources = {"CPU": _quantity(cpus, path, f"{where}.num-cpus"), **_custom(params.get("resources"), path, f"{where}.resources")}
    if _quantity(gpus, path, f"{where}.num-gpus"):
        resources["GPU"] = _quantity(gpus, path, f"{where}.num-gpus")
    return NodeShape(group.get("groupName", "head"), resources, count)


def read_kuberay(doc: dict, path: Path) -> list[NodeShape]:
    spec = doc.get("spec") or {}
    cluster = spec.get("rayClusterSpec", spec) if doc.get("kind") == "RayJob" else spec
    head = cluster.get("headGroupSpec")
    if head is None:
        raise LauncherError(f"{path}: spec{'.rayClusterSpec' if doc.get('kind') == 'RayJob' else ''}.headGroupSpec missing")
    nodes = [_kuberay_group({**head, "groupName": "head"}, path, "headGroupSpec", 1)]
    for k, group in enumerate(cluster.get("workerGroupSpecs") or []):
        count = int(group.get("replicas", group.get("minReplicas", 1)))
        nodes.append(_kuberay_group(group, path, f"workerGroupSpecs[{k}]", count))
    return nodes


def read_ray_up(doc: dict, path: Path) -> list[NodeShape]:
    """A `ray up` config: each node type's declared resources; workers at their max_workers."""
    head = doc.get("head_node_type")
    nodes = []
    for name, node_type in (doc.get("available_node_types") or {}).items():
        if "resources" not in node_type:
            raise LauncherError(f"{path}: available_node_types.{name}.resources missing (declare CPU/GPU explicitly)")
        count = 1 if name == head else int(node_type.get("max_workers", node_type.get("min_workers", 0)))
        resources = {k: _quantity(v, path, f"available_node_types.{name}.resources.{k}") for k, v in node_type["resources"].items()}
        if count:
            nodes.append(NodeShape(name, resources, count))
    return nodes


def read_node_list(doc: dict, path: Path) -> list[NodeShape]:
    nodes = []
    for k, node in enumerate(doc["nodes"]):
        if not isinstance(node, dict) or "resources" not in node:
            raise LauncherError(f"{path}: nodes[{k}] needs resources: {{CPU: .., GPU: ..}}")
        resources = {r: _quantity(v, path, f"nodes[{k}].resources.{r}") for r, v in node["resources"].items()}
        nodes.append(NodeShape(str(node.get("name", f"node{k}")), resources, int(node.get("count", 1))))
    return nodes


def _sbatch_resources(text: str, path: Path) -> tuple[list[dict[str, float]], dict[str, float]]:
    """The custom resources a SLURM script gives by node index (`NODE_RESOURCES=('{json}' ...)`)
    and to every further node (`OTHER_NODE_RESOURCES='{json}'`), as cluster/slurm.sbatch declares."""
    listed = re.search(r"^NODE_RESOURCES=\((.*)\)", text, flags=re.M)
    other = re.search(r"^OTHER_NODE_RESOURCES=(.*)$", text, flags=re.M)
    try:
        per_node = [_custom(v, path, f"NODE_RESOURCES[{k}]") for k, v in enumerate(shlex.split(listed.group(1)))] if listed else []
        rest = _custom(shlex.split(other.group(1), comments=True)[0], path, "OTHER_NODE_RESOURCES") if other else {}
    except ValueError as exc:  # shlex: unbalanced quotes
        raise LauncherError(f"{path}: NODE_RESOURCES / OTHER_NODE_RESOURCES: {exc}") from None
    return per_node, rest


def read_sbatch(text: str, path: Path) -> list[NodeShape]:
    """`#SBATCH --nodes / --cpus-per-task / --gpus-per-node` → the nodes, each with the custom
    resources the script gives its index (node 0 is the Ray head)."""
    opts = dict(re.findall(r"^#SBATCH\s+--([a-z-]+)(?:[= ](\S+))?", text, flags=re.M))
    try:
        count = int(opts.get("nodes", "1").split("-")[-1])
        cpus = float(opts["cpus-per-task"]) * int(opts.get("ntasks-per-node", "1"))
    except (KeyError, ValueError):
        raise LauncherError(f"{path}: needs #SBATCH --nodes and --cpus-per-task") from None
    gpus = float(opts.get("gpus-per-node", "0").split(":")[-1])
    base = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    per_node, rest = _sbatch_resources(text, path)
    nodes = [NodeShape(f"slurm node {k}", {**base, **custom}) for k, custom in enumerate(per_node[:count])]
    first, n_rest = len(per_node), count - len(per_node)
    if n_rest > 0:
        name = f"slurm node {first}" if n_rest == 1 else f"slurm nodes {first}-{count - 1}"
        nodes.append(NodeShape(name, {**base, **rest}, n_rest))
    return nodes


_YAML_READERS: list[tuple[Callable[[dict], bool], Callable[[dict, Path], list[NodeShape]]]] = [
    (lambda d: d.get("kind") in ("RayJob", "RayCluster"), read_kuberay),
    (lambda d: "available_node_types" in d, read_ray_up),
    (lambda d: "nodes" in d, read_node_list),
]


def read_node_shapes(path: str | Path) -> list[NodeShape]:
    """The nodes a launcher file would start (KubeRay, `ray up`, SLURM script or a node list)."""
    path = Path(path)
    if not path.is_file():
        raise LauncherError(f"{path}: file not found")
    text = path.read_text()
    if path.suffix in (".sbatch", ".sh") or text.lstrip().startswith("#!"):
        return read_sbatch(text, path)
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError as exc:
        raise LauncherError(f"{path}: not valid YAML: {exc}") from None
    for doc in docs:
        for matches, reader in _YAML_READERS:
            if matches(doc):
                return reader(doc, path)
    raise LauncherError(f"{path}: not a KubeRay RayJob/RayCluster, a `ray up` config, a SLURM script or a node list")


def live_node_shapes(nodes: list[dict]) -> list[NodeShape]:
    """Node shapes of a live cluster from `ray.nodes()` (alive nodes, their total resources)."""
    return [NodeShape(f"{n.get('NodeManagerAddress', '?')}/{n['NodeID'][:6]}", dict(n["Resources"])) for n in nodes if n.get("Alive")]
