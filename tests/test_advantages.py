"""Advantages: reward on every assistant token, GRPO baselines per group, dynamic sampling."""

import math

import pytest
import torch

from hpo_ray.learner.advantages import dynamic_sampling_keep, group_advantages, token_advantages, zero_variance_groups

REWARDS = [1.0, 3.0, 2.0, 6.0, -1.0, 0.5, 0.5]
GROUPS = ["talk:0", "talk:0", "talk:0", "talk:0", "talk:1", "talk:1", "talk:2"]


def test_reward_is_copied_to_every_assistant_token_only():
    mask = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    adv = token_advantages(torch.tensor([0.5, -2.0]), mask)
    assert adv.tolist() == [[0.0, 0.5, 0.5, 0.0], [-2.0, 0.0, 0.0, -2.0]]


def test_no_baseline_is_the_reward_itself():
    assert group_advantages(REWARDS, GROUPS, "none").tolist() == REWARDS


def test_group_mean_baseline_centres_each_group():
    adv = group_advantages(REWARDS, GROUPS, "group_mean").tolist()
    assert adv == pytest.approx([-2.0, 0.0, -1.0, 3.0, -0.75, 0.75, 0.0])


def test_group_norm_divides_by_population_std_and_only_centres_a_constant_group():
    rewards = [1.0, 3.0, 2.0, 6.0, 0.1, 0.1, 0.1]
    groups = ["a"] * 4 + ["b"] * 3
    adv = group_advantages(rewards, groups, "group_norm").tolist()
    std = math.sqrt(((1 - 3) ** 2 + 0 + (2 - 3) ** 2 + (6 - 3) ** 2) / 4)
    assert adv[:4] == pytest.approx([-2 / std, 0.0, -1 / std, 3 / std])
    assert adv[4:] == pytest.approx([0.0, 0.0, 0.0], abs=1e-15)  # float noise in the mean is not blown up


def test_leave_one_out_baseline_uses_the_other_rollouts_of_the_group():
    adv = group_advantages(REWARDS, GROUPS, "leave_one_out").tolist()
    assert adv[0] == pytest.approx(1.0 - (3 + 2 + 6) / 3)
    assert adv[3] == pytest.approx(6.0 - (1 + 3 + 2) / 3)
    assert adv[4:6] == pytest.approx([-1.5, 1.5])
    assert adv[6] == 0.0  # a group of one has nothing to compare with


def test_groups_need_not_be_contiguous():
    shuffled = [3, 0, 6, 4, 1, 5, 2]
    adv = group_advantages([REWARDS[i] for i in shuffled], [GROUPS[i] for i in shuffled], "group_mean")
    ref = group_advantages(REWARDS, GROUPS, "group_mean")
    assert adv.tolist() == pytest.approx([ref[i].item() for i in shuffled])


def test_dynamic_sampling_drops_groups_whose_raw_quality_does_not_vary():
    quality = [0.7, 0.7, 0.7, 0.7, 0.2, 0.9, 0.4]
    assert zero_variance_groups(quality, GROUPS) == {"talk:0", "talk:2"}
    assert dynamic_sampling_keep(quality, GROUPS) == [4, 5]
    assert dynamic_sampling_keep([0.7, 0.7000001, 0.7, 0.7, 0.2, 0.9, 0.4], GROUPS, atol=1e-3) == [4, 5]
    assert dynamic_sampling_keep([0.7, 0.7000001, 0.7, 0.7, 0.2, 0.9, 0.4], GROUPS) == [0, 1, 2, 3, 4, 5]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"rewards\[1\] = nan"):
        group_advantages([1.0, float("nan")], ["a", "a"], "group_mean")
    with pytest.raises(ValueError, match="2 rewards but 3 group ids"):
        group_advantages([1.0, 2.0], ["a", "a", "b"], "none")
    with pytest.raises(ValueError, match="algorithm.baseline"):
        group_advantages([1.0, 2.0], ["a", "a"], "median")
    with pytest.raises(ValueError, match="advantages"):
        token_advantages(torch.zeros(3), torch.ones(2, 4))
