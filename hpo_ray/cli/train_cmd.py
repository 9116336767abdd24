"""`hpo-ray train --config C [--run-dir DIR] [--steps N] [--resume | --resume-or-start | --overwrite] [overrides]`.

Runs against the cluster in RAY_ADDRESS / cluster.address (e.g. under `ray job submit`; `auto` finds
a `ray start` cluster on this machine), or starts a fresh local Ray when neither is set. Config,
manifests, the policy directory (config.json, safetensors headers) and the run directory are checked
before any actor starts. One run per run directory: a used one needs `--resume` or `--overwrite`.
"""

import json
import os
from pathlib import Path

from hpo_ray.cli.common import add_config_arguments, config_from_args
from hpo_ray.config import ConfigError, RunConfig
from hpo_ray.data.manifest import Manifest
from hpo_ray.data.windows import check_run_talks, training_talks
from hpo_ray.model.files import check_policy_dir
from hpo_ray.run_dir import prepare_run_dir


def add_arguments(parser) -> None:
    parser.add_argument("--run-dir", type=Path, default=None, help="output folder (default run.dir)")
    parser.add_argument("--steps", type=int, default=None, help="total HPO steps (default algorithm.steps)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--resume",
        dest="start",
        action="store_const",
        const="resume",
        default="new",
        help="continue the run dir's run from its latest checkpoint (an error when there is none)",
    )
    start.add_argument(
        "--resume-or-start",
        dest="start",
        action="store_const",
        const="resume_or_start",
        help="resume when the run dir has a checkpoint, else start fresh there (for chained jobs)",
    )
    start.add_argument(
        "--overwrite",
        dest="start",
        action="store_const",
        const="overwrite",
        help="delete the run dir's previous run (logs, checkpoints) and start fresh",
    )
    add_config_arguments(parser, required=True)


def preflight(cfg: RunConfig) -> None:
    """Everything that can be checked without Ray: data, the policy's config and weight files, feature
    width, talk lengths."""
    if cfg.model.path is None:
        raise ConfigError("model.path", "required for training (an HF model directory)")
    width = check_policy_dir(cfg.model.path).get("hidden_size")
    if cfg.data.train_manifest is None:
        raise ConfigError("data.train_manifest", "required for training")
    train = training_talks(Manifest(cfg.data.train_manifest, width=width, frame_seconds=cfg.data.frame_seconds), cfg.data.max_talk_seconds)
    if cfg.algorithm.talks_per_step > len(train):
        raise ConfigError(
            "algorithm.talks_per_step",
            f"{cfg.algorithm.talks_per_step} is more than the {len(train)} "
            f"talks (windows of data.max_talk_seconds) in data.train_manifest ({cfg.data.train_manifest})",
        )
    if cfg.data.dev_manifest is not None:
        Manifest(cfg.data.dev_manifest, width=width, frame_seconds=cfg.data.frame_seconds)
    check_run_talks(cfg)


def connect(cfg: RunConfig) -> None:
    """Join the Ray in cluster.address / RAY_ADDRESS as it is configured, or start a single-node Ray
    with the local-only settings (loopback binding, cluster.local_auth), applied before `import ray`."""
    from hpo_ray.env import apply_ray_mode

    apply_ray_mode(cfg.cluster.address, cfg.cluster.local_auth)
    import ray

    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(
            address="local",
            num_cpus=cfg.cluster.num_cpus,
            include_dashboard=cfg.cluster.include_dashboard,
            dashboard_host=cfg.cluster.dashboard_host,
            log_to_driver=cfg.logging.level == "DEBUG",
        )


def run(args) -> int:
    cfg = config_from_args(args)
    run_dir = args.run_dir or cfg.run.dir
    steps = args.steps if args.steps is not None else cfg.algorithm.steps
    preflight(cfg)
    resume = prepare_run_dir(Path(run_dir), args.start)
    connect(cfg)
    from hpo_ray.cli.plan_cmd import check_live_cluster

    check_live_cluster(cfg)
    from actors.controller import train

    history = train(cfg, Path(run_dir), steps, resume=resume)
    last = history[-1] if history else {}
    keys = ("step", "reward/quality", "reward/stream_laal", "val/quality", "val/stream_laal_talk_mean", "time/step")
    print(json.dumps({k: last.get(k) for k in keys}))
    return 0
