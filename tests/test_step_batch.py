"""A step's batch (rewards → advantages → items) and the update plan (ranks, optimiser steps,
normalisers), in-process: the pure logic the controller and the learner group call."""

from pathlib import Path

import pytest

from hpo_ray.config import load_config
from hpo_ray.data.manifest import Talk
from hpo_ray.learner.batch import SequenceItem
from hpo_ray.learner.step_batch import make_batch
from hpo_ray.learner.update_plan import plan_update
from hpo_ray.reward.group import group_rewards
from hpo_ray.reward.types import RolloutScore
from hpo_ray.rollout.protocol import Trajectory


def talk(talk_id: str) -> Talk:
    return Talk(talk_id, talk_id, Path(f"/nowhere/{talk_id}.npy"), None, 14, 8, 0.08, "en", "zh", ("a",), ("b",), ((0.0, 1.0),))


def rollout(talk_id: str, k: int, quality: float, latency: float, truncated: bool = False) -> tuple[Trajectory, RolloutScore]:
    n = 6 + k
    traj = Trajectory(
        talk_id,
        talk_id,
        k,
        "en",
        "zh",
        list(range(n)),
        [False, False] + [True] * (n - 2),
        [],
        [],
        [],
        [],
        [-0.5] * (n - 2),
        weight_version=3,
        truncated=truncated,
    )
    return traj, RolloutScore(f"{talk_id}-{k}", talk_id, 1.12, quality, latency, latency, None)


def batch(specs, *overrides):
    cfg = load_config(None, list(overrides))
    pairs = [rollout(*s) for s in specs]
    talks = [talk(t) for t in sorted({s[0] for s in specs})]
    return make_batch([p[0] for p in pairs], [p[1] for p in pairs], talks, cfg), [p[1] for p in pairs], cfg


def test_truncated_rollouts_stay_out_of_the_group_normalisation_and_are_dropped():
    (items, stats), scores, cfg = batch([("t", 0, 0.2, 1.0), ("t", 1, 0.5, 2.0), ("t", 2, 0.9, 0.5), ("t", 3, 0.0, 9.0, True)])
    expected = group_rewards(scores[:3], cfg.reward)  # as if the truncated rollout did not exist
    assert [it.advantage for it in items] == pytest.approx(expected)
    assert [len(it.input_ids) for it in items] == [6, 7, 8]
    assert (stats["rollout/truncated"], stats["rollout/sequences"], stats["batch/sequences"]) == (1.0, 4.0, 3.0)


def test_truncated_reward_trains_the_truncated_rollouts_with_that_advantage():
    (items, _), _, _ = batch([("t", 0, 0.2, 1.0), ("t", 1, 0.5, 2.0), ("t", 2, 0.0, 9.0, True)], "algorithm.truncated_reward=-1.5")
    assert len(items) == 3 and items[-1].advantage == -1.5 and len(items[-1].input_ids) == 8


def test_every_rollout_truncated_is_an_error_unless_they_get_the_truncated_reward():
    specs = [("t", k, 0.1 * k, 1.0, True) for k in range(3)]
    with pytest.raises(RuntimeError, match="all 3 rollouts hit rollout.max_total_tokens"):
        batch(specs)
    (items, stats), _, _ = batch(specs, "algorithm.truncated_reward=-1")
    assert [it.advantage for it in items] == [-1.0] * 3 and stats["reward/mean"] == 0.0


def test_groups_are_normalised_apart_and_items_keep_their_group_and_talk():
    (items, _), _, _ = batch([("a", 0, 0.1, 1.0), ("a", 1, 0.3, 1.0), ("b", 0, 0.6, 1.0), ("b", 1, 0.8, 1.0)])
    adv = [it.advantage for it in items]
    assert adv[:2] == pytest.approx(adv[2:])  # same spread in each group → same z-scored rewards
    assert adv[0] < adv[1]
    assert [it.group_id for it in items] == ["a", "a", "b", "b"]
    assert items[2].features_path == "/nowhere/b.npy"


def test_dynamic_sampling_drops_groups_whose_quality_does_not_vary():
    specs = [("a", 0, 0.4, 1.0), ("a", 1, 0.4, 3.0), ("b", 0, 0.2, 1.0), ("b", 1, 0.7, 1.0)]
    (items, _), _, _ = batch(specs, "algorithm.dynamic_sampling=true")
    assert [it.group_id for it in items] == ["b", "b"]
    (all_items, _), _, _ = batch(specs)
    assert len(all_items) == 4


def item(n_tokens: int, n_assistant: int) -> SequenceItem:
    mask = [False] * (n_tokens - n_assistant) + [True] * n_assistant
    return SequenceItem(list(range(n_tokens)), mask, [0.0] * n_assistant, 1.0, "/nowhere.npy", None, 1)


def test_update_plan_splits_into_optimiser_steps_and_balances_tokens_over_ranks():
    cfg = load_config(None, ["learner.num_ranks=2", "learner.global_batch_size=4"])
    items = [item(10, 4), item(30, 5), item(20, 6), item(5, 1), item(8, 2), item(12, 3)]
    plan = plan_update(items, cfg)
    # step 0, longest first onto the lighter rank: 30 → r0, 20 → r1, 10 → r1, 5 → r0 (35 vs 30 tokens)
    assert plan.assignment == [(1, 0), (0, 0), (1, 0), (0, 0), (1, 1), (0, 1)]
    assert plan.normalisers == [16.0, 5.0]  # assistant tokens per step (targets: mask[1:])


def test_update_plan_sequence_normaliser_and_one_step_without_a_global_batch_size():
    cfg = load_config(None, ["algorithm.loss_agg=sequence"])
    plan = plan_update([item(10, 4), item(12, 3), item(9, 2)], cfg)
    assert plan.assignment == [(0, 0)] * 3 and plan.normalisers == [3.0]
