"""Export step metrics through `ray.util.metrics`, so they show in the Ray dashboard and Prometheus."""

import re

from ray.util.metrics import Counter, Gauge


def metric_name(key: str) -> str:
    """`reward/quality` -> `hpo_reward_quality` (Prometheus-safe)."""
    return "hpo_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


class RayMetrics:
    """One Gauge per step metric (tagged with the run name), created on first use."""

    def __init__(self, run_name: str):
        self.tags = {"run": run_name}
        self.gauges: dict[str, Gauge] = {}
        self.restarts = Counter("hpo_actor_restarts", description="actor restarts seen by the controller", tag_keys=("run", "pool"))

    def set(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or value != value:
                continue
            name = metric_name(key)
            if name not in self.gauges:
                self.gauges[name] = Gauge(name, description=f"hpo-ray step metric {key}", tag_keys=("run",))
            self.gauges[name].set(float(value), tags=self.tags)

    def restarted(self, pool: str, n: int = 1) -> None:
        self.restarts.inc(n, tags={**self.tags, "pool": pool})
