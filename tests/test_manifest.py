"""Manifest validation: every bad row is rejected up front with file, row and field named."""

import numpy as np
import pytest

from hpo_ray.data.manifest import Manifest, ManifestError, stable_group_id, turn_spans
from tests.conftest import talk_row, write_manifest

WIDTH = 8


def good_frames(n=90):
    return np.random.default_rng(0).standard_normal((n, WIDTH)).astype(np.float32)


def open_with(tmp_path, row, frames=None, **kw):
    frames = {"features/t0.npy": good_frames()} if frames is None else frames
    path = write_manifest(tmp_path, [talk_row("t1", "features/t1.npy"), row], {"features/t1.npy": good_frames(), **frames})
    return Manifest(path, width=WIDTH, **kw)


def test_valid_manifest_loads_lazily_with_stable_group_ids(tmp_path):
    m = open_with(tmp_path, talk_row("t0", "features/t0.npy"))
    assert len(m) == 2 and m[1].n_frames == 90 and m[1].width == WIDTH
    frames = m[1].frames()
    assert isinstance(frames, np.memmap) and frames.shape == (90, WIDTH)
    assert m[1].group_id == stable_group_id("features/t0.npy", None) != m[0].group_id
    assert stable_group_id("a.npy", 3) == "%s" % stable_group_id("a.npy", 3)  # no process salt


def test_features_row_selects_from_a_3d_array(tmp_path):
    arr = np.stack([good_frames(), good_frames() + 1])
    m = open_with(tmp_path, talk_row("t0", "features/all.npy", features_row=1), {"features/all.npy": arr})
    np.testing.assert_array_equal(m[1].frames(), arr[1])


@pytest.mark.parametrize(
    "case, field",
    [
        ("missing_file", "features_path"),
        ("too_few_frames", "segments"),
        ("nan", "features_path"),
        ("wrong_width", "features_path"),
        ("unsorted", "segments"),
        ("overlap", "segments"),
        ("counts", "ref_sentences"),
        ("segment_counts", "segments"),
        ("row_out_of_range", "features_row"),
        ("frame_seconds", "frame_seconds"),
        ("empty_reference", "ref_sentences"),
    ],
)
def test_bad_row_is_rejected_naming_file_row_and_field(tmp_path, case, field):
    frames = {"features/t0.npy": good_frames()}
    row = talk_row("t0", "features/t0.npy")
    if case == "missing_file":
        row["features_path"] = "features/nope.npy"
    elif case == "too_few_frames":
        frames["features/t0.npy"] = good_frames(40)  # 3.2 s of features for 6 s of segments
    elif case == "nan":
        bad = good_frames()
        bad[77, 3] = np.nan
        frames["features/t0.npy"] = bad
    elif case == "wrong_width":
        frames["features/t0.npy"] = np.zeros((90, WIDTH + 1), np.float32)
    elif case == "unsorted":
        row["segments"] = list(reversed(row["segments"]))
    elif case == "overlap":
        row["segments"][1]["start"] = row["segments"][0]["end"] - 0.5
    elif case == "counts":
        row["ref_sentences"] = row["ref_sentences"][:2]
    elif case == "segment_counts":
        row["segments"] = row["segments"][:2]
    elif case == "row_out_of_range":
        row["features_row"] = 4
        frames["features/t0.npy"] = np.stack([good_frames()] * 2)
    elif case == "frame_seconds":
        row["frame_seconds"] = 0.04
    elif case == "empty_reference":
        row["ref_sentences"][2] = "  "
    with pytest.raises(ManifestError) as err:
        open_with(tmp_path, row, frames, frame_seconds=0.08)
    assert err.value.row == 1 and err.value.column == field
    msg = str(err.value)
    assert "manifest.parquet row 1" in msg and f"'{field}'" in msg


def test_missing_column_and_duplicate_talk_are_rejected(tmp_path):
    import pyarrow.parquet as pq

    path = write_manifest(tmp_path, [talk_row("t0", "f.npy"), talk_row("t0", "f.npy")], {"f.npy": good_frames()})
    with pytest.raises(ManifestError, match="row 1 field 'talk_id'"):
        Manifest(path)
    table = pq.read_table(path).drop_columns(["segments"])
    pq.write_table(table, tmp_path / "m2.parquet")
    with pytest.raises(ManifestError, match="'segments'.*required column"):
        Manifest(tmp_path / "m2.parquet")


def test_turn_spans_cover_all_frames_with_a_short_last_turn():
    assert turn_spans(30, 14) == [(0, 14), (14, 28), (28, 30)]
    assert turn_spans(28, 14) == [(0, 14), (14, 28)]
