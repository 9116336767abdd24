"""Export step metrics through `ray.util.metrics` for Prometheus and `cluster/grafana/hpo_dashboard.json`.

The kind is chosen per quantity: what accumulates over a run is a Counter (steps, tokens, retries,
restarts; Prometheus adds `_total`), a per-step level is a Gauge, and per-trajectory distributions
are Histograms (quality, latency, length, staleness). Every series carries the `run` tag.
"""

import re

from ray.util.metrics import Counter, Gauge, Histogram

from hpo_ray.reward.quality import scorer_spec

# step keys whose value is this step's amount: each step adds it to a counter
STEP_AMOUNTS = {
    "tokens/generated": ("hpo_generated_tokens", "tokens sampled by the rollout engines"),
    "tokens/total": ("hpo_sequence_tokens", "tokens in the rollout sequences (prompt + generated)"),
    "rollout/retries": ("hpo_rollout_retries", "rollout requests re-sent after a worker failed"),
}
# step keys that are running totals of restarts of one pool (`actors/<pool>_restarts`)
RESTARTS = re.compile(r"^actors/(\w+)_restarts$")

HISTOGRAMS = {
    "latency": (
        "hpo_trajectory_latency_seconds",
        "HPO latency of each training trajectory (s)",
        [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0],
    ),
    "length": (
        "hpo_trajectory_generated_tokens",
        "tokens generated in each training trajectory",
        [4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0],
    ),
    "staleness": (  # half-integer bounds keep 0 (on-policy), 1, 2, ... versions in buckets of their own
        "hpo_trajectory_staleness",
        "weight versions each training trajectory's sampler was behind the learner (0 = on-policy)",
        [0.5, 1.5, 2.5, 3.5, 4.5, 8.5, 16.5],
    ),
}


def metric_name(key: str) -> str:
    """`reward/quality` -> `hpo_reward_quality` (Prometheus-safe)."""
    return "hpo_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


class RayMetrics:
    """The run's Ray metrics; step gauges are created on first use."""

    def __init__(self, run_name: str, quality_scorer: str):
        self.tags = {"run": run_name}
        self.gauges: dict[str, Gauge] = {}
        self.restarts_seen: dict[str, float] = {}
        run = ("run",)
        self.steps = Counter("hpo_steps", description="HPO steps completed", tag_keys=run)
        self.restarts = Counter("hpo_actor_restarts", description="actor restarts seen by the controller", tag_keys=("run", "pool"))
        self.amounts = {key: Counter(name, description=what, tag_keys=run) for key, (name, what) in STEP_AMOUNTS.items()}
        spec = scorer_spec(quality_scorer)  # buckets, sign and scale are registered with the scorer
        self.quality_sign = spec.sign
        scale = quality_scorer + (f", {spec.scale}" if spec.scale else "")
        self.histograms = {
            key: Histogram(name, description=what, boundaries=bounds, tag_keys=run) for key, (name, what, bounds) in HISTOGRAMS.items()
        }
        self.histograms["quality"] = Histogram(
            "hpo_trajectory_quality",
            boundaries=list(spec.histogram_bounds),
            description=f"quality of each training trajectory ({scale})",
            tag_keys=run,
        )

    def record(self, metrics: dict[str, float], trained: bool) -> None:
        """A logged step: amounts to counters, restart totals to the restart counter, the rest to gauges."""
        if trained:
            self.steps.inc(1, tags=self.tags)
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or value != value:
                continue
            restarted = RESTARTS.match(key)
            if key in self.amounts:
                if value > 0:
                    self.amounts[key].inc(float(value), tags=self.tags)
            elif restarted:
                self._restarts(restarted.group(1), float(value))
            else:
                self._gauge(key).set(float(value), tags=self.tags)

    def observe(self, quality: list[float], latency: list[float], length: list[float], staleness: list[float]) -> None:
        """Per-trajectory values of one training step (staleness too when 0, so its panel always has data)."""
        signed = [self.quality_sign * q for q in quality]
        for key, values in (("quality", signed), ("latency", latency), ("length", length), ("staleness", staleness)):
            for value in values:
                if value == value:
                    self.histograms[key].observe(float(value), tags=self.tags)

    def _restarts(self, pool: str, total: float) -> None:
        new = total - self.restarts_seen.get(pool, 0.0)
        self.restarts_seen[pool] = total
        if new > 0:
            self.restarts.inc(new, tags={**self.tags, "pool": pool})

    def _gauge(self, key: str) -> Gauge:
        name = metric_name(key)
        if name not in self.gauges:
            self.gauges[name] = Gauge(name, description=f"hpo-ray step metric {key}", tag_keys=("run",))
        return self.gauges[name]
