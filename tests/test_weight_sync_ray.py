"""Weight sync learner group → rollout workers on Ray: greedy outputs agree after a sync; corruption is caught."""

import time

import pytest

from hpo_ray.config import load_config
from hpo_ray.data.manifest import Manifest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
SPLIT = ["cluster.cpus_per_learner=0.5", "cluster.cpus_per_rollout_worker=0.5", "cluster.cpus_per_reward_actor=0.25"]


def greedy_ids(pool, talk, cfg):
    got = []
    pool.run([talk], 1, seed=0, on_trajectory=got.append, validation=True)
    return got[0].input_ids


@pytest.mark.parametrize("backend", ["object_store", "broadcast"])
def test_after_a_sync_the_engine_greedy_output_equals_the_learners(backend, ray_cluster, small_run):
    import ray

    from actors.learner_group import LearnerGroup
    from actors.placement import make_pools
    from actors.rollout_pool import RolloutPool
    from actors.weight_sync import BroadcastSync, make_weight_sync, object_store_sync
    from hpo_ray.dialogue import make_layout
    from hpo_ray.experience import sequence_item, talk_input
    from hpo_ray.model.build import load_policy
    from hpo_ray.rollout.torch_engine import TorchEngine

    _, policy, overrides = small_run
    cfg = load_config(
        None,
        overrides
        + SPLIT
        + [f"sync.backend={backend}", "sync.verify=true", "learner.optimizer.lr=0.02", "rollout.validation_sampling.max_new_tokens=8"],
    )
    talk = Manifest(cfg.data.train_manifest)[0]
    pools = make_pools(cfg)
    learner = LearnerGroup(cfg, str(policy), pools.learner)
    pool = RolloutPool(cfg, str(policy), pools.rollout, f"sync-{backend}")
    try:
        before = greedy_ids(pool, talk, cfg)
        trajs = []
        pool.run([talk], 4, seed=1, on_trajectory=trajs.append)
        learner.train([sequence_item(t, talk, adv) for t, adv in zip(trajs, (1.0, -1.0, 0.5, -0.5))])
        state = learner.state_dict()
        if backend == "broadcast":
            stats = BroadcastSync(cfg, learner, pool.workers).sync(1, lambda: state)  # verify=true checks checksums
        else:
            # the controller's path: rank 0 streams buckets, workers apply each as it arrives; verify=true
            stats = object_store_sync(learner.stream_weights(1, 0.05, cfg.sync.checksum), pool.workers, 1, cfg.sync, lambda: state)
            assert stats["sync/buckets"] > 1
        assert stats["sync/bytes"] > 0 and stats["weight_version"] == 1
        after = greedy_ids(pool, talk, cfg)
        if backend == "object_store":  # a restarted worker comes back with the SFT weights; the controller resyncs it
            from hpo_ray.sync.buckets import state_checksum

            worker = pool.workers[0]
            ray.kill(worker, no_restart=False)
            restarted = state_checksum(state)
            for _ in range(120):  # until the restarted instance answers (with the SFT weights it was built from)
                try:
                    restarted = ray.get(worker.weight_checksum.remote())
                except ray.exceptions.RayActorError:
                    pass
                if restarted != state_checksum(state):
                    break
                time.sleep(1)
            assert restarted != state_checksum(state), "the worker did not come back with its initial weights"
            make_weight_sync(cfg, learner, pool.workers).resync(worker, 1)  # what the controller's restart hook calls
            assert ray.get(worker.weight_checksum.remote()) == state_checksum(state)
    finally:
        learner.shutdown()
        for w in pool.workers:
            ray.kill(w)
        pools.remove()
    model, tok = load_policy(policy)
    model.load_state_dict(state)
    engine = TorchEngine(model, make_layout(cfg, tok), cfg.rollout.max_total_tokens)
    (reference,) = list(engine.generate([talk_input(talk, cfg.data)], 1, cfg.rollout.validation_sampling, seed=0))
    assert after == reference.input_ids
    assert after != before, "the update should change the greedy output (else the test proves nothing)"


def test_corrupted_bucket_is_detected_by_the_worker(ray_cluster, small_run):
    import ray

    from actors.rollout_worker import RolloutWorker
    from hpo_ray.model.build import load_policy
    from hpo_ray.sync.buckets import BucketCorruptError, pack_buckets

    _, policy, overrides = small_run
    cfg = load_config(None, overrides)
    model, _ = load_policy(policy)
    buckets = list(pack_buckets(model.state_dict(), bucket_mb=0.05, version=3))
    assert len(buckets) > 1
    buckets[1].data[17] ^= 0x40  # one flipped bit in transit
    worker = RolloutWorker.options(num_cpus=0.5).remote(cfg.model_dump(mode="json"), str(policy), 0)
    try:
        with pytest.raises(ray.exceptions.RayTaskError) as err:
            ray.get([worker.receive_bucket.remote(ray.put(b), 3, True) for b in buckets])
        assert isinstance(err.value.cause, BucketCorruptError) and "bucket 2/" in str(err.value.cause)
    finally:
        ray.kill(worker)
