"""The `QualityScorer` interface (batched, higher is better), the scorer registry and `make_scorer`.

A scorer is one module that calls `register_scorer(ScorerSpec(...))` with what the rest of the run
needs to know about it; `reward.quality` names one. Built in: chrF and BLEU (`sacre.py`, no model),
COMET (`comet_scorer.py`) and MetricX-24 (`metricx.py`), which load a local checkpoint.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hpo_ray.config.base import ConfigError
from hpo_ray.registry import Registry, check_installed

if TYPE_CHECKING:
    from hpo_ray.config import RewardConfig


class QualityScorer(Protocol):
    """Scores (source, hypothesis, reference) triples of one target language; higher is better."""

    worst: float
    """The score given to an unaligned reference sentence (the scale's floor)."""

    def score(self, src: Sequence[str], hyp: Sequence[str], ref: Sequence[str], lang: str) -> list[float]:
        """One score per triple, for target language `lang`; the three lists have equal length."""
        ...


@dataclass(frozen=True)
class ScorerSpec:
    """A registered quality scorer: how to build it and how the reward, config and metrics treat it."""

    name: str
    factory: Callable[["RewardConfig", str], QualityScorer]  # (reward config, resolved device) -> scorer
    default_target: float  # the hinge's quality bar when reward.target_quality is None (scorer's scale)
    histogram_bounds: tuple[float, ...]  # Ray histogram buckets (> 0) of sign × score
    sign: float = 1.0  # −1 when the native number is an error (MetricX): metrics observe sign × score
    scale: str = ""  # how to read the number, shown in metric descriptions ("0-100", "error = -score")
    sentence_level: bool = True  # scores one sentence at a time; the reward needs per-sentence scores
    needs_model_path: bool = False  # reward.quality_model_path must name a local checkpoint
    requires: tuple[str, ...] = ()  # importable modules it needs (optional dependencies)
    install_hint: str = ""  # how to get them, shown when one is missing


SCORERS: Registry[ScorerSpec] = Registry(
    "quality scorer", "reward.quality", builtins=("hpo_ray.reward.sacre", "hpo_ray.reward.comet_scorer", "hpo_ray.reward.metricx")
)


def register_scorer(spec: ScorerSpec, replace: bool = False) -> ScorerSpec:
    """Make `spec.name` a valid `reward.quality` (call it at the bottom of the scorer's module)."""
    if any(b <= 0 for b in spec.histogram_bounds) or list(spec.histogram_bounds) != sorted(set(spec.histogram_bounds)):
        raise ValueError(f"quality scorer {spec.name!r}: histogram_bounds must be positive and increasing")
    return SCORERS.register(spec, replace)


def scorer_spec(name: str) -> ScorerSpec:
    """The spec of the scorer registered as `name` (a ConfigError at reward.quality listing the names)."""
    return SCORERS.get(name)


def check_scorer_config(cfg: "RewardConfig") -> None:
    """The scorer's cross-field needs, raised at the field to fix before any actor starts."""
    spec = scorer_spec(cfg.quality)
    if not spec.sentence_level:
        raise ConfigError("reward.quality", f"{spec.name} is a corpus-level scorer; the reward's hinge needs one score per sentence")
    if spec.needs_model_path and cfg.quality_model_path is None:
        raise ConfigError("reward.quality_model_path", f"required for reward.quality={spec.name} (a local model directory)")


def make_scorer(cfg: "RewardConfig") -> QualityScorer:
    """The scorer named by `reward.quality`, after checking its optional dependencies are installed."""
    from hpo_ray.devices import resolve_device

    check_scorer_config(cfg)
    spec = scorer_spec(cfg.quality)
    check_installed(spec, "reward.quality")
    device = resolve_device(cfg.device, "reward.device") if spec.needs_model_path else "cpu"
    return spec.factory(cfg, device)
