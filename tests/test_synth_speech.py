"""`hpo-ray synth --speech`: talks spoken by the real eSpeak NG (from the `[speech]` extra), byte-identical
for a seed, word timings equal to the engine's word events, and SFT dialogues on those timings."""

import json
import math
import sys
import wave
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hpo_ray.cli.main import main as cli_main
from hpo_ray.config import ConfigError, load_config
from hpo_ray.synth import AUDIO_MANIFEST_SCHEMA, TalkAlignment, word_deadlines
from hpo_ray.synth.espeak import ESpeak, missing_reason
from hpo_ray.synth.spoken import fresh_processes, speech_end

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=f"{missing_reason()}")

FS, CHUNK, RATE = 0.08, 14, 16000
# Voices with breath noise: their audio depends on the engine's random seed too.
SMALL = [
    "--talks",
    "3",
    "data.synth.min_talk_seconds=8",
    "data.synth.sft_dialogues_per_talk=2",
    "data.synth.speech.voices=[en-us+f2,en-gb-x-rp+f3]",
]


def synth(out: Path, *args: str) -> dict:
    assert cli_main(["synth", "--out", str(out), "--speech", *SMALL, *args]) == 0
    return json.loads((out / "meta.json").read_text())


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as fh:
        assert (fh.getnchannels(), fh.getsampwidth(), fh.getframerate()) == (1, 2, RATE)
        return np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2").astype(np.float64)


def rows(data: Path, split: str) -> list[dict]:
    return pq.read_table(data / split / "audio_manifest.parquet").to_pylist()


def replay(voice: str, rate_wpm: int, pitch: int, engine_seed: int, sentences: list[str]):
    """The engine's utterances of a talk, spoken again from a freshly loaded engine (runs in its own process)."""
    engine = ESpeak(engine_seed)
    engine.set_voice(voice, rate_wpm, pitch)
    return [engine.speak(text, tuple(text.rstrip(".").split())) for text in sentences]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speech") / "data"
    synth(out)
    return out


def test_spoken_synth_is_byte_identical_for_a_seed_whatever_the_worker_count(spoken, tmp_path):
    again = tmp_path / "again"
    synth(again, "data.synth.speech.workers=1")  # another process layout, after other talks were spoken here
    first, second = files(spoken), files(again)
    assert {
        "train/audio_manifest.parquet",
        "dev/audio_manifest.parquet",
        "test/audio_manifest.parquet",
        "sft/train.jsonl",
        "sft/dev.jsonl",
        "meta.json",
    } <= set(first)
    assert sum(k.endswith(".wav") for k in first) == 3 and not any(k.endswith(".npy") for k in first)
    assert sorted(first) == sorted(second) and [k for k in first if first[k] != second[k]] == ["meta.json"]
    metas = [json.loads(m["meta.json"]) for m in (first, second)]
    assert metas[1]["synth"]["speech"].pop("workers") == 1 and metas[0]["synth"]["speech"].pop("workers") is None
    assert metas[0] == metas[1]  # the worker count is recorded, and is the only difference
    other = tmp_path / "other"
    synth(other, "--seed", "1")
    assert files(other)["train/audio/synth-s1-00000.wav"] != first["train/audio/synth-s0-00000.wav"]


def test_audio_manifest_has_the_agreed_schema_and_wavs_match_it(spoken):
    meta = json.loads((spoken / "meta.json").read_text())
    for split in ("train", "dev", "test"):
        table = pq.read_table(spoken / split / "audio_manifest.parquet")
        assert table.schema.equals(AUDIO_MANIFEST_SCHEMA)
        assert table.schema.field("words").type == pa.list_(
            pa.list_(pa.struct([("word", pa.string()), ("start", pa.float64()), ("end", pa.float64())]))
        )
        for row in table.to_pylist():
            audio = read_wav(spoken / split / row["audio_path"])
            assert row["sample_rate"] == RATE and (row["src_lang"], row["tgt_lang"]) == ("en", "de")
            assert len(audio) % (CHUNK * round(FS * RATE)) == 0 and len(audio) / RATE >= 8
            assert np.abs(audio).max() < 32767  # headroom: nothing clips
            assert len(row["src_sentences"]) == len(row["ref_sentences"]) == len(row["segments"]) == len(row["words"]) >= 2
            assert meta["speech"]["speakers"][row["talk_id"]]["seconds"] == len(audio) / RATE
            previous_end = 0.0
            for src, segment, words in zip(row["src_sentences"], row["segments"], row["words"]):
                assert [w["word"] for w in words] == src.rstrip(".").split()
                assert (segment["start"], segment["end"]) == (words[0]["start"], words[-1]["end"])
                assert segment["start"] - previous_end >= 0.45 - 1e-9  # a sentence pause before every sentence
                previous_end = segment["end"]
                for w, nxt in zip(words, words[1:] + [None]):
                    inside = audio[math.ceil(w["start"] * RATE) : math.floor(w["end"] * RATE)]
                    assert w["end"] > w["start"] and np.sqrt(np.mean(inside**2)) > 100  # a word is audible
                    gap_end = nxt["start"] if nxt else segment["end"]
                    assert gap_end == w["end"] or 0.03 - 1e-9 <= gap_end - w["end"] <= 0.15 + 1e-9
                    # An inserted pause is silence (clean audio); 1 ms at each side is left to the resampler.
                    assert not audio[math.ceil((w["end"] + 0.001) * RATE) : math.floor((gap_end - 0.001) * RATE)].any()
            assert not audio[math.ceil((previous_end + 0.001) * RATE) :].any()


def test_word_timings_equal_the_engine_word_events(spoken):
    """Within a sentence, word k spans the engine samples [event k, event k+1) (the last one ends at
    its energy end), moved by the pauses before it: durations match the events exactly, and the wav
    under each word is the engine's audio of that word resampled."""
    from scipy.signal import resample_poly

    meta = json.loads((spoken / "meta.json").read_text())
    row = rows(spoken, "train")[0]
    audio = read_wav(spoken / "train" / row["audio_path"])
    sp = meta["speech"]["speakers"][row["talk_id"]]
    with fresh_processes(1, 1) as pool:
        utterances = pool.submit(replay, sp["voice"], sp["rate_wpm"], sp["pitch"], sp["engine_seed"], row["src_sentences"]).result()
    checked = 0
    for utterance, words in zip(utterances, row["words"]):
        rate = utterance.sample_rate
        events = [e.sample for e in utterance.words]
        assert len(events) == len(words)
        bounds = events + [speech_end(utterance)]
        for k, w in enumerate(words):
            assert abs(w["start"] * rate - round(w["start"] * rate)) < 1e-6  # on the engine's sample grid
            assert round((w["end"] - w["start"]) * rate) == bounds[k + 1] - bounds[k]
            # audio_position (ms) tells the same: the start moved by the pauses since the first word.
            pauses = sum(words[j + 1]["start"] - words[j]["end"] for j in range(k))
            ms = utterance.words[k].audio_position_ms - utterance.words[0].audio_position_ms
            assert abs(w["start"] - words[0]["start"] - pauses - ms / 1000) < 0.0011
            # 441 engine samples are 320 wav samples: resample the word from the last common grid point.
            at = round(w["start"] * rate)
            lead = at % 441
            pcm = np.concatenate([np.zeros(lead), utterance.pcm[bounds[k] : bounds[k + 1]].astype(np.float64)])
            engine = resample_poly(pcm, 320, 441)
            heard = audio[(at - lead) * 320 // 441 :][: len(engine)]
            core = slice(lead * 320 // 441 + 160, len(engine) - 160)  # 10 ms off each end: fades, resampler edges
            if len(engine) > 1600:
                assert np.corrcoef(engine[core], heard[core])[0, 1] > 0.9999, (w, k)
                checked += 1
    assert checked > 10


def test_spoken_sft_dialogues_follow_the_engine_timings_on_the_frame_grid(spoken):
    margin = load_config(None, []).data.synth.speech.end_margin_frames(FS)
    again: dict = {}
    for split in ("train", "dev"):
        talks = {r["talk_id"]: r for r in rows(spoken, split)}
        records = [json.loads(x) for x in (spoken / "sft" / f"{split}.jsonl").read_text().splitlines()]
        assert len(records) == 2 * len(talks)
        for record in records:
            assert record["manifest"] == f"../{split}/audio_manifest.parquet"
            row = talks[record["talk_id"]]
            n_frames = len(read_wav(spoken / split / row["audio_path"])) // round(FS * RATE)
            assert sum(t["frames"] for t in record["turns"]) == n_frames
            assert " ".join(t["text"] for t in record["turns"] if t["text"]) == " ".join(row["ref_sentences"])
            # Uncorrupted: a turn writes exactly the words whose sources (seconds → frames) it has heard.
            if row["talk_id"] not in again:
                again[row["talk_id"]] = _spoken_again(row)
                assert again[row["talk_id"]].audio.tobytes() == (spoken / split / row["audio_path"]).read_bytes()[44:]
            spans = tuple(tuple((math.floor(w["start"] / FS + 1e-9), math.ceil(w["end"] / FS - 1e-9)) for w in ws) for ws in row["words"])
            alignment = TalkAlignment(row["talk_id"], again[row["talk_id"]].sentences, spans, n_frames, margin)
            deadlines = word_deadlines(alignment)
            end = written = 0
            for turn in record["turns"]:
                end += turn["frames"]
                written += len(turn["text"].split())
                assert written == sum(d <= end for d in deadlines)


def _spoken_again(row: dict):
    """The talk spoken again by `speak_talk` in a fresh process, as `hpo-ray synth` did (for its sentences)."""
    from hpo_ray.synth import Language, talk_rng
    from hpo_ray.synth.spoken import speak_talk

    cfg = load_config(
        None, ["data.synth.speech.enabled=true", "data.synth.min_talk_seconds=8", "data.synth.speech.voices=[en-us+f2,en-gb-x-rp+f3]"]
    ).data.synth
    index = int(row["talk_id"].rsplit("-", 1)[1])
    with fresh_processes(1, 1) as pool:
        return pool.submit(speak_talk, row["talk_id"], Language(cfg.language_seed, cfg), cfg, FS, CHUNK, talk_rng(0, index)).result()


def test_noise_is_added_at_the_drawn_snr_and_changes_nothing_else(spoken, tmp_path):
    noisy = tmp_path / "noisy"
    synth(noisy, "data.synth.speech.noise_snr_db=[20,20]")
    clean_row, noisy_row = rows(spoken, "test")[0], rows(noisy, "test")[0]
    assert clean_row == noisy_row  # same sentences, words and timings
    clean = read_wav(spoken / "test" / clean_row["audio_path"])
    noise = read_wav(noisy / "test" / noisy_row["audio_path"]) - clean
    speech = np.concatenate([clean[round(w["start"] * RATE) : round(w["end"] * RATE)] for ws in clean_row["words"] for w in ws])
    snr = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
    assert abs(snr - 20) < 0.3
    assert json.loads((noisy / "meta.json").read_text())["speech"]["speakers"][clean_row["talk_id"]]["noise_snr_db"] == 20


def test_unknown_voice_and_missing_engine_are_clear_errors_before_anything_is_written(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bad"
    assert cli_main(["synth", "--out", str(out), "--speech", *SMALL, "data.synth.speech.voices=[en-us,en-gb,en-gb-x-rp+f3]"]) == 2
    err = capsys.readouterr().err
    assert "data.synth.speech.voices" in err and "'en-gb'" in err and "'en-us'" not in err
    assert not out.exists()
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # as if the [speech] extra were not installed
    assert cli_main(["synth", "--out", str(out), "--speech", *SMALL]) == 2
    assert "hpo-ray[speech]" in capsys.readouterr().err and not out.exists()


def test_config_rejects_pauses_that_would_blur_sentence_ends():
    with pytest.raises(ConfigError, match="sentence_pause_seconds"):
        load_config(None, ["data.synth.speech.sentence_pause_seconds=[0.3,0.6]"])
    with pytest.raises(ConfigError, match="data.synth.speech"):
        load_config(None, ["data.synth.speech.pitch=[50,120]"])
    with pytest.raises(ConfigError, match="16000"):
        load_config(None, ["data.synth.speech.enabled=true", "data.frame_seconds=0.00001"])
