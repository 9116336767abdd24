"""Atomic checkpoint directories with a `latest` pointer and keep-best bookkeeping.

A checkpoint is written into `root/.tmp-step_XXXXXXXX`, fsynced, then renamed to
`root/step_XXXXXXXX` (rename is atomic on one filesystem), so a crash never leaves a half-visible
checkpoint; `root/latest` names the newest one and is itself replaced atomically. Each checkpoint
holds `trainer_state.json` (step, data position, RNG states, metrics: JSON only, no pickle) and
`checkpoint.json` (step, criterion, time), plus whatever the caller writes (DeepSpeed state, an HF
export). Multi-rank saves: rank 0 calls `begin`, every rank writes into `tmp_path(step)` (shared
filesystem), then after a barrier rank 0 calls `commit`.

`commit` also writes `manifest.json` (every file's size and SHA-256, fsync'd before the rename).
Resume goes through `latest_verified`: the newest checkpoint whose files match their manifest and
whose torch files load without code; newer ones that fail are reported (file, expected vs actual)
and skipped, and `latest` is rewritten to what verified; it is never trusted on its own.
"""

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_ray.errors import InputError
from hpo_ray.learner.checkpoint_manifest import verify_dir, write_manifest

log = logging.getLogger(__name__)

PREFIX = "step_"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
META_FILE = "checkpoint.json"
STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint on disk."""

    step: int
    path: Path
    criterion: float | None
    created: float


@dataclass(frozen=True)
class Rejected:
    """A checkpoint directory that failed verification, and why (one line per problem)."""

    path: Path
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path.name}: " + "; ".join(self.problems)


@dataclass(frozen=True)
class Verified:
    """What to resume from (None: no checkpoint at all) and the newer checkpoints skipped on the way."""

    info: CheckpointInfo | None
    rejected: tuple[Rejected, ...] = ()


class CheckpointError(InputError):
    """Checkpoints exist but none of them can be trusted (bad input to a resume: one line, exit 2)."""


class CheckpointStore:
    """Checkpoints under `root`: keeps the `keep_last` newest and the `keep_best` best by criterion."""

    def __init__(self, root: str | Path, keep_best: int, keep_last: int = 1, higher_is_better: bool = True):
        if keep_best < 0 or keep_last < 1:
            raise ValueError(f"need keep_best ≥ 0 and keep_last ≥ 1, got {keep_best} and {keep_last}")
        self.root = Path(root)
        self.keep_best, self.keep_last, self.higher_is_better = keep_best, keep_last, higher_is_better
        self.root.mkdir(parents=True, exist_ok=True)

    def name(self, step: int) -> str:
        """Directory name of the checkpoint of `step`."""
        if step < 0:
            raise ValueError(f"step must be ≥ 0, got {step}")
        return f"{PREFIX}{step:08d}"

    def tmp_path(self, step: int) -> Path:
        """Where the checkpoint of `step` is written before it becomes visible."""
        return self.root / f"{TMP_PREFIX}{self.name(step)}"

    def begin(self, step: int) -> Path:
        """Start writing the checkpoint of `step`: a fresh, empty temporary directory."""
        tmp = self.tmp_path(step)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        return tmp

    def commit(self, step: int, trainer_state: dict[str, Any], criterion: float | None = None) -> Path:
        """Finish `step`: write the JSON files, fsync, rename into place, update `latest`, clean up."""
        tmp = self.tmp_path(step)
        if not tmp.is_dir():
            raise FileNotFoundError(f"no checkpoint in progress for step {step} ({tmp} missing; call begin first)")
        if criterion is not None and not math.isfinite(criterion):
            raise ValueError(f"checkpoint criterion must be finite, got {criterion}")
        _write_json(tmp / STATE_FILE, trainer_state, "trainer_state")
        _write_json(tmp / META_FILE, {"step": step, "criterion": criterion, "created": time.time()}, "checkpoint meta")
        write_manifest(tmp)
        _fsync_tree(tmp)
        final = self.root / self.name(step)
        trash = None
        if final.exists():  # re-saving a step (after a resume): move the old copy aside first
            trash = self.root / f"{TRASH_PREFIX}{final.name}-{time.time_ns()}"
            os.replace(final, trash)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        newest = self.latest()
        _atomic_write_text(self.root / LATEST_FILE, (newest.path if newest else final).name + "\n")
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        self.cleanup()
        return final

    def abort(self, step: int) -> None:
        """Drop the unfinished checkpoint of `step`."""
        shutil.rmtree(self.tmp_path(step), ignore_errors=True)

    @contextmanager
    def writing(self, step: int, trainer_state: dict[str, Any], criterion: float | None = None) -> Iterator[Path]:
        """`with store.writing(step, state) as d:` write files into d; committed on success, dropped on error."""
        tmp = self.begin(step)
        try:
            yield tmp
        except BaseException:
            self.abort(step)
            raise
        self.commit(step, trainer_state, criterion)

    def save(
        self, step: int, trainer_state: dict[str, Any], criterion: float | None = None, save_fn: Callable[[Path], None] | None = None
    ) -> Path:
        """Single-process save: `save_fn(dir)` writes the payload (e.g. an HF export), then commit."""
        with self.writing(step, trainer_state, criterion) as tmp:
            if save_fn is not None:
                save_fn(tmp)
        return self.root / self.name(step)

    def checkpoints(self) -> list[CheckpointInfo]:
        """Complete checkpoints, oldest first (a directory without a readable meta file is ignored)."""
        out = []
        for d in self.root.glob(f"{PREFIX}*"):
            info = _read_info(d)
            if info is not None:
                out.append(info)
        return sorted(out, key=lambda i: i.step)

    def latest(self) -> CheckpointInfo | None:
        """The committed checkpoint with the highest step, unverified (for bookkeeping; resume goes
        through `latest_verified`). The `latest` file mirrors it for people and external tools."""
        found = self.checkpoints()
        return found[-1] if found else None

    def verify(self, path: str | Path) -> list[str]:
        """Problems of checkpoint directory `path` (empty: intact); see `checkpoint_manifest.verify_dir`."""
        path = Path(path)
        problems = verify_dir(path)
        if not problems:
            info = _read_info(path)
            if info is None:
                problems = [f"{META_FILE}: unreadable"]
            elif path.name != self.name(info.step):
                problems = [f"{META_FILE}: says step {info.step}, but the directory is {path.name}"]
        return problems

    def latest_verified(self) -> Verified:
        """The newest checkpoint that verifies, with a warning per newer one that does not; `latest`
        is rewritten to name it. Raises `CheckpointError` when checkpoints exist but none verifies."""
        rejected: list[Rejected] = []
        for path in self._step_dirs_newest_first():
            problems = self.verify(path)
            if problems:
                rejected.append(Rejected(path, tuple(problems)))
                log.warning("checkpoint %s failed verification, not resuming from it: %s", path, "; ".join(problems))
                continue
            info = _read_info(path)
            self._point_latest_at(info)
            if rejected:
                log.warning("resuming from %s, the newest intact checkpoint", path)
            return Verified(info, tuple(rejected))
        if rejected:
            raise CheckpointError(f"no intact checkpoint under {self.root}: " + " | ".join(str(r) for r in rejected))
        return Verified(None)

    def _step_dirs_newest_first(self) -> list[Path]:
        """Every `step_N` directory, readable meta or not (so a damaged newest one is reported, not skipped)."""
        dirs = [d for d in self.root.glob(f"{PREFIX}*") if d.is_dir() and d.name[len(PREFIX) :].isdigit()]
        return sorted(dirs, key=lambda d: int(d.name[len(PREFIX) :]), reverse=True)

    def _point_latest_at(self, info: CheckpointInfo) -> None:
        pointer = self.root / LATEST_FILE
        current = pointer.read_text().strip() if pointer.is_file() else None
        if current != info.path.name:
            if current is not None:
                log.warning("%s named %s; it now names %s, the newest checkpoint that verifies", pointer, current, info.path.name)
            _atomic_write_text(pointer, info.path.name + "\n")

    def best(self) -> list[CheckpointInfo]:
        """Checkpoints with a criterion, best first."""
        scored = [i for i in self.checkpoints() if i.criterion is not None]
        return sorted(scored, key=lambda i: (i.criterion, i.step), reverse=self.higher_is_better)

    def cleanup(self) -> list[Path]:
        """Delete checkpoints outside the newest `keep_last`, the best `keep_best` and `latest`, and
        leftovers of crashed writes (so call it only while no save is in progress). Returns them."""
        infos = self.checkpoints()
        keep = {i.path for i in infos[-self.keep_last :]} | {i.path for i in self.best()[: self.keep_best]}
        latest = self.latest()
        if latest is not None:
            keep.add(latest.path)
        removed = []
        for i in infos:
            if i.path not in keep:
                trash = self.root / f"{TRASH_PREFIX}{i.path.name}-{time.time_ns()}"
                os.replace(i.path, trash)  # invisible first, then deleted
                shutil.rmtree(trash, ignore_errors=True)
                removed.append(i.path)
        for d in list(self.root.glob(f"{TRASH_PREFIX}*")):
            shutil.rmtree(d, ignore_errors=True)
        return removed + self.remove_stale_tmp()

    def remove_stale_tmp(self) -> list[Path]:
        """Delete temporary directories left by crashed writers (call when no save is in progress)."""
        stale = [d for d in self.root.glob(f"{TMP_PREFIX}{PREFIX}*") if d.is_dir()]
        for d in stale:
            shutil.rmtree(d, ignore_errors=True)
        return stale


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """The trainer state (step, data position, RNG, ...) saved in checkpoint directory `path`."""
    f = Path(path) / STATE_FILE
    try:
        return json.loads(f.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{f}: not a complete checkpoint (no {STATE_FILE})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{f}: not valid JSON ({exc})") from None


def _read_info(d: Path) -> CheckpointInfo | None:
    try:
        meta = json.loads((d / META_FILE).read_text())
        return CheckpointInfo(int(meta["step"]), d, meta["criterion"], float(meta["created"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_json(path: Path, data: Any, what: str) -> None:
    try:
        text = json.dumps(data, indent=1, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from None
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
