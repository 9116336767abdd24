"""`hpo-ray score --input rollouts.jsonl --output scores.jsonl [--config C] [reward.key=value ...]`.

Reads every record first (a malformed one stops everything with its line number and field), scores
them with the configured reward, normalises per group, and writes the output file atomically.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from hpo_ray.cli.common import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="rollouts, one JSON object per line")
    parser.add_argument("--output", required=True, type=Path, help="scores, one JSON object per line")
    add_config_arguments(parser)


def read_rollouts(path: Path) -> list:
    """Every record of a JSONL file as `RolloutText`; blank lines are skipped."""
    from hpo_ray.reward import RolloutFormatError, RolloutText

    rollouts = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RolloutFormatError(number, "<record>", f"not valid JSON: {exc.msg} (column {exc.colno})") from None
            rollouts.append(RolloutText.from_json(obj, line=number))
    return rollouts


def write_atomically(path: Path, lines: list[str]) -> None:
    """Write `lines` to `path` via a temporary file in the same folder, so no partial file is left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run(args: argparse.Namespace) -> int:
    from hpo_ray.reward import RewardFunction, RolloutFormatError, group_rewards

    cfg = config_from_args(args).reward
    if not args.input.is_file():
        print(f"hpo-ray score: input file not found: {args.input}", file=sys.stderr)
        return 2
    try:
        rollouts = read_rollouts(args.input)
    except RolloutFormatError as exc:
        print(f"hpo-ray score: {args.input}: {exc}", file=sys.stderr)
        return 2
    try:
        scores = RewardFunction(cfg).score(rollouts)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"hpo-ray score: {exc}", file=sys.stderr)
        return 2
    rewards = group_rewards(scores, cfg)
    lines = [json.dumps({**s.to_json(), "reward": r}, ensure_ascii=False) for s, r in zip(scores, rewards)]
    write_atomically(args.output, lines)
    groups = len({s.group for s in scores})
    print(f"scored {len(scores)} rollouts in {groups} groups -> {args.output}")
    return 0
