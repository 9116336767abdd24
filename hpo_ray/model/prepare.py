"""Make the starting policy of the embedded default: a tokenizer trained on the data's text and
a freshly initialised tiny model, saved together in HF format."""

from pathlib import Path

import pyarrow.parquet as pq

from hpo_ray.config import RunConfig
from hpo_ray.data.manifest import Manifest
from hpo_ray.dialogue import LANGUAGE_NAMES
from hpo_ray.model.build import build_tiny_model, save_policy
from hpo_ray.model.tokenizer import train_tokenizer


def open_talks(path: Path):
    """The talks of a features manifest, or of an audio manifest (one with an `audio_path` column)."""
    if "audio_path" in pq.read_schema(path).names:
        from hpo_ray.data.audio import AudioManifest

        return AudioManifest(path)
    return Manifest(path, check_values=False)


def tokenizer_corpus(manifests: list[Path], instruction: str) -> list[str]:
    """Reference (target-side) sentences plus every instruction the dialogues will show."""
    texts, pairs = [], set()
    for path in manifests:
        for talk in open_talks(path):
            texts.extend(talk.ref_sentences)
            pairs.add((talk.src_lang, talk.tgt_lang))
    for src, tgt in sorted(pairs):
        texts.append(instruction.format(src=LANGUAGE_NAMES.get(src, src), tgt=LANGUAGE_NAMES.get(tgt, tgt)))
    texts.append("system\nuser\nassistant\n")
    return texts


def prepare_tiny_policy(cfg: RunConfig, manifests: list[Path], out_dir: Path, speech: bool = False) -> Path:
    """Train the tokenizer on `manifests`, build the tiny model from `cfg.model.tiny`, save to `out_dir`;
    with `speech`, a freshly initialised speech encoder from `cfg.model.speech` is saved beside it."""
    texts = tokenizer_corpus(manifests, cfg.model.instruction)
    tokenizer = train_tokenizer(texts, cfg.model.tiny.vocab_size, cfg.model.placeholder_token)
    model = build_tiny_model(cfg.model.tiny, tokenizer)
    out = save_policy(model, tokenizer, out_dir)
    if speech:
        from hpo_ray.data.audio import AudioManifest
        from hpo_ray.speech.hear import word_vocab
        from hpo_ray.speech.model import SpeechLLM

        # a ctc projector's classes: the source words of the audio manifests the model is built from
        spoken = [AudioManifest(p) for p in manifests if "audio_path" in pq.read_schema(p).names]
        words = word_vocab(spoken) if cfg.model.speech.projector == "ctc" else None
        out = SpeechLLM.from_policy(out, cfg.model.speech, words=words).save_pretrained(out)
    return out
