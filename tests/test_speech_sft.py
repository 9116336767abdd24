"""Two-stage SFT on speech: stage 1 lowers the CTC loss, every split is encoded, stage 2 trains the LLM
on those features, and the result is a speech LLM whose encoder wrote them."""

import json

import numpy as np
import pytest

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
