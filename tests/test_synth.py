"""`hpo-ray synth`: determinism, a language fixed apart from the talk seed, well-formed talks and
manifests, SFT dialogues built by monotonic grouping, honoured corruption rates and real reordering."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hpo_ray.cli.main import main as cli_main
from hpo_ray.config import SynthConfig, load_config
from hpo_ray.data.manifest import Manifest
from hpo_ray.synth import (
    SILENCE,
    Language,
    build_dialogue,
    dialogue_rng,
    later_source_fraction,
    render_talk,
    talk_id,
    talk_rng,
    word_deadlines,
)

DIM, FS, CHUNK = 64, 0.08, 14


def synth(out: Path, *args: str) -> dict:
    assert cli_main(["synth", "--out", str(out), *args]) == 0
    return json.loads((out / "meta.json").read_text())


def talks(synth_cfg: SynthConfig, n: int, seed: int = 0, language: Language | None = None):
    language = language or Language(synth_cfg.language_seed, synth_cfg)
    return language, [render_talk(talk_id(seed, i), language, synth_cfg, DIM, FS, CHUNK, talk_rng(seed, i)) for i in range(n)]


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    synth(out, "--talks", "8", "--seed", "0")
    return out


def test_synth_twice_gives_identical_files_and_another_seed_differs(data_dir, tmp_path):
    again = tmp_path / "again"
    synth(again, "--talks", "8", "--seed", "0")
    first, second = files(data_dir), files(again)
    assert sorted(first) == sorted(second)
    assert [k for k in first if first[k] != second[k]] == []
    assert {
        "train/manifest.parquet",
        "dev/manifest.parquet",
        "test/manifest.parquet",
        "sft/train.jsonl",
        "sft/dev.jsonl",
        "meta.json",
        "language.json",
    } <= set(first)
    other = tmp_path / "other"
    synth(other, "--talks", "8", "--seed", "1")
    assert (other / "train/manifest.parquet").read_bytes() != first["train/manifest.parquet"]
    # Rewriting a previous output in place replaces it exactly (stale talks from a bigger run vanish).
    synth(other, "--talks", "8", "--seed", "0")
    assert files(other) == first


def test_synth_refuses_a_foreign_non_empty_directory(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli_main(["synth", "--out", str(tmp_path), "--talks", "3"]) == 2
    assert "refusing" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_options_override_config_and_bad_values_name_the_key(tmp_path, capsys):
    meta = synth(
        tmp_path / "a",
        "--talks",
        "3",
        "--seed",
        "5",
        "--omit-rate",
        "0.5",
        "--language-seed",
        "7",
        "data.synth.talks=10",
        "data.synth.sft_dialogues_per_talk=1",
    )
    assert meta["talks"] == {"train": 1, "dev": 1, "test": 1}
    assert (meta["seed"], meta["language_seed"], meta["synth"]["omit_rate"]) == (5, 7, 0.5)
    assert meta["sft"]["train"]["dialogues"] == 1
    assert cli_main(["synth", "--out", str(tmp_path / "b"), "--premature-rate", "1.5"]) == 2
    assert "data.synth.premature_rate" in capsys.readouterr().err


def test_manifests_validate_and_talks_are_long_with_segments_on_the_spoken_frames(data_dir):
    cfg = SynthConfig()
    language = Language(cfg.language_seed)
    sil = language.word_vector(SILENCE, DIM)
    total = 0
    for split in ("train", "dev", "test"):
        manifest = Manifest(data_dir / split / "manifest.parquet", width=DIM, frame_seconds=FS)
        table = pq.read_table(data_dir / split / "manifest.parquet")
        assert table.column("features_row").null_count == len(table)
        for talk in manifest:
            total += 1
            assert talk.seconds >= cfg.min_talk_seconds
            assert len(talk.src_sentences) >= 15
            frames = np.asarray(talk.frames())
            assert frames.dtype == np.float32 and frames.shape == (talk.n_frames, DIM)
            for (start, end), src, ref in zip(talk.segments, talk.src_sentences, talk.ref_sentences):
                assert src.endswith(".") and ref.endswith(".")
                first, last = round(start / FS), round(end / FS)
                assert 0 < first < last <= talk.n_frames
                words = src.rstrip(".").split()
                # Silence just before and after a segment; its first and last frames are its first and last words.
                for frame, word in ((first - 1, SILENCE), (first, words[0]), (last - 1, words[-1]), (last, SILENCE)):
                    vec = language.word_vector(word, DIM) if word != SILENCE else sil
                    assert np.linalg.norm(frames[frame] - vec) < np.linalg.norm(frames[frame] - sil) or word == SILENCE
                    assert np.linalg.norm(frames[frame] - vec) < 0.6 * np.sqrt(DIM)
    assert total == 8


def test_language_is_fixed_by_language_seed_not_by_talk_seed():
    cfg = SynthConfig()
    _, seed0 = talks(cfg, 2, seed=0)
    _, seed9 = talks(cfg, 2, seed=9, language=Language(cfg.language_seed, cfg))
    fresh = Language(cfg.language_seed, cfg)
    heard: dict[str, list[np.ndarray]] = {}
    translations: dict[str, set[str]] = {}
    for talk in seed0 + seed9:
        for sentence, spans in zip(talk.sentences, talk.word_spans):
            for word, (a, b) in zip(sentence.source, spans):
                heard.setdefault(word, []).append(talk.frames[a:b].mean(axis=0))
            for w in sentence.target:
                if w.kind in ("agent", "thing", "adj", "adv", "conj"):
                    translations.setdefault(sentence.source[w.primary], set()).add(w.text.rstrip("."))
    assert len(heard) > 30
    for word, means in heard.items():
        assert np.abs(np.mean(means, axis=0) - fresh.word_vector(word, DIM)).max() < 0.5, word
    assert all(len(forms) == 1 for forms in translations.values())  # one word, one translation, both seeds
    assert Language(cfg.language_seed).describe() == fresh.describe()
    other = Language(cfg.language_seed + 1)
    assert other.target_vocabulary() != fresh.target_vocabulary()
    assert not np.allclose(other.word_vector("the", DIM), fresh.word_vector("the", DIM))
    assert 60 <= len(fresh.source_vocabulary()) <= 150 and len(fresh.target_vocabulary()) <= 150


def test_sft_turns_cover_the_talk_and_rebuild_the_references(data_dir):
    cfg = SynthConfig()
    refs = {}
    for split in ("train", "dev"):
        for talk in Manifest(data_dir / split / "manifest.parquet"):
            refs[talk.talk_id] = (talk.n_frames, " ".join(talk.ref_sentences))
    seen: dict[str, int] = {}
    waits = 0
    for split in ("train", "dev"):
        for line in (data_dir / "sft" / f"{split}.jsonl").read_text().splitlines():
            record = json.loads(line)
            assert set(record) == {"talk_id", "split", "manifest", "src_lang", "tgt_lang", "turns"}
            assert record["split"] == split
            assert (data_dir / "sft" / record["manifest"]).resolve() == (data_dir / split / "manifest.parquet").resolve()
            n_frames, reference = refs[record["talk_id"]]
            sizes = [t["frames"] for t in record["turns"]]
            assert sum(sizes) == n_frames
            assert all(s % CHUNK == 0 and CHUNK <= s <= cfg.sft_max_merge * CHUNK for s in sizes[:-1])
            assert " ".join(t["text"] for t in record["turns"] if t["text"]) == reference
            waits += sum(t["text"] == "" for t in record["turns"])
            seen[record["talk_id"]] = seen.get(record["talk_id"], 0) + 1
    assert set(seen) == set(refs) and set(seen.values()) == {cfg.sft_dialogues_per_talk}
    assert waits > 10  # the assistant sometimes waits (empty reply)
    turn_counts = {len(json.loads(x)["turns"]) for x in (data_dir / "sft" / "train.jsonl").read_text().splitlines()}
    assert len(turn_counts) > 1  # random merging gives dialogues of different shapes


def test_uncorrupted_words_are_written_in_the_first_turn_that_has_heard_their_sources():
    cfg = SynthConfig()
    language, sample = talks(cfg, 3)
    for i, talk in enumerate(sample):
        deadlines = word_deadlines(talk)
        assert deadlines == sorted(deadlines) and deadlines[-1] <= talk.n_frames
        # The period waits until the sentence-final pause is audible, yet before the next sentence starts.
        last_words = np.cumsum([len(s.target) for s in talk.sentences]) - 1
        next_starts = [spans[0][0] for spans in talk.word_spans[1:]] + [talk.n_frames]
        for j, spans, nxt in zip(last_words, talk.word_spans, next_starts):
            assert spans[-1][1] + cfg.max_word_pause_frames < deadlines[j] <= nxt
        for k in range(2):
            dialogue = build_dialogue(talk, language, cfg, CHUNK, dialogue_rng(0, i, k))
            end, written = 0, 0
            for frames, text in dialogue.turns:
                end += frames
                written += len(text.split())
                assert written == sum(d <= end for d in deadlines)


def _emitted(dialogue) -> list[tuple[int, str]]:
    """(end frame of the turn, word) for every written word, in order."""
    out, end = [], 0
    for frames, text in dialogue.turns:
        end += frames
        out += [(end, w) for w in text.split()]
    return out


def test_omit_and_premature_rates_are_honoured():
    base = SynthConfig()
    language, sample = talks(base, 24)
    words = omitted = early = wrong = 0
    omit_cfg = base.model_copy(update={"omit_rate": 0.15})
    early_cfg = base.model_copy(update={"premature_rate": 0.2, "premature_wrong_rate": 0.0})
    wrong_cfg = base.model_copy(update={"premature_rate": 0.2, "premature_wrong_rate": 1.0})
    for i, talk in enumerate(sample):
        reference = [w.text for s in talk.sentences for w in s.target]
        deadlines = word_deadlines(talk)
        words += len(reference)
        omitted += len(reference) - len(_emitted(build_dialogue(talk, language, omit_cfg, CHUNK, dialogue_rng(0, i, 0))))
        placed = _emitted(build_dialogue(talk, language, early_cfg, CHUNK, dialogue_rng(0, i, 1)))
        assert [w for _, w in placed] == reference  # same words, same order, only earlier
        early += sum(end < need for (end, _), need in zip(placed, deadlines))
        guessed = _emitted(build_dialogue(talk, language, wrong_cfg, CHUNK, dialogue_rng(0, i, 1)))
        wrong += sum(w != ref for (_, w), ref in zip(guessed, reference))
    assert words > 3000
    assert abs(omitted / words - 0.15) < 0.02
    assert abs(early / words - 0.2) < 0.025
    assert abs(wrong / words - 0.2) < 0.025


def test_reordering_makes_many_target_words_wait_for_later_source_words():
    cfg = SynthConfig()
    language, sample = talks(cfg, 6)
    sentences = [s for t in sample for s in t.sentences]
    assert later_source_fraction(sentences) > 0.4
    # Verb-initial target: the first target word usually translates a source word that is not first.
    assert np.mean([s.target[0].primary > 0 for s in sentences]) > 0.9
    # Ambiguity resolved only later: a determiner's form depends on its noun; polysemous verbs on their object.
    det_forms: dict[str, set[str]] = {}
    verb_forms: dict[str, set[str]] = {}
    for s in sentences:
        for w in s.target:
            table = det_forms if w.kind == "det" else verb_forms if w.kind == "verb" else None
            if table is not None:
                table.setdefault(s.source[w.primary], set()).add(w.text.rstrip("."))
                assert max(w.sources) > w.primary or w.kind == "verb"
    assert all(len(forms) == 2 for forms in det_forms.values())
    assert sum(len(forms) == 2 for forms in verb_forms.values()) >= 3
    # A model cannot cheat with monotone translation: word order differs from the source's.
    crossing = [any(w.primary < v.primary for v in s.target[:k]) for s in sentences for k, w in enumerate(s.target)]
    assert np.mean(crossing) > 0.3


def test_config_rejects_inconsistent_synth_settings():
    from hpo_ray.config import ConfigError

    with pytest.raises(ConfigError, match="data.synth.*min_sentence_pause_frames"):
        load_config(None, ["data.synth.min_sentence_pause_frames=2", "data.synth.max_word_pause_frames=2"])
    with pytest.raises(ConfigError, match="data.synth.agent_nouns"):
        Language(0, SynthConfig(agent_nouns=99))
