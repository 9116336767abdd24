"""`hpo-ray bench learner|sync|step|rollout` at their smallest settings: each ends with one JSON line whose
headline figures are present and finite (smoke tests of the benchmark code, not timings)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from hpo_ray.cli.main import main


def run_cli(args: list[str]) -> dict:
    """Run `hpo-ray ARGS` in its own process (the learner bench initialises torch.distributed and
    DeepSpeed's process groups, which must not leak into this test process) and parse its last line."""
    done = subprocess.run(
        [sys.executable, "-m", "hpo_ray.cli.main", *args], cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, "the benchmark printed nothing"
    return json.loads(lines[-1])


def last_json(capsys) -> dict:
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines, "the benchmark printed nothing"
    return json.loads(lines[-1])


def assert_finite(result: dict, keys: list[str]) -> None:
    missing = [k for k in keys if k not in result]
    assert not missing, f"missing keys {missing} in {sorted(result)}"
    bad = {k: result[k] for k in keys if not (isinstance(result[k], (int, float)) and math.isfinite(result[k]))}
    assert not bad, f"not finite: {bad}"


def test_bench_learner_reports_zero_vs_torch_with_both_sides_ending_equal():
    result = run_cli(
        ["bench", "learner", "--steps", "1", "--warmup", "0", "--sequences", "2", "--turns", "2", "learner.optimizer.lr=0.001"]
    )
    assert_finite(result, ["zero_vs_torch", "zero_step_s", "torch_step_s", "max_param_diff", "max_param_change"])
    assert result["zero_step_s"] > 0 and result["torch_step_s"] > 0
    assert result["zero_vs_torch"] == pytest.approx(result["zero_step_s"] / result["torch_step_s"])
    # the two sides did the same update: parameters moved, and moved alike
    assert result["max_param_change"] > 1e-4 and result["max_param_diff"] < 1e-5


def test_bench_sync_rates_every_configuration_against_memcpy():
    result = run_cli(
        [
            "bench",
            "sync",
            "--size-mb",
            "2",
            "--hidden",
            "128",
            "--backend",
            "inprocess,gloo",
            "--bucket-mb",
            "0.5",
            "--repeats",
            "1",
            "--warmup",
            "0",
        ]
    )
    assert_finite(result, ["sync_vs_memcpy", "sync_gbytes_per_s", "memcpy_gbytes_per_s", "libc_memcpy_gbytes_per_s"])
    rows = result["configurations"]
    assert {(r["backend"], r["checksum"], r["buffer"]) for r in rows} == {
        (b, c, f) for b in ("inprocess", "gloo") for c in (True, False) for f in (True, False)
    }
    assert result["sync_vs_memcpy"] == max(r["vs_memcpy"] for r in rows) > 0


@pytest.mark.ray
def test_bench_sync_over_the_ray_object_store_includes_the_controllers_sync(ray_cluster, capsys):
    code = main(
        [
            "bench",
            "sync",
            "--size-mb",
            "2",
            "--hidden",
            "128",
            "--backend",
            "ray",
            "--checksum",
            "on",
            "--buffer",
            "on",
            "--repeats",
            "1",
            "--warmup",
            "0",
        ]
    )
    result = last_json(capsys)
    assert code == 0
    assert_finite(result, ["sync_vs_memcpy", "sync_gbytes_per_s", "memcpy_gbytes_per_s"])
    assert [r["backend"] for r in result["configurations"]] == ["ray", "ray/object_store_sync"]


@pytest.mark.ray
def test_bench_step_reports_bubble_share_for_streaming_and_after_all_rewards(ray_cluster, capsys):
    code = main(
        [
            "bench",
            "step",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--talk-seconds",
            "6,12",
            "--talks-per-length",
            "2",
            "algorithm.talks_per_step=2",
            "algorithm.group_size=2",
            "rollout.sampling.max_new_tokens=4",
            "cluster.cpus_per_learner=0.5",
            "cluster.cpus_per_rollout_worker=0.5",
            "cluster.cpus_per_reward_actor=0.25",
        ]
    )
    result = last_json(capsys)
    assert code == 0
    phases = ["step_s", "rollout_s", "reward_tail_s", "train_s", "sync_s", "other_s"]
    assert_finite(result, ["bubble_share", "bubble_share_batch"] + phases + [p + "_batch" for p in phases])
    for suffix in ("", "_batch"):
        share = result["bubble_share" + suffix]
        assert 0 <= share < 1
        assert share == pytest.approx(result["reward_tail_s" + suffix] / result["step_s" + suffix])
        assert result["rollout_s" + suffix] > 0 and result["train_s" + suffix] > 0
    assert result["rollouts_per_step"] == 4


@pytest.mark.ray
def test_bench_step_max_staleness_times_the_sync_and_async_loop_and_ends_with_their_ratio(ray_cluster, capsys):
    code = main(
        ["bench", "step", "--max-staleness", "0,1", "--steps", "1", "--warmup", "0", "--talk-seconds", "6", "--talks-per-length", "4"]
        + ["algorithm.talks_per_step=2", "algorithm.group_size=2", "rollout.sampling.max_new_tokens=4"]
        + ["cluster.cpus_per_learner=0.5", "cluster.cpus_per_rollout_worker=0.5", "cluster.cpus_per_reward_actor=0.25"]
    )
    out = capsys.readouterr().out
    result = json.loads([line for line in out.splitlines() if line.strip()][-1])
    assert code == 0
    assert_finite(result, ["async_vs_sync", "steps_per_min_s0", "steps_per_min_s1", "idle_rollout_share_s1", "idle_learner_share_s1"])
    assert result["async_vs_sync"] == pytest.approx(result["steps_per_min_s1"] / result["steps_per_min_s0"])
    assert result["steps_per_min_s0"] == pytest.approx(60 / result["step_s_s0"])
    assert "max_staleness" in out and "async vs sync" in out


def test_bench_rollout_reports_the_share_of_wall_time_outside_forward_passes_and_tokens_per_s(capsys):
    threads = __import__("torch").get_num_threads()  # the bench sets the process's thread count: leave it as it was
    code = main(
        ["bench", "rollout", "--turns", "2", "--skip-vllm", f"--threads={threads}"]
        + ["algorithm.group_size=2", "rollout.sampling.max_new_tokens=4"]
    )
    out = capsys.readouterr().out
    result = json.loads([line for line in out.splitlines() if line.strip()][-1])
    assert code == 0
    keys = ["outside_forward_share", "forward_s", "tokens_per_s", "decode_tokens_per_s"]
    assert_finite(result, keys + [f"reprefill_{k}" for k in keys])
    for prefix, wall in (("", result["torch_kv_wall_s"]), ("reprefill_", result["torch_reprefill_wall_s"])):
        assert 0 < result[prefix + "forward_s"] < wall
        assert result[prefix + "outside_forward_share"] == pytest.approx(1 - result[prefix + "forward_s"] / wall)
        assert result[prefix + "tokens_per_s"] > result[prefix + "decode_tokens_per_s"] > 0
    assert "outside fwd" in out and "decode tok/s" in out


def test_bench_sync_refuses_a_backend_its_device_cannot_run(capsys):
    with pytest.raises(SystemExit, match="not available on --device cpu"):
        main(["bench", "sync", "--backend", "ipc", "--size-mb", "1"])
    if not __import__("torch").cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            main(["bench", "sync", "--device", "cuda", "--size-mb", "1"])


@pytest.mark.parametrize("values", ["1", "0,0", "0,x", "-1,0"])
def test_bench_step_refuses_a_max_staleness_list_without_two_distinct_values(values):
    with pytest.raises(SystemExit, match="--max-staleness needs two or more distinct integers"):
        main(["bench", "step", f"--max-staleness={values}"])


def test_bench_help_lists_every_benchmark_without_importing_their_modules():
    probe = (
        "import sys\n"
        "from hpo_ray.cli.main import main\n"
        "try:\n"
        "    main(['bench', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'ray', 'hpo_ray.cli.bench_sync') if m in sys.modules)\n"
        "print('imported:', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("reward", "rollout", "learner", "sync", "step"):
        assert name in done.stdout
    assert "imported: []" in done.stdout


def test_bench_options_of_the_chosen_benchmark_are_parsed():
    from hpo_ray.cli.main import parse

    args = parse(["bench", "sync", "--repeats", "3", "--bucket-mb", "16"])
    assert (args.benchmark, args.repeats, args.bucket_mb) == ("sync", 3, "16")
    assert args._bench_module == "hpo_ray.cli.bench_sync"
