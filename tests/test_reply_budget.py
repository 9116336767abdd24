"""The reply budget scales with the chunk multiplier: `max_new_tokens` is per base chunk (m × it per
turn, unless `max_new_tokens_by_multiplier` names m), in the config check, the engine, streaming and
the training preflight alike."""

import json

import numpy as np
import pytest

from hpo_ray.config import ConfigError, SamplingConfig, load_config
from hpo_ray.rollout.protocol import TalkInput
from hpo_ray.rollout.torch_engine import TorchEngine
from hpo_ray.serve.streaming import StreamingTranslator
from tests.test_windows import long_talk, preflight_config

DEMO = "configs/demo-vectors.yaml"


def test_reply_budget_is_the_per_chunk_budget_times_the_multiplier():
    assert [SamplingConfig(max_new_tokens=24).reply_budget(m) for m in (1, 2, 3, 4)] == [24, 48, 72, 96]


def test_a_multiplier_named_in_the_map_gets_its_own_cap():
    original = SamplingConfig(max_new_tokens=40, max_new_tokens_by_multiplier={3: 160})  # the original HPO's schedule
    assert [original.reply_budget(m) for m in (1, 2, 3, 4)] == [40, 80, 160, 160]


def test_validation_sampling_scales_and_takes_its_own_map():
    cfg = load_config(DEMO, ["rollout.validation_sampling.max_new_tokens_by_multiplier={2: 30}"])
    assert [cfg.rollout.validation_sampling.reply_budget(m) for m in (1, 2, 3, 4)] == [24, 30, 72, 96]
    assert [cfg.rollout.sampling.reply_budget(m) for m in (1, 2, 3, 4)] == [24, 48, 72, 96]


@pytest.mark.parametrize(
    "overrides, path",
    [
        (["rollout.sampling.max_new_tokens=30", "rollout.validation_sampling.max_new_tokens=5"], "rollout.sampling.max_new_tokens"),
        (
            ["rollout.sampling.max_new_tokens=5", "rollout.validation_sampling.max_new_tokens=30"],
            "rollout.validation_sampling.max_new_tokens",
        ),
        (
            [
                "rollout.sampling.max_new_tokens=5",
                "rollout.validation_sampling.max_new_tokens=5",
                "rollout.sampling.max_new_tokens_by_multiplier={1: 100}",
            ],
            "rollout.sampling.max_new_tokens_by_multiplier.1",
        ),
        (["rollout.sampling.max_new_tokens_by_multiplier={0: 5}"], "rollout.sampling.max_new_tokens_by_multiplier.0.[key]"),
    ],
    ids=["scaled", "validation-scaled", "map-entry", "bad-multiplier"],
)
def test_config_refuses_a_reply_budget_the_token_cap_cannot_hold(overrides, path):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rollout.max_total_tokens=100", "data.multiplier=4", *overrides])
    assert err.value.path == path


def test_a_per_chunk_budget_that_fits_at_m_1_is_refused_at_m_4_unless_the_map_caps_it():
    fits = ["rollout.max_total_tokens=100", "rollout.sampling.max_new_tokens=30", "rollout.validation_sampling.max_new_tokens=5"]
    load_config(None, fits)
    with pytest.raises(ConfigError, match=r"30 per base chunk × data.multiplier=4 = 120") as err:
        load_config(None, [*fits, "data.multiplier=4"])
    assert err.value.path == "rollout.sampling.max_new_tokens"
    load_config(None, [*fits, "data.multiplier=4", "rollout.sampling.max_new_tokens_by_multiplier={4: 60}"])


def make_talk(talk_id: str, n_frames: int, multiplier: int, width: int = 64, seed: int = 0) -> TalkInput:
    frames = np.random.default_rng(seed).standard_normal((n_frames, width)).astype(np.float32)
    return TalkInput(talk_id, talk_id, "en", "de", frames, 14 * multiplier, multiplier=multiplier)


def reply_lengths(traj) -> list[int]:
    return [len(ids) for ids in traj.turn_token_ids]


def test_a_turn_at_m_2_writes_more_than_the_per_chunk_cap(tiny_model, layout):
    # the random tiny model rarely closes a turn, so replies run to their budget
    talks = [make_talk("m1", 84, 1), make_talk("m2", 84, 2)]
    trajs = list(TorchEngine(tiny_model, layout).generate(talks, 2, SamplingConfig(max_new_tokens=3), seed=0))
    m1 = [n for t in trajs if t.talk_id == "m1" for n in reply_lengths(t)]
    m2 = [n for t in trajs if t.talk_id == "m2" for n in reply_lengths(t)]
    assert max(m1) == 3 and max(m2) == 6 and min(m2) >= 1  # one batch, each dialogue at its own budget
    capped = SamplingConfig(max_new_tokens=3, max_new_tokens_by_multiplier={2: 4})
    (traj,) = TorchEngine(tiny_model, layout).generate([talks[1]], 1, capped, seed=0)
    assert max(reply_lengths(traj)) == 4


def test_streaming_at_m_2_gets_the_engine_output_with_the_scaled_budget(tiny_model, layout):
    talk = make_talk("m2", 87, 2, seed=1)
    sampling = SamplingConfig(greedy=True, max_new_tokens=3)
    (traj,) = TorchEngine(tiny_model, layout).generate([talk], 1, sampling, seed=0)
    translator = StreamingTranslator(TorchEngine(tiny_model, layout), "en", "de", sampling, 0, talk.talk_id, multiplier=2)
    start = 0
    for size in talk.turn_sizes():
        translator.turn(talk.frames[start : start + size])
        start += size
    assert [t.text for t in translator.turns] == traj.turn_texts
    assert translator.recorder.ids == traj.input_ids
    assert max(reply_lengths(traj)) > 3


def test_preflight_counts_the_reply_budget_at_the_run_multiplier(tmp_path, tiny_policy_dir):
    from hpo_ray.cli.train_cmd import preflight

    width = json.loads((tiny_policy_dir / "config.json").read_text())["hidden_size"]
    manifest = long_talk(tmp_path, n_sent=20, seconds_per_sent=3.0, width=width, talk_id="lecture-7")
    at_m4 = ["data.max_talk_seconds=15", "data.multiplier=4", "rollout.sampling.max_new_tokens=60"]
    preflight(preflight_config(tmp_path, tiny_policy_dir, manifest, *at_m4, "rollout.sampling.max_new_tokens_by_multiplier={4: 60}"))
    with pytest.raises(ConfigError, match=r"240 new tokens per turn at data.multiplier=4") as err:
        preflight(preflight_config(tmp_path, tiny_policy_dir, manifest, *at_m4))
    assert err.value.path == "rollout.max_total_tokens"
