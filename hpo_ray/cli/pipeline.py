"""The stages `hpo-ray demo` and `hpo-ray study` share: a resumable stage header, the tiny model + SFT
start, and one HPO run whose best verified checkpoint becomes a policy directory."""

import shutil
from pathlib import Path

from hpo_ray.config import RunConfig


def stage(name: str, done: bool, tag: str) -> bool:
    """Print a stage header; returns whether to run it (a stage whose output exists is skipped)."""
    print(f"[{tag}] {name}: {'already done, skipped' if done else 'running'}", flush=True)
    return not done


def build_tiny_model(cfg: RunConfig, train_manifest: Path, init: Path, tag: str) -> None:
    """The config-built tiny policy (tokenizer trained on `train_manifest`'s text) at `init`."""
    if stage("build the tiny model", (init / "config.json").is_file(), tag):
        from hpo_ray.model.prepare import prepare_tiny_policy

        prepare_tiny_policy(cfg, [train_manifest], init)


def supervised_start(cfg: RunConfig, init: Path, sft: Path, sft_data: Path, name: str, tag: str) -> None:
    """Dialogue-form SFT of `init` on `sft_data` into `sft`: the HPO starting point."""
    if stage(name, (sft / "sft_summary.json").is_file(), tag):
        from hpo_ray.sft import finetune

        finetune(cfg, init, sft, sft_data)


def run_hpo(cfg: RunConfig, run_dir: Path, out: Path) -> None:
    """HPO from `cfg.model.path` (resumed when `run_dir` holds a run); the newest verified checkpoint's
    policy is copied to `out` (HF format)."""
    from hpo_ray.cli.train_cmd import connect, preflight
    from hpo_ray.env import apply_ray_mode

    apply_ray_mode(cfg.cluster.address, cfg.cluster.local_auth)  # before `import ray`, as connect() does
    import ray

    preflight(cfg)
    if not ray.is_initialized():
        connect(cfg)
    from actors.controller import train
    from hpo_ray.run_dir import prepare_run_dir

    train(cfg, run_dir, cfg.algorithm.steps, resume=prepare_run_dir(run_dir, "resume_or_start"))
    ray.shutdown()
    from hpo_ray.learner.checkpoint import CheckpointStore

    store = CheckpointStore(run_dir / "checkpoints", keep_best=cfg.checkpoint.keep_best, keep_last=cfg.checkpoint.keep_last)
    latest = store.latest_verified().info
    if latest is None:
        raise RuntimeError(f"HPO wrote no checkpoint under {run_dir}")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(latest.path / "policy", out)
