"""`hpo-ray score` round trip and errors, and a small `hpo-ray bench reward` run."""

import json

import pytest

from hpo_ray.cli.main import main


def record(rid: str, turns: list[str], group: str = "talk1") -> dict:
    return {
        "id": rid,
        "group": group,
        "src_lang": "en",
        "tgt_lang": "de",
        "chunk_seconds": 1.12,
        "turns": turns,
        "src_sentences": ["I bought a book.", "He left."],
        "ref_sentences": ["Ich habe ein Buch gekauft.", "Er ging."],
        "segments": [{"start": 0.2, "end": 2.0}, {"start": 2.3, "end": 3.1}],
    }


RECORDS = [
    record("early", ["", "Ich habe", "ein Buch gekauft.", "Er ging."]),
    record("late", ["", "", "", "Ich habe ein Buch gekauft. Er ging."]),
    record("bad", ["", "", "", "Ich kaufte."]),
    record("other", ["Er ging."], group="talk2"),
]


def write_jsonl(path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_score_round_trip_writes_one_record_per_rollout(tmp_path, capsys):
    src, out = tmp_path / "rollouts.jsonl", tmp_path / "scores.jsonl"
    write_jsonl(src, RECORDS[:2] + [""] + RECORDS[2:])  # a blank line is skipped
    assert main(["score", "--input", str(src), "--output", str(out), "reward.hinge=sentence"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["early", "late", "bad", "other"]
    keys = {"id", "group", "sentences", "quality", "latency", "hinged_latency", "stream_laal", "reward"}
    assert all(set(r) == keys for r in rows)
    assert set(rows[0]["sentences"][0]) == {"ref_index", "hyp", "delays", "quality", "latency", "hinged"}
    assert [s["ref_index"] for s in rows[2]["sentences"]] == [0, 1]
    early, late, bad = rows[:3]
    assert early["reward"] > late["reward"] > bad["reward"]  # same quality: earlier is better; bad is worst
    assert sum(r["reward"] for r in rows[:3]) == pytest.approx(0.0, abs=1e-9)  # z-scored within talk1
    assert rows[3]["reward"] == 0.0  # a group of one is only centred
    assert "scored 4 rollouts in 2 groups" in capsys.readouterr().out


def test_score_overrides_change_the_reward_definition(tmp_path):
    src = tmp_path / "r.jsonl"
    write_jsonl(src, RECORDS[:2])
    assert (
        main(
            [
                "score",
                "--input",
                str(src),
                "--output",
                str(tmp_path / "a.jsonl"),
                "reward.hinge=none",
                "reward.quality=bleu",
                "reward.normalize=false",
                "reward.beta=1.0",
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["hinged_latency"] == pytest.approx(r["latency"])
        assert r["reward"] == pytest.approx(r["quality"] - r["latency"])


def test_malformed_line_names_line_and_field_and_writes_nothing(tmp_path, capsys):
    src, out = tmp_path / "r.jsonl", tmp_path / "scores.jsonl"
    out.write_text("previous results\n")
    broken = dict(RECORDS[1], segments=[{"start": 0.2, "end": 2.0}, {"start": 2.3}])
    write_jsonl(src, [RECORDS[0], RECORDS[2], broken])
    assert main(["score", "--input", str(src), "--output", str(out)]) == 2
    assert "line 3: field 'segments[1].end': missing" in capsys.readouterr().err
    assert out.read_text() == "previous results\n"
    write_jsonl(src, [RECORDS[0], "{not json"])
    assert main(["score", "--input", str(src), "--output", str(out)]) == 2
    assert "line 2: field '<record>': not valid JSON" in capsys.readouterr().err
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl", "scores.jsonl"]  # no temporary left


def test_score_bad_config_value_is_a_config_error(tmp_path, capsys):
    src = tmp_path / "r.jsonl"
    write_jsonl(src, RECORDS[:1])
    assert main(["score", "--input", str(src), "--output", str(tmp_path / "o.jsonl"), "reward.hinge=sometimes"]) == 2
    assert "reward.hinge" in capsys.readouterr().err


def test_bench_reward_reports_speedup_and_equal_laal_on_agreeing_segments(capsys):
    pytest.importorskip("mweralign")
    pytest.importorskip("omnisteval")
    assert main(["bench", "reward", "--talks", "2", "--words", "300", "--zh-talks", "1", "--zh-chars", "400", "--repeats", "1"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["speedup"] > 0 and figures["max_abs_diff_s"] <= 1e-6
    assert figures["edit_distance_ours"] <= figures["edit_distance_mweralign"]
    assert figures["segment_agreement"] > 0.5
