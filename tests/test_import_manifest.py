"""`hpo-ray import-manifest`: the original HPO / InfiniSST parquet schema becomes a manifest train accepts."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hpo_ray.cli.main import main
from hpo_ray.data.import_hpo import import_original
from hpo_ray.data.manifest import Manifest, ManifestError

WIDTH = 8
ORIGINAL_SCHEMA = pa.schema(
    [
        ("audio_npy_path", pa.string()),
        ("audio_npy_row", pa.int64()),
        ("audio_duration", pa.float64()),
        ("chunk_frame_size", pa.int64()),
        ("src_segments", pa.list_(pa.string())),
        ("tgt_segments", pa.list_(pa.string())),
        ("segment_info", pa.list_(pa.struct([("start", pa.float64()), ("end", pa.float64())]))),
    ]
)


def original_manifest(tmp_path, over=None):
    """Two clips stored as rows 0 and 1 of one shared [rows, frames, width] array, as the original ships them."""
    npy = tmp_path / "en000" / "000.npy"
    npy.parent.mkdir(parents=True)
    np.save(npy, np.random.default_rng(0).standard_normal((2, 84, WIDTH)).astype(np.float32))
    rows = []
    for r in range(2):
        row = {
            "audio_npy_path": str(npy),
            "audio_npy_row": r,
            "audio_duration": 6.72,
            "chunk_frame_size": 14,
            "src_segments": ["Hello there.", "How are you?"],
            "tgt_segments": ["你好。", "你好吗？"],
            "segment_info": [{"start": 0.32, "end": 3.1}, {"start": 3.4, "end": 6.5}],
        }
        row.update((over or {}).get(r, {}))
        rows.append(row)
    path = tmp_path / "orig.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=ORIGINAL_SCHEMA), path)
    return path, npy


def test_original_rows_become_talks_over_the_same_feature_rows(tmp_path):
    source, npy = original_manifest(tmp_path)
    report = import_original(source, tmp_path / "out" / "manifest.parquet", "en", "zh", chunk_frames=14)
    assert (report.talks, report.sentences, report.chunk_frames) == (2, 4, 14)
    m = Manifest(report.out, width=WIDTH, frame_seconds=0.08)
    assert [t.talk_id for t in m] == ["en000-000-r0", "en000-000-r1"]
    assert m[1].ref_sentences == ("你好。", "你好吗？") and m[1].segments == ((0.32, 3.1), (3.4, 6.5))
    assert (m[1].src_lang, m[1].tgt_lang, m[1].n_frames) == ("en", "zh", 84)
    np.testing.assert_array_equal(m[1].frames(), np.load(npy)[1])
    assert m[0].group_id != m[1].group_id


def test_cli_writes_a_manifest_that_train_preflight_accepts(tmp_path, tiny_policy_dir, capsys):
    from hpo_ray.cli.train_cmd import preflight
    from hpo_ray.config import load_config

    source, _ = original_manifest(tmp_path)
    out = tmp_path / "ours.parquet"
    assert main(["import-manifest", "--input", str(source), "--out", str(out), "--src-lang", "en", "--tgt-lang", "zh"]) == 0
    assert "data.chunk_frames=14" in capsys.readouterr().out
    width = __import__("json").loads((tiny_policy_dir / "config.json").read_text())["hidden_size"]
    np.save(tmp_path / "en000" / "000.npy", np.zeros((2, 84, width), np.float32))  # the policy's width
    preflight(load_config(None, [f"model.path={tiny_policy_dir}", f"data.train_manifest={out}", "algorithm.talks_per_step=2"]))


@pytest.mark.parametrize(
    "over, column",
    [
        ({1: {"tgt_segments": ["只有一句。"]}}, "tgt_segments"),
        ({0: {"audio_npy_row": 5}}, "audio_npy_row"),
        ({1: {"chunk_frame_size": 28}}, "chunk_frame_size"),
        ({0: {"segment_info": [{"start": 0.3, "end": 3.1}, {"start": 2.0, "end": 6.5}]}}, "segment_info"),
    ],
)
def test_a_bad_original_row_is_named_with_the_original_column(tmp_path, over, column):
    source, _ = original_manifest(tmp_path, over)
    out = tmp_path / "out.parquet"
    with pytest.raises(ManifestError) as err:
        import_original(source, out, "en", "zh", chunk_frames=14)
    assert err.value.column == column and str(source) in str(err.value)
    assert not out.exists()


def test_a_missing_original_column_is_named(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"audio_npy_path": ["x.npy"]}), path)
    with pytest.raises(ManifestError, match="audio_npy_row"):
        import_original(path, tmp_path / "o.parquet", "en", "zh")
