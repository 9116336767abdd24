"""`hpo-ray encode`: spoken talks → a features manifest `hpo-ray train` accepts; bad input writes nothing."""

import json

import numpy as np
import pytest

from hpo_ray.cli.main import main
from hpo_ray.config import SpeechEncoderConfig, load_config
from hpo_ray.data.manifest import Manifest
from hpo_ray.speech.model import SpeechLLM

from .audio_fixtures import spoken_row, spoken_talks, write_audio_manifest


@pytest.fixture(scope="module")
def speech_llm_dir(tiny_policy_dir, tmp_path_factory):
    model = SpeechLLM.from_policy(tiny_policy_dir, SpeechEncoderConfig(left_chunks=2))
    return model.save_pretrained(tmp_path_factory.mktemp("speech") / "speech_llm")


def test_encode_output_is_accepted_by_train_and_rollouts(speech_llm_dir, tmp_path, capsys):
    from hpo_ray.cli.train_cmd import preflight
    from hpo_ray.config import SamplingConfig
    from hpo_ray.dialogue import DialogueLayout
    from hpo_ray.rollout.protocol import TalkInput
    from hpo_ray.rollout.torch_engine import TorchEngine

    audio, signals = spoken_talks(tmp_path / "audio", seconds=(2.3, 3.1))
    out = tmp_path / "features"
    assert (
        main(["encode", "--model", str(speech_llm_dir), "--audio-manifest", str(audio), "--out", str(out), "logging.progress=false"]) == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["talks"] == 2 and summary["frames"] == 29 + 39 and summary["hidden_size"] == 64
    cfg = load_config(
        None, [f"model.path={speech_llm_dir}", f"data.train_manifest={out / 'manifest.parquet'}", "algorithm.talks_per_step=2"]
    )
    preflight(cfg)  # what `hpo-ray train` checks before any actor starts
    manifest = Manifest(out / "manifest.parquet", width=64, frame_seconds=0.08)
    model = SpeechLLM.from_pretrained(speech_llm_dir)
    for talk in manifest:
        np.testing.assert_allclose(talk.frames(), model.encode(signals[talk.talk_id]), atol=1e-6, rtol=0)
        assert talk.src_sentences == ("word0 more0 .", "word1 more1 .") and talk.segments[0][0] == 0.05
    # the RL stack's rollout engine runs the LLM on the encoded frames unchanged
    talks = [TalkInput(t.talk_id, t.group_id, t.src_lang, t.tgt_lang, t.frames(), 14) for t in manifest]
    trajs = list(TorchEngine(model.llm, DialogueLayout(model.tokenizer)).generate(talks, 1, SamplingConfig(max_new_tokens=3), seed=0))
    assert sorted(t.n_frames for t in trajs) == [29, 39]


def test_bad_row_fails_before_anything_is_written(speech_llm_dir, tmp_path, capsys):
    audio, _ = spoken_talks(tmp_path / "audio", seconds=(2.0, 2.0))
    rows = [spoken_row("talk0", "wav/talk0.wav", 2.0), spoken_row("talk1", "wav/missing.wav", 2.0)]
    write_audio_manifest(tmp_path / "audio", rows)
    out = tmp_path / "features"
    assert (
        main(["encode", "--model", str(speech_llm_dir), "--audio-manifest", str(audio), "--out", str(out), "logging.progress=false"]) == 2
    )
    assert "row 1 field 'audio_path'" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".features.*"))


def test_encoder_frame_rate_must_match_the_data_config(speech_llm_dir, tmp_path):
    from hpo_ray.config import ConfigError
    from hpo_ray.speech.encode import encode_manifest

    audio, _ = spoken_talks(tmp_path / "audio", seconds=(2.0,))
    cfg = load_config(None, ["data.chunk_frames=21", "model.speech.chunk_frames=7"])
    with pytest.raises(ConfigError, match="data.chunk_frames"):
        encode_manifest(SpeechLLM.from_pretrained(speech_llm_dir), audio, tmp_path / "out", cfg)


def test_eval_accepts_an_audio_manifest_and_encodes_it_first(speech_llm_dir, tmp_path, capsys):
    audio, signals = spoken_talks(tmp_path / "audio", seconds=(2.3,))
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(speech_llm_dir),
                "--data",
                str(audio),
                "--output",
                str(out),
                "rollout.validation_sampling.max_new_tokens=4",
                "rollout.validation_sampling.greedy=true",
                "logging.progress=false",
            ]
        )
        == 0
    )
    scores = json.loads((out / "scores.json").read_text())
    assert scores["talks"] == 1
    encoded = Manifest(out / "encoded" / "manifest.parquet")
    np.testing.assert_allclose(encoded[0].frames(), SpeechLLM.from_pretrained(speech_llm_dir).encode(signals["talk0"]), atol=1e-6)


def test_encoding_on_one_thread_gives_the_same_frames_and_restores_the_thread_count(speech_llm_dir, tmp_path):
    import torch

    from hpo_ray.speech.encode import encode_manifest

    audio, _ = spoken_talks(tmp_path / "audio", seconds=(2.3, 3.1))
    cfg = load_config(None, ["logging.progress=false"])
    model = SpeechLLM.from_pretrained(speech_llm_dir)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        stream = model.stream

        def counting_stream():
            seen.append(torch.get_num_threads())
            return stream()

        model.stream = counting_stream
        encode_manifest(model, audio, tmp_path / "one", cfg)  # default: one thread
        assert seen == [1, 1] and torch.get_num_threads() == 2
        encode_manifest(model, audio, tmp_path / "two", cfg, threads=None)  # the process's count
        assert seen[2:] == [2, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for one in sorted((tmp_path / "one" / "features").glob("*.npy")):
        np.testing.assert_allclose(np.load(one), np.load(tmp_path / "two" / "features" / one.name), atol=1e-6, rtol=0)
