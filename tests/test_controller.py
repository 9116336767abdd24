"""The HPO job on real Ray: steps end to end, a killed rollout worker, checkpoints and metrics."""

import json

import pytest

from hpo_ray.config import load_config
from hpo_ray.metrics import read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CPU_SPLIT = ["cluster.cpus_per_learner=0.5", "cluster.cpus_per_rollout_worker=0.5", "cluster.cpus_per_reward_actor=0.25"]


def test_three_hpo_steps_run_end_to_end(ray_cluster, small_run, tmp_path):
    from actors.controller import train

    _, _, overrides = small_run
    cfg = load_config(
        None,
        overrides + CPU_SPLIT + ["validation.every=3", "checkpoint.every=3", "algorithm.updates_per_step=2", "learner.optimizer.lr=0.001"],
    )
    history = train(cfg, tmp_path / "run", steps=3)
    assert [h["step"] for h in history] == [1, 2, 3]
    logged = read_metrics(tmp_path / "run")
    assert [m["step"] for m in logged] == [0, 1, 2, 3]  # validation at start, then one line per step
    for m in logged[1:]:
        assert m["rollout/sequences"] == 4 and m["batch/sequences"] + m["rollout/truncated"] == 4
        for key in (
            "reward/quality",
            "reward/stream_laal",
            "kl",
            "clip_fraction",
            "entropy",
            "grad_norm",
            "time/rollout",
            "time/logprob",
            "time/train",
            "time/sync",
            "sync/bytes_per_s",
            "bubble_share",
            "queue/reward_inflight_max",
            "actors/reward_restarts",
        ):
            assert key in m, key
        assert m["optimizer_steps"] == 2
    assert [m["weight_version"] for m in logged[1:]] == [1, 2, 3]
    assert [m["rollout/weight_version_min"] for m in logged[1:]] == [0, 1, 2]  # on-policy: sampled with the last sync
    assert "val/quality" in logged[-1] and "val/stream_laal_talk_mean" in logged[-1] and "val/length_ratio" in logged[-1]
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000003"
    assert (ckpt / "policy" / "model.safetensors").is_file() and (ckpt / "deepspeed").is_dir()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["sampler"]["position"] + state["sampler"]["epoch"] > 0
    order = [json.loads(line) for line in (tmp_path / "run" / "data_order.jsonl").read_text().splitlines()]
    assert [o["step"] for o in order] == [1, 2, 3] and all(len(o["talks"]) == 2 for o in order)  # as metrics number them
    # the same step metrics are exported through ray.util.metrics (dashboard / Prometheus endpoint)
    samples = prometheus_samples("ray_hpo_reward_quality", f'run="{cfg.run.name}"', logged[-1]["reward/quality"])
    assert samples and abs(samples[-1] - logged[-1]["reward/quality"]) < 1e-6


def test_a_run_without_a_dev_set_checkpoints_and_resumes(ray_cluster, small_run, tmp_path):
    from actors.controller import train

    _, _, overrides = small_run
    cfg = load_config(None, overrides + CPU_SPLIT + ["data.dev_manifest=null"])
    assert [h["step"] for h in train(cfg, tmp_path / "run", steps=2)] == [1, 2]
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000002"
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 2
    assert json.loads((ckpt / "checkpoint.json").read_text())["criterion"] is None  # no validation: unranked
    assert [h["step"] for h in train(cfg, tmp_path / "run", steps=3, resume=True)] == [3]
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3]
    assert not any(k.startswith("val/") for m in read_metrics(tmp_path / "run") for k in m)


def test_a_killed_reward_actor_is_restarted_and_counted(ray_cluster, small_run):
    import time

    import ray

    from actors.placement import make_pools
    from actors.reward_pool import RewardPool

    _, _, overrides = small_run
    cfg = load_config(None, overrides + CPU_SPLIT + ["cluster.num_reward_actors=2"])
    pools = make_pools(cfg)
    pool = RewardPool(cfg, pools.reward, "rewardkill")
    try:
        assert pool.count_restarts() == 0
        ray.kill(pool.actors[1], no_restart=False)
        # ray.kill is asynchronous: a call right after it may still reach the old instance, so the restart
        # is seen at a later count (as the controller counts once per step); bounded wait
        deadline = time.monotonic() + 60
        while pool.count_restarts() == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pool.count_restarts() == 1 and pool.count_restarts() == 1  # counted once, when it is seen
    finally:
        for a in pool.actors:
            ray.kill(a)
        pools.remove()


def prometheus_samples(metric: str, label: str, expected: float, timeout_s: float = 60.0) -> list[float]:
    """Values of `metric` with `label` scraped from this node's Ray metrics endpoint, polled until the
    last one is `expected` (the export runs every ~10 s, so an earlier step's value may show first)."""
    import time
    import urllib.request

    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    deadline, found = time.time() + timeout_s, []
    while time.time() < deadline:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        found = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(metric + "{") and label in line]
        if found and abs(found[-1] - expected) < 1e-6:
            return found
        time.sleep(2)
    return found


def test_killed_rollout_worker_mid_step_still_returns_all_trajectories(ray_cluster, small_run):
    import ray

    from actors.placement import make_pools
    from actors.rollout_pool import RolloutPool
    from hpo_ray.data.manifest import Manifest

    _, _, overrides = small_run
    cfg = load_config(
        None,
        overrides
        + [
            "cluster.num_rollout_workers=2",
            "cluster.cpus_per_rollout_worker=0.5",
            "cluster.cpus_per_learner=0.25",
            "cluster.cpus_per_reward_actor=0.25",
            "rollout.sampling.max_new_tokens=12",
        ],
    )
    by_length = sorted(Manifest(cfg.data.train_manifest), key=lambda t: t.n_frames)
    # talks are dealt round-robin: worker 1 (the victim) gets the shortest and the longest talk, so when its
    # first trajectory (the short talk) arrives, it is still generating the long one
    talks = [by_length[1], by_length[0], by_length[2], by_length[-1]]
    pools = make_pools(cfg)
    pool = RolloutPool(cfg, str(cfg.model.path), pools.rollout, "killtest")
    got, killed = [], []

    def on_trajectory(traj):
        got.append(traj)
        if not killed and traj.stats["worker"] == 1:
            killed.append(traj.talk_id)
            ray.kill(pool.workers[1], no_restart=False)

    try:
        run = pool.run(talks, samples=2, seed=0, on_trajectory=on_trajectory)
    finally:
        for w in pool.workers:
            ray.kill(w)
        pools.remove()
    assert killed == [by_length[0].talk_id]
    assert sorted(t.talk_id for t in got) == sorted(t.talk_id for t in talks for _ in range(2))
    assert run["rollout_retries"] >= 1 and pool.restarts == 1


def test_colocated_rollout_workers_share_the_learner_bundles(ray_cluster, small_run, tmp_path):
    import ray

    from actors.controller import train
    from actors.placement import make_pools

    _, _, overrides = small_run
    cfg = load_config(None, overrides + CPU_SPLIT + ["cluster.colocate=true", "validation.at_start=false"])
    pools = make_pools(cfg)
    try:
        assert pools.rollout is pools.learner
        assert pools.learner.bundle_specs == [{"CPU": 1.0}]  # learner 0.5 + rollout worker 0.5 in one bundle
    finally:
        pools.remove()
    history = train(cfg, tmp_path / "run", steps=1)
    assert history[-1]["rollout/sequences"] == 4 and history[-1]["weight_version"] == 1
    assert not ray.util.placement_group_table() or all(pg["state"] == "REMOVED" for pg in ray.util.placement_group_table().values())
