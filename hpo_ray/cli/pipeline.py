"""The stages `hpo-ray demo` and `hpo-ray study` share: a resumable stage header (timed by a `StageLog`),
the tiny model + SFT start, and one HPO run whose best verified checkpoint becomes a policy directory."""

import json
import shutil
import time
from pathlib import Path

from hpo_ray.config import RunConfig


class StageLog:
    """The stage headers of one pipeline run, timed: a stage that runs lasts from its header to the next
    one (or to `close()`). Times are kept in `path` across reruns, so a stage skipped now keeps the
    wall time of the run that did it."""

    def __init__(self, tag: str, path: Path):
        self.tag, self.path = tag, Path(path)
        self.seconds: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.order: list[str] = []
        self.ran: set[str] = set()
        self._open: tuple[str, float] | None = None

    def __call__(self, name: str, done: bool) -> bool:
        """`stage()` under this log's tag; returns whether to run the stage."""
        self._end()
        self.order.append(name)
        run = stage(name, done, self.tag)
        if run:
            self._open = (name, time.perf_counter())
        return run

    def close(self) -> None:
        """End the running stage and save every stage's time."""
        self._end()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.seconds, indent=2) + "\n")

    def _end(self) -> None:
        if self._open is not None:
            name, start = self._open
            self.seconds[name] = time.perf_counter() - start
            self.ran.add(name)
            self._open = None

    def total(self) -> float:
        """Wall seconds of this run's stages (each from the run that did it)."""
        return sum(self.seconds.get(name, 0.0) for name in self.order)

    def table(self) -> list[str]:
        """Markdown rows: each stage of this run with its wall time (from the run that did it)."""
        rows = ["| stage | wall time (s) |", "|---|---|"]
        for name in self.order:
            if name in self.ran:
                cell = f"{self.seconds[name]:.1f}"
            elif name in self.seconds:
                cell = f"{self.seconds[name]:.1f} (earlier run)"
            else:
                cell = "n/a (done before times were kept)"
            rows.append(f"| {name} | {cell} |")
        return rows


def stage(name: str, done: bool, tag: "str | StageLog") -> bool:
    """Print a stage header (timed when `tag` is a `StageLog`); returns whether to run it (a stage whose
    output exists is skipped)."""
    if isinstance(tag, StageLog):
        return tag(name, done)
    print(f"[{tag}] {name}: {'already done, skipped' if done else 'running'}", flush=True)
    return not done


def build_tiny_model(cfg: RunConfig, train_manifest: Path, init: Path, tag: "str | StageLog", speech: bool = False) -> None:
    """The config-built tiny policy (tokenizer trained on `train_manifest`'s text) at `init`; with `speech`,
    plus a freshly initialised speech encoder from `model.speech` (a speech LLM)."""
    done = (init / "config.json").is_file()
    if speech:
        from hpo_ray.speech.encoder import ENCODER_FOLDER

        done = done and (init / ENCODER_FOLDER / "config.json").is_file()
    if stage("build the tiny model" + (" + speech encoder" if speech else ""), done, tag):
        from hpo_ray.model.prepare import prepare_tiny_policy

        prepare_tiny_policy(cfg, [train_manifest], init, speech=speech)


def supervised_start(cfg: RunConfig, init: Path, sft: Path, sft_data: Path, name: str, tag: "str | StageLog") -> None:
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
