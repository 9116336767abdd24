"""The typed config: defaults, overrides, rejections naming the key path, shipped configs valid."""

from pathlib import Path

import pytest

from hpo_ray.cli.main import main as cli
from hpo_ray.config import ConfigError, RunConfig, load_config, to_yaml

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("**/*.yaml"))


def test_defaults_load_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.algorithm.kl_coef == 0.01 and cfg.reward.hinge == "sentence"


def test_dotted_override_sets_nested_value_with_yaml_typing():
    cfg = load_config(None, ["algorithm.kl_coef=0.02", "cluster.rollout_resources={node_a: 1}", "reward.splitters.de=.!?;"])
    assert cfg.algorithm.kl_coef == 0.02
    assert cfg.cluster.rollout_resources == {"node_a": 1.0}
    assert cfg.reward.splitters == {"de": ".!?;"}


@pytest.mark.parametrize(
    "override, path",
    [
        ("algorithm.kl_coefficient=0.1", "algorithm.kl_coefficient"),  # unknown key
        ("algorithm.kl_coef=lots", "algorithm.kl_coef"),  # wrong type
        ("learner.zero_stage=5", "learner.zero_stage"),  # not an allowed value
        ("rollout.sampling.top_p=1.5", "rollout.sampling.top_p"),  # out of range
        ("bogus.key=1", "bogus"),  # unknown section
        ("data.chunk_seconds=2.0", "data.chunk_seconds"),  # ≠ frames × frame seconds × m
        ("reward.quality=comet", "reward.quality_model_path"),  # needs a local model path
    ],
)
def test_bad_values_are_rejected_naming_the_key_path(override, path):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert err.value.path == path
    assert path in str(err.value)


@pytest.mark.parametrize(
    "override, path",
    [
        ("learner.optimizer.lr=inf", "learner.optimizer.lr"),  # was accepted: every weight NaN after step 1
        ("learner.optimizer.lr=.nan", "learner.optimizer.lr"),
        ("algorithm.kl_coef=.inf", "algorithm.kl_coef"),
        ("algorithm.clip_high=nan", "algorithm.clip_high"),
        ("algorithm.truncated_reward=-inf", "algorithm.truncated_reward"),
        ("reward.alpha=-1", "reward.alpha"),
        ("reward.beta=inf", "reward.beta"),
        ("reward.target_quality=nan", "reward.target_quality"),
        ("learner.optimizer.betas=[0.9, 1.5]", "learner.optimizer.betas.1"),
        ("cluster.learner_resources={node_a: inf}", "cluster.learner_resources.node_a"),
        ("run.seed=-5", "run.seed"),  # was accepted: failed after actors started
        ("data.seed=4294967296", "data.seed"),
        ("model.tiny.seed=-1", "model.tiny.seed"),
        ("learner.max_skipped_updates=0", "learner.max_skipped_updates"),
    ],
)
def test_non_finite_and_out_of_range_numbers_are_rejected_naming_the_key(override, path):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert err.value.path == path


def test_train_with_an_infinite_learning_rate_exits_2_naming_the_key_before_ray_starts(capsys):
    import ray

    demo = Path(__file__).parents[1] / "configs" / "demo-vectors.yaml"
    assert cli(["train", "--config", str(demo), "learner.optimizer.lr=inf"]) == 2
    err = capsys.readouterr().err
    assert "learner.optimizer.lr" in err and "finite" in err
    assert not ray.is_initialized()


def test_turns_times_chunk_shorter_than_a_talk_is_rejected():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.max_talk_seconds=67.2", "rollout.max_turns=30"])
    assert err.value.path == "rollout.max_turns"
    load_config(None, ["data.max_talk_seconds=67.2", "rollout.max_turns=60"])  # 60 × 1.12 s covers it


def test_chunk_seconds_consistent_with_multiplier_is_accepted():
    cfg = load_config(None, ["data.multiplier=3", "data.chunk_seconds=3.36"])
    assert cfg.data.turn_frames == 42 and abs(cfg.data.turn_seconds - 3.36) < 1e-9


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm:\n  steps: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    nested = tmp_path / "nested.yaml"
    nested.write_text("algorithm:\n  group_size: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(nested)
    assert err.value.path == "algorithm.group_size"


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(None, ["algorithm.kl_coef=0.05", "model.path=/ckpt/x"])
    (tmp_path / "c.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "c.yaml") == cfg


def test_config_command_prints_resolved_config_and_fails_cleanly(capsys):
    assert cli(["config", "algorithm.kl_coef=0.03"]) == 0
    assert "kl_coef: 0.03" in capsys.readouterr().out
    assert cli(["config", "algorithm.nope=1"]) == 2
    assert "algorithm.nope" in capsys.readouterr().err


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path):
    load_config(path)


def test_configs_folder_is_not_empty():
    assert any(p.name == "demo.yaml" for p in CONFIGS)


def test_base_file_is_merged_under_the_child(tmp_path):
    (tmp_path / "parent.yaml").write_text("algorithm: {kl_coef: 0.05, group_size: 4}\nreward: {beta: 0.3}\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nalgorithm: {group_size: 6}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.algorithm.kl_coef, cfg.algorithm.group_size, cfg.reward.beta) == (0.05, 6, 0.3)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "loop.yaml")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], "object_store"),  # CPU default
        (["learner.device=cuda"], "broadcast"),  # separate GPU pools: NCCL group
        (["cluster.gpus_per_learner=1"], "broadcast"),  # device auto with GPU bundles
        (["learner.device=cuda", "cluster.colocate=true"], "cuda_ipc"),  # engines on the learner's GPU
        (["learner.device=cuda", "sync.backend=nccl"], "broadcast"),
        (["sync.backend=broadcast"], "broadcast"),  # gloo on CPU
    ],
)
def test_auto_sync_backend_follows_devices_and_colocation(overrides, expected):
    from hpo_ray.sync.choice import choose_sync

    assert choose_sync(load_config(None, overrides)).transport == expected


@pytest.mark.parametrize(
    "overrides, group",
    [
        (["sync.backend=broadcast"], "gloo"),  # CPU learner
        (["learner.device=cuda"], "nccl"),
        (["learner.device=cuda", "sync.backend=nccl"], "nccl"),  # the alias: broadcast over NCCL
        ([], None),  # object store: no group
    ],
)
def test_broadcast_group_backend_is_chosen_with_the_transport(overrides, group):
    from hpo_ray.sync.choice import choose_sync

    assert choose_sync(load_config(None, overrides)).group == group


def test_cuda_ipc_sync_needs_colocated_gpu_pools():
    with pytest.raises(ConfigError, match="cluster.colocate"):
        load_config(None, ["learner.device=cuda", "sync.backend=cuda_ipc"])
    with pytest.raises(ConfigError, match="needs GPUs"):
        load_config(None, ["learner.device=cpu", "sync.backend=cuda_ipc", "cluster.colocate=true"])
    assert load_config(None, ["learner.device=cuda", "sync.backend=cuda_ipc", "cluster.colocate=true"]).sync.backend == "cuda_ipc"
