"""Two-stage SFT on speech (the paper's appendix): hear, then translate; then the features for HPO.

1. *Hear*: encoder + projector learn CTC on each train sentence's source words (`hear.py`), then, with
   `sft.hear.talk_epochs`, on whole talks: the stream's view, each sentence after its talk's left context.
2. Every split's audio is encoded with that encoder (`hpo-ray encode`'s code) into `features_dir`,
   and the dialogue-form SFT records are pointed at those features manifests.
3. *Translate*: the LLM is fine-tuned on the dialogues with the encoder frozen (`hpo_ray.sft`).
The result is a speech LLM (the SFT LLM + the stage-1 encoder); HPO trains on `features_dir`.
"""

import json
import os
import tempfile
import time
from pathlib import Path

from hpo_ray.config import RunConfig
from hpo_ray.data.audio import AudioManifest

from .encode import check_compatible, encode_manifest
from .encoder import ENCODER_FOLDER
from .hear import HearingHead, sentence_examples, talk_examples, train_hearing, word_error_rate, word_vocab
from .model import SpeechLLM

AUDIO_MANIFEST = "audio_manifest.parquet"
SPLITS = ("train", "dev", "test")


def open_speech_llm(init: Path, cfg: RunConfig, words: list[str] | None = None) -> SpeechLLM:
    """A speech LLM directory as is, or an LLM-only directory plus a fresh encoder from `model.speech`
    (`words`: the train talks' source words, the classes of a fresh `ctc` projector)."""
    if (init / ENCODER_FOLDER / "config.json").is_file():
        return SpeechLLM.from_pretrained(init)
    return SpeechLLM.from_policy(init, cfg.model.speech, words=words)


def hear_talks(model: SpeechLLM, manifests: dict[str, AudioManifest], vocab: list[str], head: HearingHead, cfg: RunConfig) -> dict:
    """After the crops, `sft.hear.talk_epochs` on whole talks (the stream's view); returns the dev word error
    rate on whole talks before and after that (streamed WER: what stage 2 and HPO hear)."""
    hear = cfg.sft.hear
    dev = talk_examples(manifests["dev"], vocab, model.encoder) if "dev" in manifests else None
    if not hear.talk_epochs:
        wer = word_error_rate(model.encoder, head, dev, hear.batch_size) if dev else None
        return {"talk_epochs": 0, "talk_dev_wer": wer}
    train = talk_examples(manifests["train"], vocab, model.encoder)
    talks_cfg = hear.model_copy(update={"epochs": hear.talk_epochs, "lr": hear.talk_lr})
    done = train_hearing(model.encoder, train, len(vocab), talks_cfg, dev, progress=cfg.logging.progress, head=head)
    return {
        "talk_epochs": hear.talk_epochs,
        "talk_final_ctc": done["train_loss"][-1],
        "talk_dev_wer_before": done["dev_wer_before"],
        "talk_dev_wer": done["dev_wer"],
    }


def point_sft_at_features(sft_dir: Path, out_dir: Path, features: dict[Path, Path]) -> list[Path]:
    """Copy `sft_dir`/{train,dev}.jsonl to `out_dir`, each record's `manifest` replaced by its encoded features manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("train.jsonl", "dev.jsonl"):
        if not (sft_dir / name).is_file():
            continue
        lines = []
        for line_no, line in enumerate((sft_dir / name).read_text().splitlines(), start=1):
            if not line.strip():
                continue
            rec = json.loads(line)
            source = (sft_dir / rec["manifest"]).resolve()
            if source not in features:
                raise ValueError(
                    f"{sft_dir / name} line {line_no} field 'manifest': {source} is not one of the encoded "
                    f"audio manifests {sorted(map(str, features))}"
                )
            rec["manifest"] = os.path.relpath(features[source], out_dir)
            lines.append(json.dumps(rec, ensure_ascii=False))
        (out_dir / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(out_dir / name)
    return written


def speech_finetune(cfg: RunConfig, init: Path, data_dir: Path, out: Path, features_dir: Path, heard_dir: Path | None = None) -> dict:
    """Stage 1 (hear) → encode every split → stage 2 (translate, encoder frozen); returns the summary
    (with each part's wall seconds). `heard_dir` keeps the stage-1 model (the LLM as it came, the trained
    encoder), from which `translate_heard` fine-tunes other SFT data on the same features."""
    from hpo_ray.sft import finetune

    started = time.perf_counter()
    audio = {s: data_dir / s / AUDIO_MANIFEST for s in SPLITS if (data_dir / s / AUDIO_MANIFEST).is_file()}
    if "train" not in audio:
        raise FileNotFoundError(f"{data_dir}/train/{AUDIO_MANIFEST} not found (spoken talks: `hpo-ray synth --speech`)")
    manifests = {s: AudioManifest(p) for s, p in audio.items()}  # every wav checked before training
    heard_words = word_vocab([manifests["train"]])
    model = open_speech_llm(Path(init), cfg, heard_words)
    check_compatible(model, cfg)
    # a ctc projector hears its own classes (words of other talks are dropped from the targets)
    vocab = model.encoder.config.words if model.encoder.config.projector == "ctc" else heard_words
    margin = cfg.sft.hear.margin_seconds
    train = sentence_examples(manifests["train"], vocab, model.encoder, margin)
    dev = sentence_examples(manifests["dev"], vocab, model.encoder, margin) if "dev" in manifests else None
    head = HearingHead(model.encoder, len(vocab))
    hear = train_hearing(model.encoder, train, len(vocab), cfg.sft.hear, dev, progress=cfg.logging.progress, head=head)
    streamed = hear_talks(model, manifests, vocab, head, cfg)
    seconds = {"hear": time.perf_counter() - started}
    features = {}
    for split, path in audio.items():
        encode_manifest(model, path, features_dir / split, cfg)
        features[path.resolve()] = (features_dir / split / "manifest.parquet").resolve()
    point_sft_at_features(data_dir / "sft", features_dir / "sft", features)
    seconds["encode"] = time.perf_counter() - started - seconds["hear"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".speech-sft.", dir=out.parent) as tmp:
        heard = model.save_pretrained(Path(heard_dir) if heard_dir else Path(tmp) / "heard")
        translate = finetune(cfg, heard, out, features_dir / "sft")  # keeps heard's speech_encoder/
    seconds["translate"] = time.perf_counter() - started - seconds["hear"] - seconds["encode"]
    summary = {
        "hear": {
            "words": len(vocab),
            "train_sentences": len(train),
            "dev_sentences": len(dev or []),
            "first_ctc": hear["train_loss"][0],
            "final_ctc": hear["train_loss"][-1],
            "dev_wer_before": hear["dev_wer_before"],
            "dev_wer": hear["dev_wer"],
            **streamed,
        },
        "translate": translate,
        "features": {s: str(features_dir / s / "manifest.parquet") for s in audio},
        "seconds": seconds,
    }
    (out / "sft_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def translate_heard(cfg: RunConfig, heard: Path, data_dir: Path, features_dir: Path, out: Path, sft_name: str) -> dict:
    """Stage 2 alone: fine-tune `heard` (a stage-1 model kept by `speech_finetune`) on `data_dir`'s SFT
    dialogues, read from the features `features_dir` already holds for the same talks. The study's
    corrupted start: other target texts, the same audio, so both starts hear through one encoder.
    The dialogues go to `features_dir/sft_name`; returns the summary written to `out`."""
    from hpo_ray.sft import finetune

    started = time.perf_counter()
    features = {}
    for split in SPLITS:
        audio = data_dir / split / AUDIO_MANIFEST
        if audio.is_file():
            features[audio.resolve()] = same_talks_encoded(AudioManifest(audio), features_dir / split / "manifest.parquet")
    point_sft_at_features(data_dir / "sft", features_dir / sft_name, features)
    translate = finetune(cfg, Path(heard), Path(out), features_dir / sft_name)
    summary = {"translate": translate, "heard": str(heard), "seconds": {"translate": time.perf_counter() - started}}
    (Path(out) / "sft_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def same_talks_encoded(audio: AudioManifest, features: Path) -> Path:
    """`features` (a features manifest) if it encodes exactly `audio`'s talks: the same ids, and each talk's
    wav byte for byte the one its `encode.json` was made from (another synthesis would not match)."""
    record = features.parent / "encode.json"
    if not record.is_file():
        raise FileNotFoundError(f"{record} not found: encode {audio.path} there first")
    source = AudioManifest(json.loads(record.read_text())["audio_manifest"])
    ours, theirs = {t.talk_id: t for t in audio}, {t.talk_id: t for t in source}
    if ours.keys() != theirs.keys():
        raise ValueError(f"{audio.path} lists talks {sorted(ours)} but {features} encodes {sorted(theirs)}")
    for talk_id, talk in ours.items():
        if talk.audio_path.read_bytes() != theirs[talk_id].audio_path.read_bytes():
            raise ValueError(f"{talk.audio_path} differs from {theirs[talk_id].audio_path}, which {features} encodes")
    return features.resolve()
