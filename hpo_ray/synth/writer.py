"""Write a synthetic data directory: per-split parquet manifests with one .npy per talk, dialogue-form
SFT data, meta.json and language.json. The output is a pure function of the config."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hpo_ray.config import ConfigError, RunConfig
from hpo_ray.data.manifest import MANIFEST_SCHEMA

from .language import Language
from .render import RenderedTalk, render_talk
from .sft import SftDialogue, build_dialogue

SPLITS = ("train", "dev", "test")
SFT_SPLITS = ("train", "dev")
FORMAT = "hpo-ray-synth/1"
OUTPUTS = (*SPLITS, "sft", "meta.json", "language.json")
# Purposes mixed into every random stream so talks, dialogues and the lexicon never share one.
_TALK_STREAM, _SFT_STREAM = 1, 2


def split_counts(talks: int, dev_fraction: float, test_fraction: float) -> dict[str, int]:
    """Talks per split; a split with a positive fraction gets at least one talk."""
    dev = max(1, round(talks * dev_fraction)) if dev_fraction > 0 else 0
    test = max(1, round(talks * test_fraction)) if test_fraction > 0 else 0
    if talks - dev - test < 1:
        raise ConfigError("data.synth.talks", f"{talks} talks leave none for train after {dev} dev and {test} test")
    return {"train": talks - dev - test, "dev": dev, "test": test}


def talk_id(seed: int, index: int) -> str:
    """Stable id of talk `index` drawn with `seed`."""
    return f"synth-s{seed}-{index:05d}"


def talk_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of one talk: independent of how many talks are drawn."""
    return np.random.default_rng(np.random.SeedSequence([_TALK_STREAM, seed, index]))


def dialogue_rng(seed: int, index: int, dialogue: int) -> np.random.Generator:
    """The random stream of SFT dialogue `dialogue` of talk `index`."""
    return np.random.default_rng(np.random.SeedSequence([_SFT_STREAM, seed, index, dialogue]))


def synthesize(cfg: RunConfig, out_dir: str | Path) -> dict:
    """Draw `cfg.data.synth.talks` talks and write the data directory `out_dir`; returns meta.json's content.

    An existing `out_dir` must be empty or a previous synth output (whose outputs are replaced).
    """
    s, d = cfg.data.synth, cfg.data
    out = Path(out_dir)
    _prepare(out)
    language = Language(s.language_seed, s)
    dim = cfg.model.tiny.hidden_size
    counts = split_counts(s.talks, s.dev_fraction, s.test_fraction)
    meta: dict = {
        "format": FORMAT, "seed": s.seed, "language_seed": s.language_seed, "hidden_size": dim,
        "frame_seconds": d.frame_seconds, "chunk_frames": d.chunk_frames, "src_lang": s.src_lang,
        "tgt_lang": s.tgt_lang, "talks": {}, "frames": {}, "sentences": {}, "sft": {},
        "synth": s.model_dump(mode="json"),
    }
    index = 0
    for split in SPLITS:
        indices = range(index, index + counts[split])
        index += counts[split]
        talks = [render_talk(talk_id(s.seed, i), language, s, dim, d.frame_seconds, d.chunk_frames, talk_rng(s.seed, i))
                 for i in indices]
        if not talks:
            continue
        _write_split(out / split, talks, cfg)
        meta["talks"][split] = len(talks)
        meta["frames"][split] = sum(t.n_frames for t in talks)
        meta["sentences"][split] = sum(len(t.sentences) for t in talks)
        if split in SFT_SPLITS:
            meta["sft"][split] = _write_sft(out / "sft" / f"{split}.jsonl", split, list(zip(indices, talks)), language, cfg)
    _write_json(out / "language.json", language.describe())
    _write_json(out / "meta.json", meta)
    return meta


def _prepare(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        meta = out / "meta.json"
        try:
            ours = json.loads(meta.read_text()).get("format") == FORMAT
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise FileExistsError(f"{out} is not empty and holds no previous synth output ({meta}); refusing to write there")
        for name in OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_split(folder: Path, talks: list[RenderedTalk], cfg: RunConfig) -> None:
    s, fs = cfg.data.synth, cfg.data.frame_seconds
    (folder / "features").mkdir(parents=True, exist_ok=True)
    rows = []
    for talk in talks:
        rel = f"features/{talk.talk_id}.npy"
        np.save(folder / rel, talk.frames, allow_pickle=False)
        rows.append({
            "talk_id": talk.talk_id, "features_path": rel, "features_row": None, "frame_seconds": fs,
            "src_lang": s.src_lang, "tgt_lang": s.tgt_lang,
            "src_sentences": [x.source_text for x in talk.sentences],
            "ref_sentences": [x.target_text for x in talk.sentences],
            "segments": talk.segments(fs),
        })
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), folder / "manifest.parquet")


def _write_sft(path: Path, split: str, talks: list[tuple[int, RenderedTalk]], language: Language, cfg: RunConfig) -> dict:
    s = cfg.data.synth
    path.parent.mkdir(parents=True, exist_ok=True)
    totals = {"dialogues": 0, "words": 0, "omitted": 0, "premature": 0, "wrong": 0}
    with path.open("w", encoding="utf-8") as fh:
        for talk_index, talk in talks:
            for k in range(s.sft_dialogues_per_talk):
                dialogue = build_dialogue(talk, language, s, cfg.data.chunk_frames, dialogue_rng(s.seed, talk_index, k))
                fh.write(json.dumps(_sft_record(talk, split, dialogue, cfg), ensure_ascii=False) + "\n")
                totals["dialogues"] += 1
                for key in ("words", "omitted", "premature", "wrong"):
                    totals[key] += getattr(dialogue, key)
    return totals


def _sft_record(talk: RenderedTalk, split: str, dialogue: SftDialogue, cfg: RunConfig) -> dict:
    s = cfg.data.synth
    return {
        "talk_id": talk.talk_id, "split": split, "manifest": f"../{split}/manifest.parquet",
        "src_lang": s.src_lang, "tgt_lang": s.tgt_lang,
        "turns": [{"frames": frames, "text": text} for frames, text in dialogue.turns],
    }


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
