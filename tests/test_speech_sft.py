"""Two-stage SFT on speech: stage 1 lowers the CTC loss, every split is encoded, stage 2 trains the LLM
on those features, and the result is a speech LLM whose encoder wrote them."""

import json

import numpy as np
import pytest
import torch

from hpo_ray.config import load_config
from hpo_ray.data.manifest import Manifest
from hpo_ray.speech.model import SpeechLLM
from hpo_ray.speech.sft_speech import speech_finetune

from .audio_fixtures import spoken_row, tone_talk, write_audio_manifest, write_wav


def _spoken_data(root):
    """train/dev audio manifests of tone talks, and SFT records pointing at them (turns on the 80 ms grid)."""
    for split, seeds in (("train", (0, 1)), ("dev", (2,))):
        rows = []
        for seed in seeds:
            write_wav(root / split / "audio" / f"t{seed}.wav", tone_talk(3.0, seed))
            rows.append(spoken_row(f"t{seed}", f"audio/t{seed}.wav", 3.0))
        write_audio_manifest(root / split, rows).rename(root / split / "audio_manifest.parquet")
        (root / "sft").mkdir(exist_ok=True)
        (root / "sft" / f"{split}.jsonl").write_text(
            "".join(
                json.dumps(
                    {
                        "talk_id": f"t{seed}",
                        "split": split,
                        "manifest": f"../{split}/audio_manifest.parquet",
                        "src_lang": "en",
                        "tgt_lang": "de",
                        "turns": [{"frames": 14, "text": ""}, {"frames": 23, "text": "ziel 0 . ziel 1 ."}],
                    }
                )
                + "\n"
                for seed in seeds
            )
        )


@pytest.mark.slow
@pytest.mark.parametrize("projector", ["mlp", "ctc"])
def test_two_stage_speech_sft_hears_encodes_and_translates(tiny_policy_dir, tmp_path, projector):
    _spoken_data(tmp_path / "data")
    cfg = load_config(
        None,
        [
            f"model.speech.projector={projector}",
            "logging.progress=false",
            "sft.hear.epochs=3",
            "sft.hear.batch_size=2",
            "sft.hear.warmup_steps=1",
            "sft.epochs=2",
            "sft.batch_size=2",
            "sft.warmup_steps=1",
            "model.speech.left_chunks=2",
        ],
    )
    summary = speech_finetune(cfg, tiny_policy_dir, tmp_path / "data", tmp_path / "sft", tmp_path / "features")
    hear = summary["hear"]
    assert hear["words"] == 4 and hear["train_sentences"] == 4 and hear["dev_sentences"] == 2
    assert hear["final_ctc"] < hear["first_ctc"]
    assert summary["translate"]["train_dialogues"] == 2 and summary["translate"]["dev_loss_after"] < summary["translate"]["dev_loss_before"]
    model = SpeechLLM.from_pretrained(tmp_path / "sft")
    if projector == "ctc":  # the head stage 1 trained is the encoder's own, kept with the vocabulary it heard
        assert model.encoder.config.words == ["more0", "more1", "word0", "word1"]
    train = Manifest(tmp_path / "features" / "train" / "manifest.parquet", width=64, frame_seconds=0.08)
    talk = train.by_id("t1")
    from hpo_ray.data.audio import read_wav

    np.testing.assert_allclose(talk.frames(), model.encode(read_wav(tmp_path / "data/train/audio/t1.wav")[1]), atol=1e-6, rtol=0)
    records = [json.loads(x) for x in (tmp_path / "features" / "sft" / "train.jsonl").read_text().splitlines()]
    assert [r["manifest"] for r in records] == ["../train/manifest.parquet"] * 2


def test_whole_talk_examples_are_what_the_stream_hears(tiny_policy_dir, tmp_path):
    from hpo_ray.config import SpeechEncoderConfig
    from hpo_ray.data.audio import AudioManifest
    from hpo_ray.speech.hear import HearingHead, talk_examples

    _spoken_data(tmp_path / "data")
    model = SpeechLLM.from_policy(
        tiny_policy_dir, SpeechEncoderConfig(left_chunks=2, projector="ctc"), words=["more0", "more1", "word0", "word1"]
    )
    manifest = AudioManifest(tmp_path / "data" / "train" / "audio_manifest.parquet")
    examples = talk_examples(manifest, model.encoder.config.words, model.encoder)
    assert [x.words for x in examples] == [[3, 1, 4, 2]] * 2  # every word of the talk, in order (ids: vocabulary + 1)
    talk = next(iter(manifest))
    assert examples[0].n_frames == -(-len(talk.samples()) // 1280) and len(examples[0].mel) % (8 * 14) == 0
    # the CTC head over a whole-talk example sees exactly the frames the stream writes for that talk
    head = HearingHead(model.encoder, 4)
    with torch.no_grad():
        posteriors = head(torch.from_numpy(examples[0].mel)[None])[0, : examples[0].n_frames].softmax(-1)
    np.testing.assert_allclose((posteriors @ model.encoder.word_table).numpy(), model.encode(talk.samples()), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_talk_epochs_train_the_crop_trained_head_on_whole_talks_and_report_the_streamed_dev_wer(tiny_policy_dir, tmp_path):
    _spoken_data(tmp_path / "data")
    base = ["model.speech.projector=mlp", "logging.progress=false", "sft.hear.epochs=2", "sft.hear.batch_size=2"]
    base += ["sft.hear.warmup_steps=1", "sft.epochs=1", "sft.batch_size=2", "model.speech.left_chunks=2"]
    crops = speech_finetune(load_config(None, base), tiny_policy_dir, tmp_path / "data", tmp_path / "a", tmp_path / "fa")["hear"]
    assert crops["talk_epochs"] == 0 and 0 <= crops["talk_dev_wer"]
    talks = load_config(None, [*base, "sft.hear.talk_epochs=2"])
    hear = speech_finetune(talks, tiny_policy_dir, tmp_path / "data", tmp_path / "b", tmp_path / "fb")["hear"]
    assert hear["talk_epochs"] == 2 and hear["talk_dev_wer_before"] == crops["talk_dev_wer"]  # same crops phase first
    assert set(hear) >= {"talk_final_ctc", "talk_dev_wer"}
    before, after = SpeechLLM.from_pretrained(tmp_path / "a").encoder, SpeechLLM.from_pretrained(tmp_path / "b").encoder
    changed = [n for (n, p), q in zip(before.named_parameters(), after.parameters()) if not torch.equal(p, q)]
    assert changed  # the talk epochs trained the encoder further


@pytest.mark.slow
def test_a_second_sft_start_translates_from_the_kept_stage_1_model_and_refuses_other_audio(tiny_policy_dir, tmp_path):
    import shutil

    from hpo_ray.speech.sft_speech import translate_heard

    _spoken_data(tmp_path / "data")
    base = ["model.speech.projector=ctc", "logging.progress=false", "sft.hear.epochs=2", "sft.hear.batch_size=2"]
    cfg = load_config(None, [*base, "sft.hear.warmup_steps=1", "sft.epochs=1", "sft.batch_size=2", "model.speech.left_chunks=2"])
    speech_finetune(cfg, tiny_policy_dir, tmp_path / "data", tmp_path / "sft", tmp_path / "features", heard_dir=tmp_path / "heard")
    other = tmp_path / "data-other"  # the same talks, other target texts (as the study's corrupted SFT data)
    shutil.copytree(tmp_path / "data", other)
    sft_train = other / "sft" / "train.jsonl"
    sft_train.write_text(sft_train.read_text().replace("ziel 0 . ziel 1 .", "ziel 0 ."))
    summary = translate_heard(cfg, tmp_path / "heard", other, tmp_path / "features", tmp_path / "sft-other", "sft-other")
    assert summary["translate"]["train_dialogues"] == 2 and (tmp_path / "sft-other" / "sft_summary.json").is_file()
    records = [json.loads(x) for x in (tmp_path / "features" / "sft-other" / "train.jsonl").read_text().splitlines()]
    assert [r["manifest"] for r in records] == ["../train/manifest.parquet"] * 2 and records[0]["turns"][1]["text"] == "ziel 0 ."
    heard, first, second = (SpeechLLM.from_pretrained(tmp_path / d).encoder for d in ("heard", "sft", "sft-other"))
    for a, b, c in zip(heard.parameters(), first.parameters(), second.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)  # one encoder: both starts hear the same frames
    write_wav(other / "train" / "audio" / "t1.wav", tone_talk(3.0, 7))  # another recording under the same talk id
    with pytest.raises(ValueError, match="t1.wav differs from"):
        translate_heard(cfg, tmp_path / "heard", other, tmp_path / "features", tmp_path / "sft-bad", "sft-bad")
