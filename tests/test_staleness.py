"""Bounded-staleness training in-process: the staleness guard, and the IS weight of a stale
trajectory taken against the logprobs recorded when it was sampled."""

import math

import pytest
import torch

from hpo_ray.config import ConfigError, load_config
from hpo_ray.learner.batch import collate
from hpo_ray.learner.loss import policy_loss
from hpo_ray.staleness import StalenessError, check_staleness
from tests.test_step_batch import rollout, talk


def test_staleness_is_the_learner_version_minus_the_sampled_version_within_the_bound():
    assert check_staleness(5, [5, 4, 4], bound=1, step=6) == [0, 1, 1]
    assert check_staleness(0, [], bound=0, step=1) == []
    with pytest.raises(StalenessError, match=r"step 6: .*weight version 3 .*version 5.*max_staleness=1"):
        check_staleness(5, [5, 3], bound=1, step=6)
    with pytest.raises(StalenessError, match="weight version 6"):  # ahead of the learner: a bookkeeping bug
        check_staleness(5, [6], bound=1, step=6)


def test_async_training_with_colocated_pools_is_a_config_error_naming_both_keys():
    with pytest.raises(ConfigError, match=r"algorithm\.max_staleness.*cluster\.colocate"):
        load_config(None, ["algorithm.max_staleness=1", "cluster.colocate=true"])
    assert load_config(None, ["algorithm.max_staleness=0", "cluster.colocate=true"]).algorithm.max_staleness == 0
    with pytest.raises(ConfigError, match=r"algorithm\.max_staleness"):
        load_config(None, ["algorithm.max_staleness=-1"])


def test_is_weight_of_a_stale_trajectory_is_taken_against_its_sampled_logprobs(tmp_path):
    """Trajectories sampled versions ago: the learner's π_old differs from the sampler's logprobs, and the
    loss weights each token by exp(log π_old − the logprob recorded at sampling), through make_batch and collate."""
    from dataclasses import replace

    import numpy as np

    from hpo_ray.learner.step_batch import make_batch

    cfg = load_config(None, ["algorithm.kl_coef=0", "algorithm.group_size=2"])
    np.save(tmp_path / "t.npy", np.zeros((14, 8), dtype=np.float32))
    (a, sa), (b, sb) = rollout("t", 0, 0.2, 1.0), rollout("t", 1, 0.8, 1.0)
    a.logprobs = [-0.5, -1.0, -2.0, -0.25]  # what the stale sampler reported for its 4 assistant tokens
    b.logprobs = [-1.5, -0.5, -0.5, -1.0, -3.0]
    items, _ = make_batch([a, b], [sa, sb], [replace(talk("t"), features_path=tmp_path / "t.npy")], cfg)
    mb = collate(items, [0, 1], pad_id=0)
    sampled = [a.logprobs, b.logprobs]
    assert [mb.rollout_logprobs[r][mb.loss_mask[r]].tolist() for r in range(2)] == sampled
    old = torch.where(mb.loss_mask, torch.full_like(mb.rollout_logprobs, -1.0), 0.0)  # the learner's current policy
    loss, m = policy_loss(old.clone(), old, mb.rollout_logprobs, None, mb.advantages, mb.loss_mask, 9, cfg.algorithm)
    weights = [math.exp(-1.0 - lp) for lps in sampled for lp in lps]
    assert m["is_weight_mean"] == pytest.approx(sum(weights) / 9)
    assert m["is_weight_max"] == pytest.approx(max(weights)) and m["is_weight_min"] == pytest.approx(min(weights))
    adv = [items[0].advantage] * 4 + [items[1].advantage] * 5
    assert items[0].advantage != 0
    assert loss.item() == pytest.approx(sum(-x * w for x, w in zip(adv, weights)) / 9)  # ρ = 1: ℓ = −A, times w
