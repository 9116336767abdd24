"""Reward actor: scores finished rollouts (segment, latency, quality) as they arrive."""

import uuid

import ray

from hpo_ray.env import apply_defaults


@ray.remote
class RewardActor:
    """Holds one quality scorer (chrF/BLEU on CPU; COMET/MetricX models on a GPU when configured)."""

    def __init__(self, cfg: dict, index: int):
        apply_defaults()
        from hpo_ray.config import parse_config
        from hpo_ray.reward.pipeline import RewardFunction

        self.index, self.incarnation = index, uuid.uuid4().hex  # a restarted actor gets a new one
        # the whole run config, so `run.plugins` register their scorers and latency metrics in this process too
        self.fn = RewardFunction(parse_config(cfg).reward)

    def ready(self) -> int:
        return self.index

    def started_as(self) -> str:
        """Which start of this actor answers: changes when Ray restarted it."""
        return self.incarnation

    def score(self, records: list[dict]) -> list:
        """Raw per-rollout scores (Q, L, H, StreamLAAL, per sentence); normalisation is per group later."""
        from hpo_ray.reward.types import RolloutText

        return self.fn.score([RolloutText.from_json(r) for r in records])
