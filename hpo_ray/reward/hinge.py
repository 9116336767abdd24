"""The hierarchical hinge: latency earns credit only where quality clears the bar (docs/method.md §2, docs/reward.md §6).

`sentence` (HPO): h = min(0, l − L_max) for a sentence with q ≥ τ, else 0; H = mean h.
`document` (HPO-doc): H = min(0, L − L_max) when Q ≥ τ, else 0. `none` (No-HPO): H = L.
"""

from collections.abc import Sequence

from hpo_ray.config import RewardConfig


def aggregate(qualities: Sequence[float], latencies: Sequence[float], cfg: RewardConfig) -> tuple[float, float, float, list[float]]:
    """(Q, L, H, per-sentence hinged values) of one rollout; every sentence counts, aligned or not.

    For the document hinge a sentence shows l − L_max when the document passes (else 0).
    """
    n = len(qualities)
    if n == 0 or n != len(latencies):
        raise ValueError(f"need one quality and one latency per sentence, got {n} and {len(latencies)}")
    Q = sum(qualities) / n
    L = sum(latencies) / n
    tau, cap = cfg.quality_threshold, cfg.max_latency
    if cfg.hinge == "none":
        return Q, L, L, list(latencies)
    if cfg.hinge == "sentence":
        hinged = [min(0.0, lat - cap) if q >= tau else 0.0 for q, lat in zip(qualities, latencies)]
        return Q, L, sum(hinged) / n, hinged
    passed = Q >= tau
    return Q, L, min(0.0, L - cap) if passed else 0.0, [lat - cap if passed else 0.0 for lat in latencies]
