"""Audio manifests: valid talks load with their word spans; every kind of bad wav names the row."""

import numpy as np
import pytest

from hpo_ray.data.audio import AudioManifest, read_wav
from hpo_ray.data.manifest import ManifestError

from .audio_fixtures import spoken_row, tone_talk, write_audio_manifest, write_float_wav, write_wav


def test_valid_manifest_loads_talks_words_and_float_wavs(tmp_path):
    signal = tone_talk(2.0, seed=0)
    write_wav(tmp_path / "a.wav", signal)
    write_float_wav(tmp_path / "b.wav", signal)
    rows = [spoken_row("a", "a.wav", 2.0), spoken_row("b", str(tmp_path / "b.wav"), 2.0, words=None)]
    manifest = AudioManifest(write_audio_manifest(tmp_path, rows))
    a, b = manifest
    assert a.n_samples == b.n_samples == 32000 and a.seconds == 2.0
    assert a.words[1][0] == ("word1", 1.05, 1.5) and b.words is None
    np.testing.assert_allclose(a.samples(), b.samples(), atol=1 / 32768)
    assert read_wav(tmp_path / "b.wav")[0] == 16000


def _bad_wavs(folder):
    """name -> (row overrides, text the error must contain); each breaks one thing about row 1's wav."""
    write_wav(folder / "rate.wav", tone_talk(2.0, 1, rate=22050), rate=22050)
    write_wav(folder / "stereo.wav", np.stack([tone_talk(2.0, 1)] * 2, axis=1), channels=2)
    write_wav(folder / "empty.wav", np.zeros(0, np.float32))
    nan = tone_talk(2.0, 1)
    nan[1234] = np.nan
    write_float_wav(folder / "nan.wav", nan)
    (folder / "garbage.wav").write_bytes(b"this is not a wav file at all" * 10)
    write_wav(folder / "short.wav", tone_talk(2.0, 1))
    (folder / "truncated.wav").write_bytes((folder / "short.wav").read_bytes()[:30])
    return {
        "missing": ({"audio_path": "nowhere.wav"}, "file not found"),
        "wrong rate": ({"audio_path": "rate.wav"}, "22050 Hz"),
        "row rate": ({"sample_rate": 8000}, "expected 16000"),
        "stereo": ({"audio_path": "stereo.wav"}, "2 channels"),
        "empty": ({"audio_path": "empty.wav"}, "no samples"),
        "nan": ({"audio_path": "nan.wav"}, "NaN/inf at sample 1234"),
        "unreadable": ({"audio_path": "garbage.wav"}, "not a readable wav"),
        "truncated": ({"audio_path": "truncated.wav"}, "not a readable wav"),
        "too short for its segments": ({"segments": [{"start": 0.1, "end": 1.0}, {"start": 1.1, "end": 3.0}]}, "lasts 2.000 s"),
    }


@pytest.mark.parametrize(
    "kind", ["missing", "wrong rate", "row rate", "stereo", "empty", "nan", "unreadable", "truncated", "too short for its segments"]
)
def test_bad_wav_is_an_error_naming_manifest_row_and_field(tmp_path, kind):
    write_wav(tmp_path / "good.wav", tone_talk(2.0, 0))
    over, text = _bad_wavs(tmp_path)[kind]
    rows = [spoken_row("good", "good.wav", 2.0), {**spoken_row("bad", "short.wav", 2.0), **over}]
    path = write_audio_manifest(tmp_path, rows)
    with pytest.raises(ManifestError) as err:
        AudioManifest(path)
    assert err.value.row == 1 and str(path) in str(err.value) and text in str(err.value)
    field = {"row rate": "sample_rate", "too short for its segments": "segments"}.get(kind, "audio_path")
    assert err.value.column == field


def test_bad_words_and_missing_columns_name_the_field(tmp_path):
    write_wav(tmp_path / "good.wav", tone_talk(2.0, 0))
    path = write_audio_manifest(tmp_path, [spoken_row("good", "good.wav", 2.0, words=[[]])])
    with pytest.raises(ManifestError, match="row 0 field 'words'.*one word list per sentence"):
        AudioManifest(path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"talk_id": ["x"]}), tmp_path / "cols.parquet")
    with pytest.raises(ManifestError, match="field 'audio_path': required column missing"):
        AudioManifest(tmp_path / "cols.parquet")
