"""Units and delays from turns, and sentence splitting: delays never drift from their units."""

import pytest

from hpo_ray.config import RewardConfig
from hpo_ray.reward.splitting import split_sentences
from hpo_ray.reward.units import Units, units_from_turns, units_of_text


def test_word_units_carry_the_time_their_turn_was_written():
    units = units_from_turns(["", "Ich  habe", "", " ein Buch. "], 1.12, char_level=False)
    assert units.tokens == ("Ich", "habe", "ein", "Buch.")
    assert units.delays == (2.24, 2.24, 4.48, 4.48)


def test_char_units_skip_whitespace_but_remember_it_for_rendering():
    units = units_from_turns(["我用 ", "Python 写", "代码。"], 1.0, char_level=True)
    assert "".join(units.tokens) == "我用Python写代码。"
    assert units.delays[:2] == (1.0, 1.0) and units.delays[2] == 2.0 and units.delays[-1] == 3.0
    assert units.text() == "我用 Python 写代码。"


def test_turn_boundary_is_a_word_boundary_in_word_languages():
    assert units_from_turns(["Hel", "lo"], 1.0, char_level=False).tokens == ("Hel", "lo")


def test_slicing_and_concatenation_keep_unit_delay_pairs():
    units = units_from_turns(["a b", "c", "d e f"], 0.5, char_level=False)
    pieces = [units[0:2], units[2:4], units[4:]]
    joined = Units.concat(pieces)
    assert joined == units
    assert dict(zip(units[2:4].tokens, units[2:4].delays)) == {"c": 1.0, "d": 1.5}


def test_reference_units_count_words_or_nonspace_characters():
    assert len(units_of_text("Ich habe  ein Buch.", False)) == 4
    assert len(units_of_text("我今天 买了书。", True)) == 7


def test_sentence_split_keeps_every_unit_and_its_delay():
    units = units_from_turns(["Hello there. How", "are you? I am fine", "thanks."], 1.0, char_level=False)
    pieces = split_sentences(units, ".!?")
    assert [p.text() for p in pieces] == ["Hello there.", "How are you?", "I am fine thanks."]
    assert Units.concat(pieces) == units


def test_chinese_split_keeps_closing_quotes_and_runs_of_punctuation():
    units = units_from_turns(["他说：“好。”然后走了！？再见"], 1.0, char_level=True)
    pieces = split_sentences(units, "。！？")
    assert [p.text() for p in pieces] == ["他说：“好。”", "然后走了！？", "再见"]


def test_clause_splitting_uses_commas_like_the_original():
    cfg = RewardConfig(splitting="clause")
    units = units_from_turns(["我们今天，明天。"], 1.0, char_level=True)
    assert [p.text() for p in split_sentences(units, cfg.splitters_for("zh"))] == ["我们今天，", "明天。"]
    assert [p.text() for p in split_sentences(units, RewardConfig().splitters_for("zh"))] == ["我们今天，明天。"]


def test_japanese_clause_splitting_splits_at_the_full_width_comma_not_the_ideographic_one():
    splitters = RewardConfig(splitting="clause").splitters_for("ja")
    units = units_from_turns(["はい、", "そうです。"], 1.0, char_level=True)
    assert [p.text() for p in split_sentences(units, splitters)] == ["はい、そうです。"]
    units = units_from_turns(["はい，", "そうです。"], 1.0, char_level=True)
    assert [p.text() for p in split_sentences(units, splitters)] == ["はい，", "そうです。"]


def test_splitter_override_and_unknown_language_error():
    cfg = RewardConfig(splitters={"pt": ".;"})
    assert cfg.splitters_for("pt") == ".;"
    with pytest.raises(ValueError, match="reward.splitters.xx"):
        cfg.splitters_for("xx")


def test_empty_hypothesis_has_no_sentences():
    assert split_sentences(units_from_turns(["", " ", ""], 1.0, False), ".!?") == []
