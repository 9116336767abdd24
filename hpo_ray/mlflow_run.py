"""Optional MLflow tracking of a run: the resolved config as parameters, step metrics, and the exported
policy and validation report as artifacts.

The MLflow run id is kept in `<run_dir>/mlflow_run.json`, so `--resume` appends to the same MLflow run.
"""

import json
import math
import time
from pathlib import Path

from hpo_ray.config import ConfigError, MlflowConfig

RUN_FILE = "mlflow_run.json"
PARAMS_PER_CALL = 100  # MLflow's log_batch limit for params
MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}}` -> `{"a.b": "1"}`; lists and None as JSON."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            flat[path] = text[:MAX_PARAM_CHARS]
    return flat


def _client(tracking_uri: str | None):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ConfigError("logging.mlflow.enabled", "mlflow is not installed: pip install 'hpo-ray[mlflow]'") from exc
    return MlflowClient(tracking_uri)


class MlflowRun:
    """One MLflow run per hpo-ray run dir; created on the first start, reopened on resume."""

    def __init__(self, cfg: MlflowConfig, run_dir: Path, config: dict, default_name: str, resume: bool):
        self.client = _client(cfg.tracking_uri)
        self.path = Path(run_dir) / RUN_FILE
        saved = json.loads(self.path.read_text()) if resume and self.path.is_file() else None
        if saved is not None:
            self.run_id = saved["run_id"]
            self._reopen()
        else:
            self.run_id = self._create(cfg, cfg.run_name or default_name)
            self.path.write_text(json.dumps({"run_id": self.run_id, "tracking_uri": cfg.tracking_uri}) + "\n")
        self.log_params(flatten(config))

    def _create(self, cfg: MlflowConfig, name: str) -> str:
        experiment = self.client.get_experiment_by_name(cfg.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(cfg.experiment, artifact_location=cfg.artifact_location)
        )
        return self.client.create_run(experiment_id, run_name=name).info.run_id

    def _reopen(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.update_run(self.run_id, status="RUNNING")
        except MlflowException as exc:
            raise ConfigError(
                "logging.mlflow.tracking_uri", f"{self.path} names MLflow run {self.run_id}, which this tracking store lacks: {exc}"
            ) from exc

    def log_params(self, params: dict[str, str]) -> None:
        """Parameters the run does not have yet (MLflow parameters are immutable; a resumed run keeps
        the values it started with)."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=new[i : i + PARAMS_PER_CALL])

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(float(v))]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file, or a folder's contents under `artifact_path`."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")
