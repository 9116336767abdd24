"""The chunk-causal speech encoder: no future leakage, streaming equals one-shot, HF save/load."""

import numpy as np
import pytest
import torch

from hpo_ray.config import SpeechEncoderConfig
from hpo_ray.speech.encoder import build_encoder
from hpo_ray.speech.features import LogMel
from hpo_ray.speech.model import SpeechLLM
from hpo_ray.speech.stream import EncoderStream, encode_samples

from .audio_fixtures import tone_talk

SECTION = SpeechEncoderConfig(left_chunks=2)
CTC_SECTION = SpeechEncoderConfig(left_chunks=2, projector="ctc")
WORDS = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module", params=["mlp", "ctc"])
def encoder(request):
    """Both projectors: every causality and streaming test below holds for each."""
    return build_encoder(SECTION, 64) if request.param == "mlp" else build_encoder(CTC_SECTION, 64, WORDS)


def one_shot(encoder, samples: np.ndarray) -> np.ndarray:
    """The training path: whole-talk log-mel (zero-padded to whole chunks) through `forward`."""
    c = encoder.config
    padded = np.zeros(-(-len(samples) // c.chunk_samples) * c.chunk_samples, np.float32)
    padded[: len(samples)] = samples
    mel = LogMel(c.sample_rate, c.n_mels, c.window_samples, c.hop_samples).talk(padded)
    with torch.no_grad():
        frames = encoder(torch.from_numpy(mel)[None])[0].numpy()
    return frames[: -(-len(samples) // (c.hop_samples * c.subsampling))]


def test_chunk_frames_do_not_depend_on_later_audio(encoder):
    """Streamed and batched (training) encodings of chunk k are the same without, or with other, later audio."""
    c = encoder.config
    audio = tone_talk(c.chunk_samples * 3.4 / 16000, seed=1)
    full, full_batch = encode_samples(encoder, audio), one_shot(encoder, audio)
    for k in range(3):
        end = (k + 1) * c.chunk_samples
        upto = (k + 1) * c.chunk_frames
        cut = encode_samples(encoder, audio[:end])
        np.testing.assert_allclose(cut[:upto], full[:upto], atol=1e-5, rtol=0)
        np.testing.assert_allclose(one_shot(encoder, audio[:end])[:upto], full_batch[:upto], atol=1e-5, rtol=0)
        other_future = audio.copy()
        other_future[end:] = tone_talk(len(audio[end:]) / 16000, seed=10 + k)
        np.testing.assert_allclose(encode_samples(encoder, other_future)[:upto], full[:upto], atol=1e-5, rtol=0)
    # and the frames of a later chunk do change with its audio (the comparison can fail)
    assert np.abs(encode_samples(encoder, other_future)[-1] - full[-1]).max() > 1e-3


def test_streaming_in_arbitrary_pieces_equals_one_shot(encoder):
    c = encoder.config
    audio = tone_talk(c.chunk_samples * 5.3 / 16000, seed=2)
    reference = one_shot(encoder, audio)
    rng = np.random.default_rng(0)
    stream, parts, start = EncoderStream(encoder), [], 0
    while start < len(audio):
        n = int(rng.integers(1, c.chunk_samples * 2))
        got = stream.push(audio[start : start + n])
        start += n
        assert len(got) == min(start, len(audio)) // c.chunk_samples * c.chunk_frames - sum(len(p) for p in parts)
        parts.append(got)
    parts.append(stream.flush())
    streamed = np.concatenate(parts)
    assert streamed.shape == (int(np.ceil(len(audio) / (c.hop_samples * c.subsampling))), 64)
    assert streamed.dtype == np.float32
    np.testing.assert_allclose(streamed, reference, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(streamed, encode_samples(encoder, audio))


def test_stream_state_stays_bounded_by_the_left_context(encoder):
    c = encoder.config
    stream = EncoderStream(encoder)
    stream.push(tone_talk(c.chunk_samples * 6 / 16000, seed=3))
    assert all(x.shape[1] == c.left_chunks * c.chunk_frames for x in stream.state.layers)
    assert stream.state.next_frame == 6 * c.chunk_frames
    with pytest.raises(ValueError, match="NaN"):
        stream.push(np.array([0.0, np.nan], np.float32))


def test_speech_llm_save_load_gives_identical_outputs(tiny_policy_dir, tmp_path):
    from hpo_ray.model.build import export_policy, load_policy

    model = SpeechLLM.from_policy(tiny_policy_dir, SECTION)
    out = model.save_pretrained(tmp_path / "speech_llm")
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "speech_encoder" / "config.json").is_file() and (out / "speech_encoder" / "model.safetensors").is_file()
    loaded = SpeechLLM.from_pretrained(out)
    audio = tone_talk(2.5, seed=4)
    frames = model.encode(audio)
    np.testing.assert_array_equal(loaded.encode(audio), frames)
    stream = loaded.stream()
    np.testing.assert_array_equal(np.concatenate([stream.push(audio[:20000]), stream.push(audio[20000:]), stream.flush()]), frames)
    with torch.no_grad():
        emb = torch.from_numpy(frames)[None]
        torch.testing.assert_close(loaded.llm(inputs_embeds=emb).logits, model.llm(inputs_embeds=emb).logits, atol=0, rtol=0)
    llm_only, _ = load_policy(out, dtype="float32")  # the RL stack's loader sees a plain causal LM
    assert type(llm_only).__name__ == "Qwen3ForCausalLM"
    # an HPO checkpoint exported from it keeps the encoder, so it stays a speech LLM
    exported = export_policy(llm_only.state_dict(), out, tmp_path / "exported")
    np.testing.assert_array_equal(SpeechLLM.from_pretrained(exported).encode(audio), frames)
    with pytest.raises(FileNotFoundError, match="speech_encoder"):
        SpeechLLM.from_pretrained(tiny_policy_dir)


def test_ctc_projector_writes_posterior_weighted_word_vectors_and_reloads(tiny_policy_dir, tmp_path):
    """The ctc projector's frames are its own head's posteriors times the word table; both survive save/load."""
    model = SpeechLLM.from_policy(tiny_policy_dir, CTC_SECTION, words=WORDS)
    enc = model.encoder
    assert enc.config.words == WORDS and tuple(enc.word_table.shape) == (len(WORDS) + 1, 64)
    audio = tone_talk(2.5, seed=6)
    c = enc.config
    padded = np.zeros(-(-len(audio) // c.chunk_samples) * c.chunk_samples, np.float32)
    padded[: len(audio)] = audio
    mel = torch.from_numpy(LogMel(c.sample_rate, c.n_mels, c.window_samples, c.hop_samples).talk(padded))[None]
    with torch.no_grad():
        logits, frames = enc.ctc_logits(mel), enc(mel)
    assert logits.shape[-1] == len(WORDS) + 1
    torch.testing.assert_close(frames, logits.softmax(-1) @ enc.word_table, atol=1e-6, rtol=0)
    loaded = SpeechLLM.from_pretrained(model.save_pretrained(tmp_path / "ctc_llm"))
    assert loaded.encoder.config.words == WORDS
    torch.testing.assert_close(loaded.encoder.word_table, enc.word_table, atol=0, rtol=0)
    np.testing.assert_array_equal(loaded.encode(audio), model.encode(audio))
    with pytest.raises(ValueError, match="source words"):
        build_encoder(CTC_SECTION, 64)
    with pytest.raises(ValueError, match="no CTC head"):
        build_encoder(SECTION, 64).ctc_logits(mel)


def test_projector_width_must_match_the_llm(tiny_policy_dir):
    from hpo_ray.model.build import load_policy

    llm, tok = load_policy(tiny_policy_dir, dtype="float32")
    with pytest.raises(ValueError, match="hidden size"):
        SpeechLLM(build_encoder(SECTION, 32), llm, tok)


def test_config_rejects_an_encoder_off_the_data_frame_grid():
    from hpo_ray.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="model.speech.hop_samples"):
        load_config(None, ["model.speech.hop_samples=100"])
    with pytest.raises(ConfigError, match="model.speech.chunk_frames"):
        load_config(None, ["model.speech.chunk_frames=5"])
    assert load_config(None, ["model.speech.chunk_frames=7"]).model.speech.frame_seconds == 0.08


def test_log_mel_equals_transformers_spectrogram():
    front = LogMel(16000, 80, 400, 160)
    audio = np.concatenate([np.zeros(front.context_samples, np.float32), tone_talk(0.5, seed=5)])
    fast, ref = front.frames(audio), front.reference_frames(audio)
    assert fast.shape == ref.shape == (50, 80)
    np.testing.assert_allclose(fast, ref, atol=1e-5, rtol=0)
