"""Step metrics to a JSONL log and TensorBoard (Ray metrics are exported by the controller)."""

import json
import math
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per step to `<run_dir>/metrics.jsonl` and mirrors scalars to TensorBoard.
    `purge_after=S` (a resume from step S): TensorBoard hides the earlier events of steps > S."""

    def __init__(self, run_dir: Path, jsonl: bool = True, tensorboard: bool = True, purge_after: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl" if jsonl else None
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            folder = Path(run_dir) / "tensorboard"
            purge = purge_after + 1 if purge_after is not None and folder.is_dir() else None
            self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {
            k: (float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else None)
            for k, v in metrics.items()
            if isinstance(v, (int, float))
        }
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **clean}) + "\n")
        if self.writer is not None:
            for k, v in clean.items():
                if v is not None:
                    self.writer.add_scalar(k, v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: Path) -> list[dict]:
    """All logged steps, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
