"""One run per run directory: how a run may start in a folder, and its logs cut back to a checkpoint."""

import json

import pytest

from hpo_ray.learner.checkpoint import CheckpointStore
from hpo_ray.run_dir import RunDirError, cut_logs, prepare_run_dir


def used_run_dir(root, checkpoint_step=None):
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text("run: {}\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": s}) + "\n" for s in range(5)))
    (run / "data_order.jsonl").write_text("".join(json.dumps({"step": s, "talks": ["a"]}) + "\n" for s in range(1, 5)))
    if checkpoint_step is not None:
        CheckpointStore(run / "checkpoints", keep_best=0).save(checkpoint_step, {"step": checkpoint_step})
    return run


def steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_a_new_run_starts_only_in_an_empty_or_missing_dir(tmp_path):
    assert prepare_run_dir(tmp_path / "fresh", "new") is False
    (tmp_path / "empty").mkdir()
    assert prepare_run_dir(tmp_path / "empty", "new") is False
    run = used_run_dir(tmp_path, checkpoint_step=2)
    with pytest.raises(RunDirError, match="not empty .*--resume.*--overwrite"):
        prepare_run_dir(run, "new")
    assert steps(run / "metrics.jsonl") == [0, 1, 2, 3, 4]  # refused: nothing touched


def test_resume_needs_a_checkpoint_unless_asked_to_start_fresh(tmp_path):
    run = used_run_dir(tmp_path)
    with pytest.raises(RunDirError, match="no checkpoint.*--resume-or-start"):
        prepare_run_dir(run, "resume")
    assert prepare_run_dir(run, "resume_or_start") is False
    assert list(run.iterdir()) == []  # the run that never checkpointed is cleared


def test_resume_or_start_resumes_when_a_checkpoint_exists_and_overwrite_clears_it(tmp_path):
    run = used_run_dir(tmp_path, checkpoint_step=2)
    assert prepare_run_dir(run, "resume") is True and prepare_run_dir(run, "resume_or_start") is True
    assert (run / "metrics.jsonl").is_file()
    assert prepare_run_dir(run, "overwrite") is False
    assert list(run.iterdir()) == []


def test_overwrite_refuses_a_dir_holding_files_a_run_did_not_write(tmp_path):
    run = used_run_dir(tmp_path, checkpoint_step=2)
    (run / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirError, match="thesis.tex"):
        prepare_run_dir(run, "overwrite")
    assert (run / "checkpoints").is_dir() and (run / "thesis.tex").is_file()


def test_cut_logs_keeps_steps_up_to_the_checkpoint_and_drops_a_line_cut_short(tmp_path):
    run = used_run_dir(tmp_path)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "lo')  # a kill in the middle of a write
    cut_logs(run, 2)
    assert steps(run / "metrics.jsonl") == [0, 1, 2]
    assert steps(run / "data_order.jsonl") == [1, 2]
    cut_logs(run, -1)  # starting fresh: nothing is kept
    assert steps(run / "metrics.jsonl") == [] and steps(run / "data_order.jsonl") == []
