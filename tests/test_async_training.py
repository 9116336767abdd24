"""Bounded-staleness (asynchronous) HPO on real Ray: one-step-off rollouts run while the learner trains,
every trajectory stays within `algorithm.max_staleness`, and a stopped run resumes with the same talks."""

import json

import pytest

from hpo_ray.config import load_config
from hpo_ray.data.manifest import Manifest
from hpo_ray.data.sampler import TalkSampler
from hpo_ray.metrics import read_metrics
from tests.test_controller import CPU_SPLIT

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ASYNC = ["algorithm.max_staleness=1", "validation.at_start=false", "learner.optimizer.lr=0.001"]


def recording_versions(monkeypatch) -> list[tuple[int, list[int]]]:
    """(learner version, sampled version of each trajectory) of every step the controller batches."""
    from actors.controller import Controller

    seen: list[tuple[int, list[int]]] = []
    make_batch = Controller.make_batch

    def wrapped(self, trajectories, scores, talks):
        seen.append((self.version, [t.weight_version for t in trajectories]))
        return make_batch(self, trajectories, scores, talks)

    monkeypatch.setattr(Controller, "make_batch", wrapped)
    return seen


def test_one_step_off_run_stays_within_the_bound_and_resumes_with_the_same_talks_per_step(ray_cluster, small_run, tmp_path, monkeypatch):
    """Step 2's rollouts are sampled (with version 0) while step 1 trains, so every later step trains one
    version behind, never more. Step 3's talks are drawn (its rollout prefetched) before step 2's checkpoint
    is saved; the checkpoint still holds the sampler as of step 2, so a run stopped after step 2 and resumed
    draws step 3's talks again: the same talks per step as an uninterrupted run."""
    from actors.controller import Controller, train

    _, _, overrides = small_run
    cfg = load_config(None, overrides + CPU_SPLIT + ASYNC + ["data.dev_manifest=null", "validation.every=2", "checkpoint.every=2"])
    log = Controller.log

    def log_then_die(self, metrics, started=None, step=None):
        out = log(self, metrics, started, step)
        if out["step"] == 2:
            raise RuntimeError("killed after step 2 was checkpointed and logged")
        return out

    seen = recording_versions(monkeypatch)
    with monkeypatch.context() as patch:
        patch.setattr(Controller, "log", log_then_die)
        with pytest.raises(RuntimeError, match="killed after"):
            train(cfg, tmp_path / "run", steps=3)
    assert seen == [(0, [0] * 4), (1, [0] * 4)]  # step 2 sampled before the first sync: the overlap happened
    drawn = [json.loads(line)["step"] for line in (tmp_path / "run" / "data_order.jsonl").read_text().splitlines()]
    assert drawn == [1, 2, 3]  # the prefetch of step 3 was drawn before the stop
    assert [h["step"] for h in train(cfg, tmp_path / "run", steps=3, resume=True)] == [3]
    assert seen[2:] == [(2, [2] * 4)]  # resumed: step 3 sampled anew with the checkpoint's weights
    assert all(v - s <= cfg.algorithm.max_staleness for v, sampled in seen for s in sampled)

    logged = read_metrics(tmp_path / "run")
    assert [m["step"] for m in logged] == [1, 2, 3]
    assert [m["rollout/staleness_max"] for m in logged] == [0, 1, 0] and [m["rollout/staleness_mean"] for m in logged] == [0, 1, 0]
    assert [m["rollout/weight_version_min"] for m in logged] == [0, 0, 2] and [m["weight_version"] for m in logged] == [1, 2, 3]
    for m in logged:
        assert 0 <= m["idle/rollout_share"] <= 1 and 0 <= m["idle/learner_share"] <= 1
        assert m["throughput/trajectories_per_s"] == pytest.approx(4 / m["time/step"])
        assert m["throughput/tokens_per_s"] == pytest.approx(m["tokens/generated"] / m["time/step"])
    order = [json.loads(line) for line in (tmp_path / "run" / "data_order.jsonl").read_text().splitlines()]
    assert [o["step"] for o in order] == [1, 2, 3]
    talks = Manifest(next(o.split("=", 1)[1] for o in overrides if o.startswith("data.train_manifest=")))
    sampler = TalkSampler(len(talks), seed=cfg.data.seed, shuffle=cfg.data.shuffle)  # an uninterrupted run's draws
    assert [o["talks"] for o in order] == [[talks[i].talk_id for i in sampler.draw(2)] for _ in range(3)]
