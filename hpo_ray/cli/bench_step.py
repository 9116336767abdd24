"""`hpo-ray bench step`: a full HPO step's phase breakdown and idle bubble, with rewards streamed
as trajectories finish vs scored only after all rollouts finish.

Drives the real `Controller` on Ray (rollout workers, reward actors, the DeepSpeed learner group,
object-store weight sync) on synthetic talks and the tiny policy, built in a temp dir unless the
config names manifests and a model. Every step's talks are run twice, once per mode, with the same
sampling seed (the order alternates step by step, so drifting load hits both modes alike). The
bubble is the controller's: reward time not overlapped with generation (`time/reward_tail`) as a
share of the step (`time/step`). Reward work is real scoring (mWER resegmentation + the
configured quality scorer); raise it with more or longer talks and larger groups.
`--max-staleness 0,1` times the training loop synchronously and asynchronously instead
(`hpo_ray/cli/bench_staleness.py`).
"""

import argparse
import tempfile
import time
from pathlib import Path

from hpo_ray.bench.common import finite_json, load_note, quiet_transformers
from hpo_ray.config import RunConfig, load_config
from hpo_ray.env import apply_local_ray, check_token_auth

TARGET = 0.10  # issue 6: streaming bubble ≤ 10 % of the step
PHASES = (
    ("rollout", "time/rollout"),
    ("reward tail", "time/reward_tail"),
    ("train", "time/train"),
    ("sync", "time/sync"),
    ("other", "time/other"),
)
MODES = (("streaming", True), ("after-all", False))
# Quiet, local, no validation: only the step's phases run. The caller's overrides come after these.
BENCH_OVERRIDES = [
    "logging.progress=false",
    "logging.tensorboard=false",
    "logging.ray_metrics=false",
    "cluster.include_dashboard=false",
    "validation.at_start=false",
    "data.synth.sft_dialogues_per_talk=1",
    "algorithm.talks_per_step=4",
    "algorithm.group_size=4",
    "rollout.sampling.max_new_tokens=12",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode first")
    parser.add_argument(
        "--talk-seconds",
        default="20,40,60,80,100,120",
        help="synthetic talks of these lengths, mixed (rollouts of a step then finish at different times)",
    )
    parser.add_argument("--talks-per-length", type=int, default=3, help="synthetic train talks of each length")
    parser.add_argument("--address", default=None, help="Ray address (default: start a private local Ray)")
    parser.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of the local Ray (default: cores)")
    parser.add_argument("--config", default=None, help="YAML config (defaults when omitted)")
    parser.add_argument(
        "--max-staleness",
        default=None,
        metavar="K,K",
        help="e.g. 0,1: instead of the bubble bench, time the training loop at each algorithm.max_staleness "
        "(rollout worker and learner on a core each) and report steps/min, async vs sync",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="e.g. algorithm.talks_per_step=8 data.synth.min_talk_seconds=90 cluster.num_reward_actors=2",
    )


def _prepare(args, workdir: Path) -> RunConfig:
    """The config, with synthetic talks and a tiny policy built under `workdir` where none are given."""
    cfg = load_config(args.config, BENCH_OVERRIDES + list(args.overrides))
    extra = []
    train = cfg.data.train_manifest
    if train is None:
        train = mixed_length_talks(args, workdir)
        extra.append(f"data.train_manifest={train}")
    if cfg.model.path is None:
        from hpo_ray.model.prepare import prepare_tiny_policy

        extra.append(f"model.path={prepare_tiny_policy(cfg, [Path(train)], workdir / 'policy')}")
    return load_config(args.config, BENCH_OVERRIDES + extra + list(args.overrides))


def mixed_length_talks(args, workdir: Path) -> Path:
    """Synthesize `--talks-per-length` train talks at each of `--talk-seconds` (one synth run per
    length, distinct seeds) and merge them into one manifest with absolute feature paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hpo_ray.synth import synthesize

    try:
        lengths = [float(w) for w in args.talk_seconds.split(",") if w.strip()]
    except ValueError:
        raise SystemExit(f"hpo-ray bench step: --talk-seconds must be a comma list of seconds, got {args.talk_seconds!r}") from None
    if not lengths or min(lengths) <= 0 or args.talks_per_length < 1:
        raise SystemExit("hpo-ray bench step: --talk-seconds needs positive lengths and --talks-per-length ≥ 1")
    tables = []
    for j, seconds in enumerate(lengths):
        sub = load_config(
            args.config,
            BENCH_OVERRIDES
            + list(args.overrides)
            + [
                f"data.synth.talks={args.talks_per_length}",
                "data.synth.dev_fraction=0",
                "data.synth.test_fraction=0",
                f"data.synth.min_talk_seconds={seconds}",
                f"data.synth.seed={j}",
            ],
        )
        folder = workdir / f"talks_{j}"
        synthesize(sub, folder)
        table = pq.read_table(folder / "train" / "manifest.parquet")
        paths = [str((folder / "train" / p).resolve()) for p in table.column("features_path").to_pylist()]
        tables.append(table.set_column(table.schema.get_field_index("features_path"), "features_path", pa.array(paths)))
    out = workdir / "talks.parquet"
    pq.write_table(pa.concat_tables(tables), out)
    return out


def _one_step(ctl, talks, seed_step: int, stream: bool) -> dict:
    """draw (done) → rollout + reward → batch → update → sync, timed like `train()` does."""
    started = time.perf_counter()
    trajectories, scores, timing = ctl.rollout_and_score(talks, seed_step, stream=stream)
    batch, batch_stats = ctl.make_batch(trajectories, scores, talks)
    train_stats = ctl.update(batch)
    sync_stats = ctl.sync_weights(version=ctl.step + 1)
    ctl.step += 1
    return ctl.log({**timing, **batch_stats, **train_stats, **sync_stats}, started)


def _summary(steps: list[dict]) -> dict:
    """Mean phase seconds per step, and the bubble share over all the steps together."""
    n = len(steps)
    out = {key: sum(s[key] for s in steps) / n for _, key in PHASES}
    out["time/step"] = sum(s["time/step"] for s in steps) / n
    out["bubble_share"] = sum(s["time/reward_tail"] for s in steps) / sum(s["time/step"] for s in steps)
    out["rollouts"] = sum(s["rollout/sequences"] for s in steps) / n
    out["tokens"] = sum(s["tokens/total"] for s in steps) / n
    out["reward_inflight_max"] = max(s["queue/reward_inflight_max"] for s in steps)
    return out


def _connect(args, cfg: RunConfig) -> bool:
    """Join `--address`, or start a private local Ray (never another user's running cluster)."""
    if args.address:
        check_token_auth()
    else:
        apply_local_ray(cfg.cluster.local_auth)
    import ray

    if ray.is_initialized():
        return False
    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(
            address="local",
            num_cpus=args.num_cpus or cfg.cluster.num_cpus,
            include_dashboard=False,
            log_to_driver=cfg.logging.level == "DEBUG",
        )
    return True


def run(args) -> int:
    if args.steps < 1 or args.warmup < 0:
        raise SystemExit("hpo-ray bench step: --steps must be ≥ 1 and --warmup ≥ 0")
    quiet_transformers()
    if args.max_staleness is not None:
        from hpo_ray.cli import bench_staleness

        return bench_staleness.run(args, _prepare, _connect)
    note = load_note()
    with tempfile.TemporaryDirectory(prefix="hpo-bench-step-") as tmp:
        cfg = _prepare(args, Path(tmp))
        started_ray = _connect(args, cfg)
        import ray

        from actors.controller import Controller

        records: dict[str, list[dict]] = {name: [] for name, _ in MODES}
        try:
            t0 = time.perf_counter()
            ctl = Controller(cfg, Path(tmp) / "run", resume=False)
            setup_s = time.perf_counter() - t0
            try:
                for k in range(args.warmup + args.steps):
                    talks = ctl.draw_talks()
                    order = MODES if k % 2 == 0 else MODES[::-1]
                    for name, stream in order:
                        metrics = _one_step(ctl, talks, k, stream)
                        if k >= args.warmup:
                            records[name].append(metrics)
            finally:
                ctl.close()
        finally:
            if started_ray:
                ray.shutdown()

    stream_s, batch_s = _summary(records["streaming"]), _summary(records["after-all"])
    a, c = cfg.algorithm, cfg.cluster
    print(
        f"step bench: {a.talks_per_step} talks x G={a.group_size} = {stream_s['rollouts']:.0f} rollouts/step "
        f"(~{stream_s['tokens']:.0f} tokens), {c.num_rollout_workers} rollout worker(s), {c.num_reward_actors} reward "
        f"actor(s) ({cfg.reward.quality}), {cfg.learner.num_ranks} learner rank(s) ZeRO-{cfg.learner.zero_stage}, "
        f"{cfg.rollout.engine} engine; {args.warmup} warm-up + {args.steps} timed steps per mode, same talks and seeds; "
        f"actor start-up {setup_s:.1f} s (not counted); {note}"
    )
    print(f"{'mode':<12}{'step s':>8}" + "".join(f"{label:>13}" for label, _ in PHASES) + f"{'bubble':>9}")
    for name, s in (("streaming", stream_s), ("after-all", batch_s)):
        print(f"{name:<12}{s['time/step']:>8.2f}" + "".join(f"{s[key]:>13.2f}" for _, key in PHASES) + f"{100 * s['bubble_share']:>8.1f}%")
    verdict = "meets" if stream_s["bubble_share"] <= TARGET else "misses"
    print(
        f"bubble share (reward tail / step): streaming {100 * stream_s['bubble_share']:.1f} % ({verdict} the "
        f"<= {100 * TARGET:.0f} % goal), after-all {100 * batch_s['bubble_share']:.1f} %; the after-all reward tail "
        f"({batch_s['time/reward_tail']:.2f} s) is the whole reward work of a step; most rewards in flight at once: "
        f"{stream_s['reward_inflight_max']:.0f}"
    )
    result = {"bubble_share": stream_s["bubble_share"], "bubble_share_batch": batch_s["bubble_share"]}
    for suffix, s in (("", stream_s), ("_batch", batch_s)):
        result[f"step_s{suffix}"] = s["time/step"]
        for label, key in PHASES:
            result[f"{label.replace(' ', '_')}_s{suffix}"] = s[key]
    result["rollouts_per_step"] = stream_s["rollouts"]
    print(finite_json(result))
    return 0
