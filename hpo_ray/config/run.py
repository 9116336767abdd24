"""Run-level config: cluster placement, validation, checkpoints and logging."""

from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from .base import Section, Seed


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
    rollout_resources: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    reward_resources: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    learner_resources: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    max_restarts: NonNegativeInt = 3
    max_task_retries: NonNegativeInt = 2
    include_dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    num_cpus: PositiveInt | None = None
    # Check before any actor starts that every pool fits the live cluster's nodes (`hpo-ray plan`);
    # turn off on an autoscaling cluster whose nodes appear only on demand.
    check_fit: bool = True


class ValidationConfig(Section):
    """Fixed dev-set validation every `every` steps (raw quality and latency, never the reward)."""

    every: PositiveInt = 10
    talks: PositiveInt = 8
    samples: PositiveInt = 1
    at_start: bool = True


class CheckpointConfig(Section):
    """Atomic, verified checkpoints every `every` steps and after the last (with or without a dev set); the
    best are kept by validation quality at a latency budget, not quality alone, plus the `keep_last`
    newest (so resume can fall back when the newest fails verification)."""

    every: PositiveInt = 10
    keep_best: NonNegativeInt = 3
    keep_last: PositiveInt = 2
    criterion: Literal["quality_at_latency", "quality", "latency"] = "quality_at_latency"
    latency_budget: PositiveFloat = 3.0
    latency_penalty: float = Field(10.0, ge=0.0)


class MlflowConfig(Section):
    """Optional MLflow tracking: config as parameters, step metrics, the exported policy and the
    validation report as artifacts. `tracking_uri=None` uses MLflow's own (`MLFLOW_TRACKING_URI`)."""

    enabled: bool = False
    tracking_uri: str | None = None
    experiment: str = "hpo-ray"
    run_name: str | None = None  # default: run.name
    artifact_location: str | None = None  # only used when the experiment is created
    log_policy: bool = True


class LoggingConfig(Section):
    """Where step metrics go: Ray metrics (dashboard/Prometheus), TensorBoard, JSONL, MLflow, a progress bar."""

    ray_metrics: bool = True
    tensorboard: bool = True
    jsonl: bool = True
    progress: bool = True
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mlflow: MlflowConfig = MlflowConfig()


class RunSection(Section):
    """Identity of the run, and the plugin modules it imports: each registers its own quality scorers,
    latency metrics or rollout engines (`hpo_ray.registry`), in every process that reads the config."""

    name: str = "hpo"
    dir: Path = Path("runs/default")
    seed: Seed = 0
    plugins: list[str] = Field(default_factory=list)  # importable module names, e.g. ["my_lab.scorers"]
