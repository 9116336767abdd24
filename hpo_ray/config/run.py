"""Run-level config: cluster placement, validation, checkpoints and logging."""

from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from .base import Section


class ClusterConfig(Section):
    """Ray placement: pool sizes and resources; `address=None` starts a local Ray."""

    address: str | None = None
    # Auth of the single-node Ray hpo-ray starts when `address` and RAY_ADDRESS are unset; a cluster it
    # joins keeps its own (e.g. RAY_AUTH_MODE=token with RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH).
    local_auth: Literal["disabled", "token"] = "disabled"
    num_rollout_workers: PositiveInt = 1
    num_reward_actors: PositiveInt = 1
    colocate: bool = False
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    cpus_per_rollout_worker: PositiveFloat = 1.0
    cpus_per_reward_actor: PositiveFloat = 0.5
    cpus_per_learner: PositiveFloat = 0.5
    gpus_per_rollout_worker: float = Field(0.0, ge=0.0)
    gpus_per_reward_actor: float = Field(0.0, ge=0.0)
    gpus_per_learner: float = Field(0.0, ge=0.0)
    rollout_resources: dict[str, float] = Field(default_factory=dict)
    reward_resources: dict[str, float] = Field(default_factory=dict)
    learner_resources: dict[str, float] = Field(default_factory=dict)
    max_restarts: NonNegativeInt = 3
    max_task_retries: NonNegativeInt = 2
    include_dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    num_cpus: PositiveInt | None = None


class ValidationConfig(Section):
    """Fixed dev-set validation every `every` steps (raw quality and latency, never the reward)."""

    every: PositiveInt = 10
    talks: PositiveInt = 8
    samples: PositiveInt = 1
    at_start: bool = True


class CheckpointConfig(Section):
    """Atomic checkpoints; the best are kept by quality at a latency budget, not quality alone."""

    every: PositiveInt = 10
    keep_best: NonNegativeInt = 3
    criterion: Literal["quality_at_latency", "quality", "latency"] = "quality_at_latency"
    latency_budget: PositiveFloat = 3.0
    latency_penalty: float = Field(10.0, ge=0.0)


class LoggingConfig(Section):
    """Where step metrics go: Ray metrics (dashboard/Prometheus), TensorBoard, JSONL, a progress bar."""

    ray_metrics: bool = True
    tensorboard: bool = True
    jsonl: bool = True
    progress: bool = True
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    dump_rollouts: bool = False


class RunSection(Section):
    """Identity of the run."""

    name: str = "hpo"
    dir: Path = Path("runs/default")
    seed: int = 0
