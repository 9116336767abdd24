"""The DeepSpeed learner group on Ray: 2-rank ZeRO-2/3 equals a plain torch reference, also after a
skipped non-finite update."""

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hpo_ray.config import load_config
from hpo_ray.learner.batch import SequenceItem, collate, token_logprobs
from hpo_ray.learner.loss import policy_loss
from hpo_ray.rollout.sampling import policy_ban_mask
from hpo_ray.sync.buckets import apply_bucket

pytestmark = pytest.mark.ray


def make_items(layout, tmp_path, n=6, seed=0):
    rng = np.random.default_rng(seed)
    words = ["ka", "lomi", "teru", "sa", "mi", "tora", "."]
    items = []
    for i in range(n):
        turns = [(int(rng.integers(3, 8)), " ".join(rng.choice(words, int(rng.integers(0, 4))))) for _ in range(int(rng.integers(2, 5)))]
        d = layout.build_text("en", "de", turns)
        path = tmp_path / f"f{i}.npy"
        np.save(path, rng.standard_normal((d.n_frames + 3, 64)).astype(np.float32))
        n_gen = sum(d.assistant_mask[1:])
        items.append(
            SequenceItem(
                d.input_ids,
                d.assistant_mask,
                list(rng.normal(-3.0, 0.5, n_gen)),
                float(rng.normal()),
                str(path),
                None,
                d.n_frames,
                f"g{i % 2}",
            )
        )
    return items


def plain_torch_reference(model, layout, items, cfg, steps):
    """The same update in one process with torch.optim.AdamW and clip_grad_norm_."""
    model = copy.deepcopy(model).train()
    reference = copy.deepcopy(model).eval()
    banned = policy_ban_mask(layout, model.config.vocab_size)
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.learner.optimizer.lr,
        betas=cfg.learner.optimizer.betas,
        eps=cfg.learner.optimizer.eps,
        weight_decay=cfg.learner.optimizer.weight_decay,
    )
    mb = collate(items, list(range(len(items))), layout.tokenizer.pad_token_id)
    with torch.no_grad():
        old, _ = token_logprobs(model, mb, layout.placeholder_id, banned, 1.0)
        ref, _ = token_logprobs(reference, mb, layout.placeholder_id, banned, 1.0)
    normaliser = float(mb.loss_mask.sum())
    for _ in range(steps):
        lp, _ = token_logprobs(model, mb, layout.placeholder_id, banned, 1.0)
        loss, _ = policy_loss(lp, old, mb.rollout_logprobs, ref, mb.advantages, mb.loss_mask, normaliser, cfg.algorithm)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.learner.optimizer.grad_clip)
        opt.step()
    return model.state_dict()


@pytest.mark.parametrize("stage", [2, 3])
def test_two_rank_zero_matches_plain_torch_after_three_steps(stage, ray_cluster, tiny_model, layout, tiny_policy_dir, tmp_path):
    import ray

    from actors.learner_group import LearnerGroup

    cfg = load_config(
        None,
        [
            f"learner.zero_stage={stage}",
            "learner.num_ranks=2",
            "learner.micro_batch_tokens=200",
            "learner.optimizer.lr=0.001",
            "algorithm.updates_per_step=3",
            "cluster.cpus_per_learner=0.5",
            "learner.max_skipped_updates=4",
        ],
    )
    items = make_items(layout, tmp_path)
    expected = plain_torch_reference(tiny_model, layout, items, cfg, steps=3)
    pool = ray.util.placement_group([{"CPU": 0.5}] * 2)
    ray.get(pool.ready())
    group = LearnerGroup(cfg, str(tiny_policy_dir), pool)
    try:
        # An infinite advantage on one rank's shard: all three optimiser steps are skipped on both ranks
        # without a trace, so the update below still equals three plain-torch steps.
        poisoned = group.train([replace(items[0], advantage=math.inf)] + items[1:])
        metrics = group.train(items)
        got = group.state_dict()
        streamed = [ray.get(ref) for ref in group.stream_weights(4, bucket_mb=0.05, checksum=True)]  # both ranks gather
    finally:
        group.shutdown()
        ray.util.remove_placement_group(pool)
    assert poisoned["learner/skipped_updates"] == 3 and poisoned["optimizer_steps"] == 0
    assert metrics["optimizer_steps"] == 3 and metrics["tokens"] > 0 and metrics["learner/skipped_updates"] == 0
    assert set(got) == set(expected)
    worst = max((got[k].float() - expected[k].float()).abs().max().item() for k in expected)
    moved = max((got[k].float() - tiny_model.state_dict()[k].float()).abs().max().item() for k in expected)
    assert moved > 1e-3, "the update must actually change the weights"
    assert worst < 1e-5, f"ZeRO-{stage} differs from plain torch by {worst}"
    assert len(streamed) > 1 and [b.manifest.index for b in streamed] == list(range(len(streamed)))
    target = {k: torch.zeros_like(v) for k, v in got.items()}
    for bucket in streamed:
        apply_bucket(target, bucket, verify=True)
    assert all(torch.equal(target[k], got[k]) for k in got), "the streamed weights are the gathered weights"


def test_checkpoint_kill_resume_equals_not_stopping(ray_cluster, layout, tiny_policy_dir, tmp_path):
    import ray

    from actors.learner_group import LearnerGroup

    cfg = load_config(None, ["learner.zero_stage=2", "learner.optimizer.lr=0.001", "cluster.cpus_per_learner=0.5"])
    first, second = (
        make_items(layout, tmp_path, n=4, seed=1),
        make_items(layout, tmp_path / "b", n=4, seed=2) if (tmp_path / "b").mkdir() is None else None,
    )
    pool = ray.util.placement_group([{"CPU": 0.5}])
    ray.get(pool.ready())
    try:
        straight = LearnerGroup(cfg, str(tiny_policy_dir), pool)
        straight.train(first)
        straight.train(second)
        expected, expected_opt = straight.state_dict(), straight.optimizer_fingerprints()
        straight.shutdown()

        stopped = LearnerGroup(cfg, str(tiny_policy_dir), pool)
        stopped.train(first)
        stopped.save(str(tmp_path / "ckpt"), {"step": 1})
        stopped.shutdown()  # the ranks are killed; nothing survives but the checkpoint
        resumed = LearnerGroup(cfg, str(tiny_policy_dir), pool)
        assert resumed.load(str(tmp_path / "ckpt"))["step"] == 1
        resumed.train(second)
        got, got_opt = resumed.state_dict(), resumed.optimizer_fingerprints()
        resumed.shutdown()
    finally:
        ray.util.remove_placement_group(pool)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert got_opt == expected_opt and len(got_opt[0]) > 0
