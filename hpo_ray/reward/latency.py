"""Per-sentence latency in seconds: the original HPO formula, standard LAAL, the StreamLAAL mean, and
the registry of latency metrics `reward.latency` chooses from (`hpo`, `laal`, or one of your own).

`delays` are absolute (seconds from talk start, one per hypothesis unit of the sentence); `start`
and `end` are the reference sentence's audio span; `ref_len` is the reference length in units.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hpo_ray.registry import Registry


@dataclass(frozen=True)
class LatencySpec:
    """A registered per-sentence latency metric: `sentence_latency(delays, start, end, ref_len)` in seconds
    (lower is better; the hinge caps it at reward.max_latency). It is only called on non-empty sentences."""

    name: str
    sentence_latency: Callable[[Sequence[float], float, float, int], float]
    summary: str = ""


LATENCIES: Registry[LatencySpec] = Registry("latency metric", "reward.latency")


def register_latency(spec: LatencySpec, replace: bool = False) -> LatencySpec:
    """Make `spec.name` a valid `reward.latency` (call it at the bottom of the metric's module)."""
    return LATENCIES.register(spec, replace)


def latency_spec(name: str) -> LatencySpec:
    """The metric registered as `name` (a ConfigError at reward.latency listing the names)."""
    return LATENCIES.get(name)


def hpo_latency(delays: Sequence[float], start: float, end: float, ref_len: int) -> float:
    """The original's formula: γ = (e−s)/max(R, n), l = mean_j (d_j − s − j·γ), j = 1..n, no cut-off."""
    n = len(delays)
    if n == 0:
        raise ValueError("latency of an empty sentence is undefined (it is unaligned)")
    gamma = (end - start) / max(ref_len, n)
    return sum(delays) / n - start - gamma * (n + 1) / 2


def laal(delays: Sequence[float], start: float, end: float, ref_len: int) -> float:
    """LAAL (SimulEval's definition) with delays relative to `start`, clipped at 0 (StreamLAAL v2.0).

    |X| = end − start; τ = the first unit with d ≥ |X| (included); when the first delay is already
    past |X|, or |X| ≤ 0, the result is the first delay.
    """
    n = len(delays)
    if n == 0:
        raise ValueError("latency of an empty sentence is undefined (it is unaligned)")
    source = end - start
    first = max(0.0, delays[0] - start)
    if source <= 0 or first > source:
        return first
    rate = max(n, ref_len) / source  # units per second, as SimulEval writes it
    total = 0.0
    tau = 0
    for t, d in enumerate(delays):
        d = max(0.0, d - start)
        total += d - t / rate
        tau = t + 1
        if d >= source:
            break
    return total / tau


def stream_laal(sentence_laal: Sequence[float | None]) -> float | None:
    """Mean LAAL over the non-empty resegmented sentences (None entries); None when all are empty."""
    values = [v for v in sentence_laal if v is not None]
    return sum(values) / len(values) if values else None


register_latency(LatencySpec("hpo", hpo_latency, "the original HPO formula (no cut-off at the source end)"))
register_latency(LatencySpec("laal", laal, "LAAL relative to the sentence start, as StreamLAAL computes it"))
