"""One run per run directory: how a run starts in its folder, and its logs cut back on resume.

Step k is the k-th update everywhere: `data_order.jsonl` line k lists the talks it drew,
`metrics.jsonl` line k what it measured (line 0: validation before any update), `step_0000000k`
the state after it. Resuming from step S keeps the log lines of steps ≤ S, so no step appears twice.
"""

import json
import os
import shutil
from pathlib import Path
from typing import Literal

from hpo_ray.errors import InputError

StartMode = Literal["new", "overwrite", "resume", "resume_or_start"]
LOG_FILES = ("metrics.jsonl", "data_order.jsonl")
# what a run writes into its folder; `overwrite` removes exactly these
RUN_OUTPUTS = ("config.yaml", *LOG_FILES, "tensorboard", "checkpoints", "validation_report.json", "mlflow_run.json")


class RunDirError(InputError):
    """The run directory does not fit the way the run was asked to start."""


def has_checkpoint(run_dir: Path) -> bool:
    """Whether `run_dir/checkpoints` holds a committed checkpoint (not yet verified)."""
    from hpo_ray.learner.checkpoint import META_FILE, PREFIX

    root = Path(run_dir) / "checkpoints"
    return root.is_dir() and any((d / META_FILE).is_file() for d in root.glob(f"{PREFIX}*"))


def prepare_run_dir(run_dir: Path, mode: StartMode) -> bool:
    """Check (and for `overwrite` / a fresh `resume_or_start`, clear) `run_dir`; True when the run resumes."""
    run_dir = Path(run_dir)
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if mode == "new" and entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise RunDirError(
            f"run dir {run_dir} is not empty ({shown}): pass --resume to continue its run, "
            "--overwrite to replace it, or choose another --run-dir"
        )
    if mode == "resume" and not has_checkpoint(run_dir):
        raise RunDirError(
            f"--resume: no checkpoint under {run_dir / 'checkpoints'} (use --resume-or-start to start fresh when there is none)"
        )
    if mode == "resume" or (mode == "resume_or_start" and has_checkpoint(run_dir)):
        return True
    if mode in ("overwrite", "resume_or_start"):
        clear_run_dir(run_dir)
    return False


def clear_run_dir(run_dir: Path) -> None:
    """Remove a previous run's outputs (only the files hpo-ray writes; anything else is refused)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_OUTPUTS)
    if foreign:
        raise RunDirError(
            f"run dir {run_dir} holds files that are not a run's outputs ({', '.join(foreign[:4])}): "
            "not overwriting it; choose another --run-dir"
        )
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def cut_logs(run_dir: Path, through_step: int) -> None:
    """Keep only the JSONL log lines of steps ≤ `through_step` (a line cut short by a kill is dropped)."""
    for name in LOG_FILES:
        path = Path(run_dir) / name
        if not path.is_file():
            continue
        kept = []
        for line in path.read_text().splitlines():
            try:
                step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                continue
            if step <= through_step:
                kept.append(line + "\n")
        tmp = path.with_name(f".tmp-{name}")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
