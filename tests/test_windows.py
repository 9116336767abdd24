"""Long talks in training: cut into windows of whole sentences (`data.max_talk_seconds`), or refused by
preflight naming the talk; a step whose rollouts were all truncated is an error, not a silent no-op."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from hpo_ray.config import ConfigError, load_config
from hpo_ray.data.manifest import Manifest
from hpo_ray.data.windows import talk_windows, training_talks
from hpo_ray.experience import sequence_item
from tests.conftest import talk_row, write_manifest


def long_talk(tmp_path, n_sent=20, seconds_per_sent=3.0, width=8, talk_id="long"):
    """A `n_sent × seconds_per_sent` talk with distinct frame values (frame k is all k)."""
    n_frames = int(n_sent * seconds_per_sent / 0.08)
    frames = np.repeat(np.arange(n_frames, dtype=np.float32)[:, None], width, axis=1)
    rows = [talk_row(talk_id, f"{talk_id}.npy", n_sent=n_sent, seconds_per_sent=seconds_per_sent)]
    return write_manifest(tmp_path, rows, {f"{talk_id}.npy": frames})


def test_long_talk_becomes_windows_of_whole_sentences_that_tile_it(tmp_path):
    (talk,) = Manifest(long_talk(tmp_path))
    windows = talk_windows(talk, 13.0)
    assert len(windows) > 1 and all(w.seconds <= 13.0 + 1e-9 for w in windows)
    # every sentence once, in order, with its reference; frames tile the talk exactly
    assert sum((w.src_sentences for w in windows), ()) == talk.src_sentences
    assert sum((w.ref_sentences for w in windows), ()) == talk.ref_sentences
    np.testing.assert_array_equal(np.concatenate([w.frames() for w in windows]), talk.frames())
    for w in windows:
        start = w.frame_start * talk.frame_seconds
        originals = talk.segments[talk.src_sentences.index(w.src_sentences[0]) :][: len(w.segments)]
        np.testing.assert_allclose(w.segments, [(s - start, e - start) for s, e in originals])
        assert 0.0 <= w.segments[0][0] and w.segments[-1][1] <= w.seconds + talk.frame_seconds
        assert w.frames()[0, 0] == w.frame_start  # frames sliced from the talk at the window start
    # deterministic, and distinct ids and group ids per window (the group normaliser groups by group_id)
    assert talk_windows(talk, 13.0) == windows
    assert len({w.group_id for w in windows}) == len({w.talk_id for w in windows}) == len(windows)
    assert talk.group_id not in {w.group_id for w in windows}


def test_learner_reads_the_windows_frames(tmp_path):
    (talk,) = Manifest(long_talk(tmp_path))
    window = talk_windows(talk, 13.0)[2]
    traj = SimpleNamespace(input_ids=[], assistant_mask=[], logprobs=[], n_frames=window.n_frames, group_id=window.group_id)
    np.testing.assert_array_equal(sequence_item(traj, window, 0.0).frames(), window.frames())


def test_talk_that_fits_and_overlong_sentence(tmp_path):
    (talk,) = Manifest(long_talk(tmp_path, n_sent=4, seconds_per_sent=5.0))
    assert talk_windows(talk, None) == [talk] and talk_windows(talk, 25.0) == [talk]
    windows = talk_windows(talk, 3.0)  # every sentence is longer than the limit: one window each, never cut
    assert [len(w.segments) for w in windows] == [1, 1, 1, 1]
    assert training_talks([talk, talk], 3.0) == windows + windows


def preflight_config(tmp_path, policy, manifest, *over):
    return load_config(
        None,
        [
            f"model.path={policy}",
            f"data.train_manifest={manifest}",
            "rollout.max_total_tokens=1024",
            "rollout.sampling.max_new_tokens=8",
            "algorithm.talks_per_step=1",
            *over,
        ],
    )


def test_preflight_refuses_a_talk_that_cannot_fit_and_accepts_its_windows(tmp_path, tiny_policy_dir):
    from hpo_ray.cli.train_cmd import preflight

    width = json.loads((tiny_policy_dir / "config.json").read_text())["hidden_size"]
    manifest = long_talk(tmp_path, n_sent=20, seconds_per_sent=3.0, width=width, talk_id="lecture-7")
    with pytest.raises(ConfigError, match=r"talk 'lecture-7' \(60.0 s\) may need \d+ tokens.*data.max_talk_seconds") as err:
        preflight(preflight_config(tmp_path, tiny_policy_dir, manifest))
    assert err.value.path == "rollout.max_total_tokens" and str(manifest) in str(err.value)
    preflight(preflight_config(tmp_path, tiny_policy_dir, manifest, "data.max_talk_seconds=15"))


def test_step_with_every_rollout_truncated_is_an_error():
    from hpo_ray.learner.step_batch import make_batch

    cfg = load_config(None, ["rollout.max_total_tokens=300"])
    truncated = [
        SimpleNamespace(truncated=True, talk_id="t", group_id="g", num_generated=3, input_ids=[1] * 300, weight_version=0) for _ in range(4)
    ]
    scores = [SimpleNamespace(quality=0.0, latency=0.0, hinged_latency=0.0, stream_laal=None, group="g")] * 4
    with pytest.raises(RuntimeError, match="all 4 rollouts hit rollout.max_total_tokens=300"):  # was: an empty batch, no update
        make_batch(truncated, scores, [SimpleNamespace(talk_id="t")], cfg)
