"""Write a synthetic data directory: per split a parquet manifest with one .npy of features per talk
(or, with `synth.speech.enabled`, an audio manifest with one 16 kHz wav per talk), dialogue-form
SFT data, meta.json and language.json. The output is a pure function of the config."""

import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hpo_ray.config import AUDIO_SAMPLE_RATE, ConfigError, RunConfig
from hpo_ray.data.manifest import MANIFEST_SCHEMA

from .language import Language
from .render import RenderedTalk, render_talk
from .sft import AlignedTalk, SftDialogue, build_dialogue
from .spoken import SpokenTalk, speak_talks, unknown_voices

SPLITS = ("train", "dev", "test")
SFT_SPLITS = ("train", "dev")
FORMAT = "hpo-ray-synth/1"
OUTPUTS = (*SPLITS, "sft", "meta.json", "language.json")
MANIFEST, AUDIO_MANIFEST = "manifest.parquet", "audio_manifest.parquet"
_SPAN = pa.struct([("start", pa.float64()), ("end", pa.float64())])
AUDIO_MANIFEST_SCHEMA = pa.schema(
    [
        ("talk_id", pa.string()),
        ("audio_path", pa.string()),
        ("sample_rate", pa.int64()),
        ("src_lang", pa.string()),
        ("tgt_lang", pa.string()),
        ("src_sentences", pa.list_(pa.string())),
        ("ref_sentences", pa.list_(pa.string())),
        ("segments", pa.list_(_SPAN)),
        ("words", pa.list_(pa.list_(pa.struct([("word", pa.string()), ("start", pa.float64()), ("end", pa.float64())])))),
    ]
)
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
    if s.speech.enabled:
        _check_voices(s.speech.voices)  # before anything is replaced
    _prepare(out)
    language = Language(s.language_seed, s)
    counts = split_counts(s.talks, s.dev_fraction, s.test_fraction)
    meta: dict = {
        "format": FORMAT,
        "seed": s.seed,
        "language_seed": s.language_seed,
        "hidden_size": cfg.model.tiny.hidden_size,
        "frame_seconds": d.frame_seconds,
        "chunk_frames": d.chunk_frames,
        "src_lang": s.src_lang,
        "tgt_lang": s.tgt_lang,
        "talks": {},
        "frames": {},
        "sentences": {},
        "sft": {},
        "synth": s.model_dump(mode="json"),
    }
    if s.speech.enabled:
        meta["speech"] = {"sample_rate": AUDIO_SAMPLE_RATE, "speakers": {}}
    index = 0
    for split in SPLITS:
        indices = range(index, index + counts[split])
        index += counts[split]
        if not indices:
            continue
        write = _write_spoken_split if s.speech.enabled else _write_rendered_split
        talks = write(out / split, indices, language, cfg, meta)
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


def _write_rendered_split(folder: Path, indices: range, language: Language, cfg: RunConfig, meta: dict) -> list[AlignedTalk]:
    """Render the split's talks as feature vectors: manifest.parquet + features/<talk_id>.npy."""
    s, d = cfg.data.synth, cfg.data
    talks = [
        render_talk(talk_id(s.seed, i), language, s, cfg.model.tiny.hidden_size, d.frame_seconds, d.chunk_frames, talk_rng(s.seed, i))
        for i in indices
    ]
    _write_features(folder, talks, cfg)
    return list(talks)


def _write_spoken_split(folder: Path, indices: range, language: Language, cfg: RunConfig, meta: dict) -> list[AlignedTalk]:
    """Speak the split's talks: audio_manifest.parquet + audio/<talk_id>.wav; speakers go to meta.json."""
    s, d = cfg.data.synth, cfg.data
    talks = speak_talks(
        [(talk_id(s.seed, i), language, s, d.frame_seconds, d.chunk_frames, talk_rng(s.seed, i)) for i in indices], s.speech.workers
    )
    _write_audio(folder, talks, cfg)
    meta["speech"]["engine"] = talks[0].engine
    meta["speech"]["speakers"].update({t.talk_id: _speaker_meta(t) for t in talks})
    margin = s.speech.end_margin_frames(d.frame_seconds)
    return [t.aligned(d.frame_seconds, margin) for t in talks]


def _write_features(folder: Path, talks: list[RenderedTalk], cfg: RunConfig) -> None:
    s, fs = cfg.data.synth, cfg.data.frame_seconds
    (folder / "features").mkdir(parents=True, exist_ok=True)
    rows = []
    for talk in talks:
        rel = f"features/{talk.talk_id}.npy"
        np.save(folder / rel, talk.frames, allow_pickle=False)
        rows.append(
            {
                "talk_id": talk.talk_id,
                "features_path": rel,
                "features_row": None,
                "frame_seconds": fs,
                "src_lang": s.src_lang,
                "tgt_lang": s.tgt_lang,
                "src_sentences": [x.source_text for x in talk.sentences],
                "ref_sentences": [x.target_text for x in talk.sentences],
                "segments": talk.segments(fs),
            }
        )
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), folder / MANIFEST)


def _check_voices(voices: tuple[str, ...]) -> None:
    unknown = unknown_voices(voices)
    if unknown:
        raise ConfigError(
            "data.synth.speech.voices",
            f"eSpeak NG has no voice {', '.join(map(repr, unknown))} "
            "(names are voice files such as en, en-us, en-gb-x-rp, optionally +variant like +f2)",
        )


def _write_audio(folder: Path, talks: list[SpokenTalk], cfg: RunConfig) -> None:
    s = cfg.data.synth
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for talk in talks:
        rel = f"audio/{talk.talk_id}.wav"
        write_wav(folder / rel, talk.audio)
        rows.append(
            {
                "talk_id": talk.talk_id,
                "audio_path": rel,
                "sample_rate": AUDIO_SAMPLE_RATE,
                "src_lang": s.src_lang,
                "tgt_lang": s.tgt_lang,
                "src_sentences": [x.source_text for x in talk.sentences],
                "ref_sentences": [x.target_text for x in talk.sentences],
                "segments": talk.segments(),
                "words": talk.word_rows(),
            }
        )
    pq.write_table(pa.Table.from_pylist(rows, schema=AUDIO_MANIFEST_SCHEMA), folder / AUDIO_MANIFEST)


def write_wav(path: Path, audio: np.ndarray) -> None:
    """16 kHz mono 16-bit PCM, written by the standard library's `wave`."""
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(AUDIO_SAMPLE_RATE)
        fh.writeframes(np.asarray(audio, dtype="<i2").tobytes())


def _speaker_meta(talk: SpokenTalk) -> dict:
    sp = talk.speaker
    return {
        "voice": sp.voice,
        "rate_wpm": sp.rate_wpm,
        "pitch": sp.pitch,
        "engine_seed": sp.engine_seed,
        "noise_snr_db": sp.noise_snr_db,
        "seconds": talk.seconds,
    }


def _write_sft(path: Path, split: str, talks: list[tuple[int, AlignedTalk]], language: Language, cfg: RunConfig) -> dict:
    s = cfg.data.synth
    path.parent.mkdir(parents=True, exist_ok=True)
    totals = {"dialogues": 0, "words": 0, "omitted": 0, "premature": 0, "wrong": 0, "slipped": 0}
    with path.open("w", encoding="utf-8") as fh:
        for talk_index, talk in talks:
            for k in range(s.sft_dialogues_per_talk):
                dialogue = build_dialogue(talk, language, s, cfg.data.chunk_frames, dialogue_rng(s.seed, talk_index, k))
                fh.write(json.dumps(_sft_record(talk, split, dialogue, cfg), ensure_ascii=False) + "\n")
                totals["dialogues"] += 1
                for key in ("words", "omitted", "premature", "wrong", "slipped"):
                    totals[key] += getattr(dialogue, key)
    return totals


def _sft_record(talk: AlignedTalk, split: str, dialogue: SftDialogue, cfg: RunConfig) -> dict:
    s = cfg.data.synth
    manifest = AUDIO_MANIFEST if s.speech.enabled else MANIFEST
    return {
        "talk_id": talk.talk_id,
        "split": split,
        "manifest": f"../{split}/{manifest}",
        "src_lang": s.src_lang,
        "tgt_lang": s.tgt_lang,
        "turns": [{"frames": frames, "text": text} for frames, text in dialogue.turns],
    }


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
