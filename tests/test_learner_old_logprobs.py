"""A real learner rank (DeepSpeed ZeRO-2 over gloo, tiny Qwen3, in this process): the first optimiser step's
old logprobs are its own training forward's, so no extra policy forward runs for its sequences; sequences of
later steps still get theirs before any update of the batch."""

import pytest
import torch

from hpo_ray.config import load_config
from hpo_ray.learner.distributed import free_port
from tests.test_learner_group import make_items


@pytest.fixture(scope="module")
def trainer(tiny_policy_dir):
    from hpo_ray.learner.trainer import PolicyTrainer

    cfg = load_config(None, ["learner.zero_stage=2", "learner.optimizer.lr=0.01", "learner.device=cpu"])
    return PolicyTrainer(cfg, str(tiny_policy_dir), 0, 1, "127.0.0.1", free_port())


def policy_forwards(trainer, run) -> list[tuple[bool, int]]:
    """(grad enabled, rows) of every forward of the policy (not the reference) while `run()` runs."""
    calls = []

    def seen(_module, _args, kwargs, _out):
        calls.append((torch.is_grad_enabled(), kwargs["inputs_embeds"].shape[0]))

    hook = trainer.engine.module.register_forward_hook(seen, with_kwargs=True)
    try:
        run()
    finally:
        hook.remove()
    return calls


def test_a_single_step_update_scores_old_logprobs_with_its_own_forward(trainer, layout, tmp_path):
    items = make_items(layout, tmp_path, n=4, seed=5)
    normaliser = float(sum(sum(i.assistant_mask[1:]) for i in items))
    metrics = {}
    calls = policy_forwards(trainer, lambda: metrics.update(trainer.train_step(items, [0] * 4, [normaliser], passes=1)))
    assert calls and all(grad for grad, _ in calls), calls  # no no-grad pass of the policy before the update
    assert sum(rows for _, rows in calls) == len(items)
    assert metrics["ratio_mean"] == 1.0 and metrics["ratio_max"] == 1.0  # old = the forward itself, exactly
    assert metrics["optimizer_steps"] == 1


def test_later_steps_sequences_get_old_logprobs_from_the_weights_before_the_update(trainer, layout, tmp_path):
    items = make_items(layout, tmp_path, n=4, seed=6)
    steps = [0, 0, 1, 1]
    normalisers = [float(sum(sum(items[i].assistant_mask[1:]) for i in range(4) if steps[i] == k)) for k in (0, 1)]
    metrics = {}
    calls = policy_forwards(trainer, lambda: metrics.update(trainer.train_step(items, steps, normalisers, passes=1)))
    no_grad = [rows for grad, rows in calls if not grad]
    assert sum(no_grad) == 2 and not calls[0][0]  # step 1's two sequences, scored first
    assert metrics["optimizer_steps"] == 2
    # step 1 trains on weights one update newer than its old logprobs: its ratios move off 1
    assert metrics["ratio_max"] > 1.0
