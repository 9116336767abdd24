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


def test_one_step_off_trains_each_step_on_rollouts_sampled_one_version_behind(ray_cluster, small_run, tmp_path, monkeypatch):
    from actors.controller import train

    _, _, overrides = small_run
    cfg = load_config(None, overrides + CPU_SPLIT + ASYNC + ["validation.every=3", "checkpoint.every=3"])
    seen = recording_versions(monkeypatch)
    history = train(cfg, tmp_path / "run", steps=3)
    # step 2's rollouts were sampled (with version 0) while step 1 trained: the overlap really happened
    assert seen == [(0, [0] * 4), (1, [0] * 4), (2, [1] * 4)]
    assert all(v - s <= cfg.algorithm.max_staleness for v, sampled in seen for s in sampled)
    assert [h["rollout/staleness_max"] for h in history] == [0, 1, 1]
    assert [h["rollout/staleness_mean"] for h in history] == [0, 1, 1]
    assert [h["rollout/weight_version_min"] for h in history] == [0, 0, 1] and [h["weight_version"] for h in history] == [1, 2, 3]
    for h in history:
        assert 0 <= h["idle/rollout_share"] <= 1 and 0 <= h["idle/learner_share"] <= 1
        assert h["throughput/trajectories_per_s"] == pytest.approx(4 / h["time/step"])
        assert h["throughput/tokens_per_s"] == pytest.approx(h["tokens/generated"] / h["time/step"])
    assert "val/quality" in history[-1]  # validation after the last step: on-policy (its bound is 0)
    order = [json.loads(line)["step"] for line in (tmp_path / "run" / "data_order.jsonl").read_text().splitlines()]
    assert order == [1, 2, 3]  # no step drawn beyond the last


def test_async_run_stopped_after_a_checkpoint_resumes_with_the_same_talks_per_step(ray_cluster, small_run, tmp_path, monkeypatch):
    """Step 3's talks were drawn (its rollout prefetched) before step 2's checkpoint was saved; the
    checkpoint still holds the sampler as of step 2, so the resumed run draws step 3's talks again."""
    from actors.controller import Controller, train

    _, _, overrides = small_run
    cfg = load_config(None, overrides + CPU_SPLIT + ASYNC + ["data.dev_manifest=null", "validation.every=2", "checkpoint.every=2"])
    log = Controller.log

    def log_then_die(self, metrics, started=None, step=None):
        out = log(self, metrics, started, step)
        if out["step"] == 2:
            raise RuntimeError("killed after step 2 was checkpointed and logged")
        return out

    with monkeypatch.context() as patch:
        patch.setattr(Controller, "log", log_then_die)
        with pytest.raises(RuntimeError, match="killed after"):
            train(cfg, tmp_path / "run", steps=3)
    drawn = [json.loads(line)["step"] for line in (tmp_path / "run" / "data_order.jsonl").read_text().splitlines()]
    assert drawn == [1, 2, 3]  # the prefetch of step 3 was drawn before the stop
    seen = recording_versions(monkeypatch)
    assert [h["step"] for h in train(cfg, tmp_path / "run", steps=3, resume=True)] == [3]
    assert seen == [(2, [2] * 4)]  # resumed: step 3 sampled anew with the checkpoint's weights
    order = [json.loads(line) for line in (tmp_path / "run" / "data_order.jsonl").read_text().splitlines()]
    assert [o["step"] for o in order] == [1, 2, 3]
    talks = Manifest(next(o.split("=", 1)[1] for o in overrides if o.startswith("data.train_manifest=")))
    sampler = TalkSampler(len(talks), seed=cfg.data.seed, shuffle=cfg.data.shuffle)  # an uninterrupted run's draws
    assert [o["talks"] for o in order] == [[talks[i].talk_id for i in sampler.draw(2)] for _ in range(3)]
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3]
