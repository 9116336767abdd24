"""Reward actor: scores finished rollouts (segment, latency, quality) as they arrive."""

import ray

from hpo_ray.env import apply_defaults


@ray.remote
class RewardActor:
    """Holds one quality scorer (chrF/BLEU on CPU; COMET/MetricX models on a GPU when configured)."""

    def __init__(self, reward_cfg: dict, index: int):
        apply_defaults()
        from hpo_ray.config import RewardConfig
        from hpo_ray.reward.pipeline import RewardFunction

        self.index = index
        self.fn = RewardFunction(RewardConfig.model_validate(reward_cfg))

    def ready(self) -> int:
        return self.index

    def score(self, records: list[dict]) -> list:
        """Raw per-rollout scores (Q, L, H, StreamLAAL, per sentence); normalisation is per group later."""
        from hpo_ray.reward.types import RolloutText

        return self.fn.score([RolloutText.from_json(r) for r in records])
