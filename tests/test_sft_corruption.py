"""Segmentation slips in the SFT dialogues (`data.synth.segmentation_slip_rate`): a sentence's end is
written one turn late, merged into the next sentence's turn, word order kept, never before it is
writable; rate 0 leaves today's dialogues unchanged; references stay clean; meta.json counts them."""

import hashlib
import json

from hpo_ray.config import SynthConfig
from hpo_ray.data.manifest import Manifest
from hpo_ray.synth import build_dialogue, dialogue_rng, word_deadlines
from tests.test_synth import CHUNK, synth, talks

# sha256 of the dialogues below as built before segmentation slips existed (commit d4a202d): the
# new option, off, must not move a word nor draw a random number the other corruptions use.
DIALOGUES_BEFORE_SLIPS = "dda302a6164155c6b641a1aac3c8bbf78eb0e059b6604e5690ca52abc743ea33"


def word_turns(dialogue) -> list[tuple[int, str]]:
    """(turn index, word) for every written word, in order."""
    return [(k, w) for k, (_, text) in enumerate(dialogue.turns) for w in text.split()]


def writable_turns(talk, dialogue) -> list[int]:
    """The first turn of `dialogue` whose audio makes each target word writable."""
    ends, end = [], 0
    for frames, _ in dialogue.turns:
        end += frames
        ends.append(end)
    return [next(k for k, e in enumerate(ends) if e >= need) for need in word_deadlines(talk)]


def sentence_last_words(talk) -> list[int]:
    """Index (in the talk's target words) of each sentence's last word."""
    out, n = [], 0
    for sentence in talk.sentences:
        n += len(sentence.target)
        out.append(n - 1)
    return out


def test_rate_0_gives_the_dialogues_of_before():
    cfg = SynthConfig(omit_rate=0.1, premature_rate=0.2, segmentation_slip_rate=0.0)
    language, sample = talks(cfg, 3)
    built = [build_dialogue(talk, language, cfg, CHUNK, dialogue_rng(0, i, k)) for i, talk in enumerate(sample) for k in range(2)]
    digest = hashlib.sha256(json.dumps([[list(t) for t in d.turns] for d in built]).encode()).hexdigest()
    assert digest == DIALOGUES_BEFORE_SLIPS
    assert all(d.slipped == 0 for d in built)


def test_rate_1_slips_every_boundary_one_turn_keeping_word_order():
    clean_cfg = SynthConfig()
    slip_cfg = SynthConfig(segmentation_slip_rate=1.0)
    language, sample = talks(clean_cfg, 6)
    boundaries = slips = 0
    for i, talk in enumerate(sample):
        clean = build_dialogue(talk, language, clean_cfg, CHUNK, dialogue_rng(0, i, 0))
        slipped = build_dialogue(talk, language, slip_cfg, CHUNK, dialogue_rng(0, i, 0))
        assert [f for f, _ in slipped.turns] == [f for f, _ in clean.turns]  # same turns, only words move
        before, after = word_turns(clean), word_turns(slipped)
        assert [w for _, w in after] == [w for _, w in before]  # every word once, in order
        assert all(0 <= b - a <= 1 for (a, _), (b, _) in zip(before, after))  # at most one turn late
        last_turn = len(clean.turns) - 1
        possible = 0
        for j in sentence_last_words(talk)[:-1]:
            boundaries += 1
            if before[j][0] < last_turn:
                possible += 1
                assert after[j][0] == before[j][0] + 1, f"talk {i}: the sentence ending at word {j} did not slip"
        assert slipped.slipped == possible and clean.slipped == 0
        slips += possible
    assert boundaries > 50 and slips > 0.9 * boundaries


def test_a_slipped_word_is_never_emitted_before_it_is_writable():
    cfg = SynthConfig(segmentation_slip_rate=1.0, premature_rate=0.3)
    language, sample = talks(cfg, 6)
    for i, talk in enumerate(sample):
        dialogue = build_dialogue(talk, language, cfg, CHUNK, dialogue_rng(0, i, 1))
        emitted, writable = [k for k, _ in word_turns(dialogue)], writable_turns(talk, dialogue)
        for j in sentence_last_words(talk)[:-1]:
            if writable[j] < len(dialogue.turns) - 1:  # a slipped end: one turn after it is writable, even if it was premature
                assert emitted[j] == writable[j] + 1
    no_guess = SynthConfig(segmentation_slip_rate=1.0)
    for i, talk in enumerate(sample):
        dialogue = build_dialogue(talk, language, no_guess, CHUNK, dialogue_rng(0, i, 1))
        assert all(e >= w for e, w in zip([k for k, _ in word_turns(dialogue)], writable_turns(talk, dialogue)))


def test_synth_counts_slips_in_meta_and_keeps_references_clean(tmp_path):
    clean = synth(tmp_path / "clean", "--talks", "6", "--seed", "3")
    slipped = synth(tmp_path / "slipped", "--talks", "6", "--seed", "3", "--segmentation-slip-rate", "1")
    assert slipped["synth"]["segmentation_slip_rate"] == 1.0
    for split in ("train", "dev"):
        assert clean["sft"][split]["slipped"] == 0 and slipped["sft"][split]["slipped"] > 0
        assert slipped["sft"][split]["words"] == clean["sft"][split]["words"]
        for name in ("clean", "slipped"):
            refs = {t.talk_id: " ".join(t.ref_sentences) for t in Manifest(tmp_path / name / split / "manifest.parquet")}
            for line in (tmp_path / name / "sft" / f"{split}.jsonl").read_text().splitlines():
                record = json.loads(line)
                assert " ".join(t["text"] for t in record["turns"] if t["text"]) == refs[record["talk_id"]]
        assert (tmp_path / "clean" / split / "manifest.parquet").read_bytes() == (
            tmp_path / "slipped" / split / "manifest.parquet"
        ).read_bytes()


def test_a_slip_rate_outside_0_1_is_refused_naming_the_key(tmp_path, capsys):
    from hpo_ray.cli.main import main as cli_main

    assert cli_main(["synth", "--out", str(tmp_path / "x"), "--segmentation-slip-rate", "1.5"]) == 2
    assert "data.synth.segmentation_slip_rate" in capsys.readouterr().err
