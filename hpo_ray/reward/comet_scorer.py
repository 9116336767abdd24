"""COMET scores (unbabel-comet regression or unified models) from a local checkpoint, batched in-process; `comet`."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .comet_compat import load_comet
from .quality import ScorerSpec, register_scorer


def _to_device(batch: Any, device: str) -> Any:
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch.to(device) if hasattr(batch, "to") else batch


class CometScorer:
    """COMET (roughly 0–1, higher is better) without Lightning's Trainer: prepare_sample → predict_step."""

    worst = 0.0

    def __init__(self, path: Path, batch_size: int, device: str):
        self.model = load_comet(path).to(device)
        self.batch_size = batch_size
        self.device = device

    def score(self, src: Sequence[str], hyp: Sequence[str], ref: Sequence[str], lang: str) -> list[float]:
        """COMET of each (src, mt, ref) triple."""
        import torch

        rows = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(src, hyp, ref)]
        scores: list[float] = []
        for i in range(0, len(rows), self.batch_size):
            batch = self.model.prepare_sample(rows[i : i + self.batch_size], stage="predict")
            with torch.inference_mode():
                out = self.model.predict_step(_to_device(batch, self.device))
            scores.extend(float(s) for s in out.scores.float().cpu().view(-1))
        return scores


register_scorer(
    ScorerSpec(
        "comet",
        lambda cfg, device: CometScorer(cfg.quality_model_path, cfg.quality_batch_size, device),
        default_target=0.8,
        histogram_bounds=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        scale="about 0-1",
        needs_model_path=True,
        requires=("comet",),
        install_hint="pip install 'hpo-ray[comet]' && pip install --no-deps unbabel-comet (see the Makefile)",
    )
)
