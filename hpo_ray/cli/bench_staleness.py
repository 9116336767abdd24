"""`hpo-ray bench step --max-staleness 0,1`: steps per minute of the real training loop (`train()`)
run synchronously and with bounded staleness, one after the other in one invocation, same talks.

Each setting starts its own controller (start-up not counted), runs `--warmup` untimed steps, the
`--steps` timed ones, then one untimed last step: the loop's last step has nothing left to
prefetch, so it would flatter neither side. The rollout worker and the learner rank each reserve one
whole CPU (`cluster.cpus_per_rollout_worker=1`, `cluster.cpus_per_learner=1`; Ray gives an actor as
many torch threads as CPUs), the reward actor a quarter; the local Ray gets enough logical CPUs to
place them. Overlap can only pay when the two actors have cores of their own.
"""

import math
import os
import tempfile
import time
from pathlib import Path

from hpo_ray.bench.common import finite_json, load_note

# one core each for the rollout worker and the learner; the caller's overrides come after these
ONE_CORE_EACH = [
    "cluster.cpus_per_rollout_worker=1",
    "cluster.cpus_per_learner=1",
    "cluster.cpus_per_reward_actor=0.25",
    "checkpoint.every=1000",
    "validation.every=1000",
]
REPORTED = (
    ("step s", "time/step"),
    ("rollout s", "time/rollout"),
    ("train s", "time/train"),
    ("sync s", "time/sync"),
    ("wait rollout s", "time/wait_rollout"),
    ("wait workers s", "time/wait_workers"),
    ("idle rollout", "idle/rollout_share"),
    ("idle learner", "idle/learner_share"),
    ("staleness", "rollout/staleness_mean"),
)


def parse_staleness(text: str) -> list[int]:
    """`0,1` → [0, 1]: at least two distinct values ≥ 0, the first the baseline."""
    try:
        values = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        values = []
    if len(values) < 2 or min(values) < 0 or len(set(values)) != len(values):
        raise SystemExit(f"hpo-ray bench step: --max-staleness needs two or more distinct integers ≥ 0, e.g. 0,1; got {text!r}")
    return values


def cpus_needed(cfg) -> int:
    """Logical CPUs the run's pools reserve (separate pools)."""
    c = cfg.cluster
    total = c.cpus_per_learner * cfg.learner.num_ranks + c.cpus_per_rollout_worker * c.num_rollout_workers
    return math.ceil(total + c.cpus_per_reward_actor * c.num_reward_actors - 1e-9)


def run(args, prepare, connect) -> int:
    """Time `train()` at each `--max-staleness` value; the last line is JSON with `async_vs_sync`."""
    values = parse_staleness(args.max_staleness)
    args.overrides = ONE_CORE_EACH + list(args.overrides)
    note = load_note()
    with tempfile.TemporaryDirectory(prefix="hpo-bench-staleness-") as tmp:
        cfg = prepare(args, Path(tmp))
        if args.address is None and args.num_cpus is None:
            args.num_cpus = max(cpus_needed(cfg), cfg.cluster.num_cpus or 0)
        started_ray = connect(args, cfg)
        import ray

        from actors.controller import train

        summaries: dict[int, dict] = {}
        try:
            for k in values:
                run_cfg = with_staleness(cfg, k)
                t0 = time.perf_counter()
                history = train(run_cfg, Path(tmp) / f"run_{k}", steps=args.warmup + args.steps + 1)
                timed = history[args.warmup : args.warmup + args.steps]
                summaries[k] = _summary(timed, time.perf_counter() - t0)
        finally:
            if started_ray:
                ray.shutdown()
    return _report(cfg, args, values, summaries, note)


def with_staleness(cfg, k: int):
    """The prepared config with `algorithm.max_staleness=k`, checked again like any config."""
    from hpo_ray.config import parse_config

    tree = cfg.model_dump(mode="json")
    tree["algorithm"]["max_staleness"] = k
    return parse_config(tree)


def _summary(timed: list[dict], total_s: float) -> dict:
    n = len(timed)
    out = {key: sum(h.get(key, 0.0) for h in timed) / n for _, key in REPORTED}
    out["steps_per_min"] = 60.0 * n / sum(h["time/step"] for h in timed)
    out["run_s"] = total_s
    return out


def _report(cfg, args, values: list[int], summaries: dict[int, dict], note: str) -> int:
    a, c = cfg.algorithm, cfg.cluster
    print(
        f"staleness bench: {a.talks_per_step} talks x G={a.group_size} per step, {c.num_rollout_workers} rollout worker(s) "
        f"x {c.cpus_per_rollout_worker:g} CPU, {cfg.learner.num_ranks} learner rank(s) x {c.cpus_per_learner:g} CPU "
        f"(ZeRO-{cfg.learner.zero_stage}), {c.num_reward_actors} reward actor(s), {cfg.rollout.engine} engine; "
        f"{args.warmup} warm-up + {args.steps} timed + 1 untimed last step per setting; {note}; "
        f"1-min load average {_load()} at the end"
    )
    width = {label: max(10, len(label) + 2) for label, _ in REPORTED}
    print(f"{'max_staleness':<15}{'steps/min':>10}" + "".join(f"{label:>{width[label]}}" for label, _ in REPORTED))
    for k in values:
        s = summaries[k]
        print(f"{k:<15}{s['steps_per_min']:>10.2f}" + "".join(f"{s[key]:>{width[label]}.2f}" for label, key in REPORTED))
    base, last = summaries[values[0]], summaries[values[-1]]
    ratio = last["steps_per_min"] / base["steps_per_min"]
    print(f"async vs sync (max_staleness {values[-1]} vs {values[0]}): {ratio:.2f}x steps per minute")
    result = {"async_vs_sync": ratio}
    for k in values:
        result[f"steps_per_min_s{k}"] = summaries[k]["steps_per_min"]
        result[f"step_s_s{k}"] = summaries[k]["time/step"]
        result[f"idle_rollout_share_s{k}"] = summaries[k]["idle/rollout_share"]
        result[f"idle_learner_share_s{k}"] = summaries[k]["idle/learner_share"]
    print(finite_json(result))
    return 0


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"
