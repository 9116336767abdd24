"""`hpo-ray train --config C [--run-dir DIR] [--steps N] [--resume] [overrides]`: the HPO job on Ray.

Runs against the cluster in RAY_ADDRESS / cluster.address (e.g. under `ray job submit`; `auto` finds
a `ray start` cluster on this machine), or starts a fresh local Ray when neither is set. Config, manifests and the policy directory are checked before any
actor starts.
"""

import json
import os
from pathlib import Path

from hpo_ray.cli.common import add_config_arguments, config_from_args
from hpo_ray.config import ConfigError, RunConfig
from hpo_ray.data.manifest import Manifest
from hpo_ray.data.windows import check_run_talks


def add_arguments(parser) -> None:
    parser.add_argument("--run-dir", type=Path, default=None, help="output folder (default run.dir)")
    parser.add_argument("--steps", type=int, default=None, help="total HPO steps (default algorithm.steps)")
    parser.add_argument("--resume", action="store_true", help="continue from the run dir's latest checkpoint")
    add_config_arguments(parser, required=True)


def preflight(cfg: RunConfig) -> None:
    """Everything that can be checked without Ray: data, model directory, feature width, talk lengths."""
    if cfg.model.path is None or not (Path(cfg.model.path) / "config.json").is_file():
        raise ConfigError("model.path", f"{cfg.model.path} is not an HF model directory (config.json missing)")
    width = json.loads((Path(cfg.model.path) / "config.json").read_text()).get("hidden_size")
    for key in ("train_manifest", "dev_manifest"):
        path = getattr(cfg.data, key)
        if path is None:
            if key == "train_manifest":
                raise ConfigError("data.train_manifest", "required for training")
            continue
        Manifest(path, width=width, frame_seconds=cfg.data.frame_seconds)
    check_run_talks(cfg)


def connect(cfg: RunConfig) -> None:
    import ray

    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", num_cpus=cfg.cluster.num_cpus, include_dashboard=cfg.cluster.include_dashboard,
                 dashboard_host=cfg.cluster.dashboard_host, log_to_driver=cfg.logging.level == "DEBUG")


def run(args) -> int:
    cfg = config_from_args(args)
    run_dir = args.run_dir or cfg.run.dir
    steps = args.steps if args.steps is not None else cfg.algorithm.steps
    preflight(cfg)
    connect(cfg)
    from actors.controller import train

    history = train(cfg, Path(run_dir), steps, resume=args.resume)
    last = history[-1] if history else {}
    keys = ("step", "reward/quality", "reward/stream_laal", "val/quality", "val/stream_laal", "time/step")
    print(json.dumps({k: last.get(k) for k in keys}))
    return 0
