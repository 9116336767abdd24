"""`hpo-ray` entry point: one subcommand per module in hpo_ray/cli, imported only when used."""

import argparse
import importlib
import sys

from hpo_ray.env import apply_defaults

# name -> (module, one-line help). Each module defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("hpo_ray.cli.config_cmd", "print the resolved config"),
    "synth": ("hpo_ray.cli.synth_cmd", "synthesize toy-SST talks, manifests and SFT dialogues"),
    "import-manifest": ("hpo_ray.cli.import_cmd", "convert an original HPO / InfiniSST parquet manifest into hpo-ray's"),
    "build-model": ("hpo_ray.cli.model_cmd", "build the tiny speech LLM and its tokenizer in HF format"),
    "encode": ("hpo_ray.cli.encode_cmd", "encode an audio manifest's talks chunk by chunk into the features manifest HPO trains on"),
    "sft": ("hpo_ray.cli.sft_cmd", "supervised fine-tuning on dialogue-form data (the HPO start)"),
    "plan": ("hpo_ray.cli.plan_cmd", "check that a config's pools fit the nodes of a launcher file (before submitting)"),
    "sft-speech": (
        "hpo_ray.cli.sft_speech_cmd",
        "two-stage SFT on spoken talks: the encoder learns to hear (CTC), then the LLM to translate",
    ),
    "train": ("hpo_ray.cli.train_cmd", "run the HPO training job on Ray"),
    "score": ("hpo_ray.cli.score_cmd", "score rollouts from a JSONL file with the hierarchical reward"),
    "eval": ("hpo_ray.cli.eval_cmd", "run a policy on a manifest's talks; write instances.log, segment YAML, references and scores.json"),
    "plot": ("hpo_ray.cli.plot_cmd", "draw quality-latency curves from the scores.json files of several runs"),
    "doctor": ("hpo_ray.cli.doctor_cmd", "self-check of the rollout engines (torch, vLLM) on CPU or --gpu"),
    "demo": ("hpo_ray.cli.demo_cmd", "run the embedded default job end to end"),
    "study": ("hpo_ray.cli.study_cmd", "the seeded evidence study behind docs/results.md (SFT, HPO, No-HPO, corrupted SFT)"),
    "bench": ("hpo_ray.cli.bench_cmd", "benchmarks that print side-by-side ratios"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {n: c for n, c in COMMANDS.items() if importlib.util.find_spec(c[0]) is not None}


def parse(argv: list[str]) -> argparse.Namespace:
    """The command word first, then only that command's module parses the rest: options may come
    anywhere among the `key=value` overrides."""
    available = _available()
    top = argparse.ArgumentParser(
        prog="hpo-ray",
        description="HPO for simultaneous speech translation on Ray",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<12}{h}" for n, (_, h) in available.items()),
    )
    top.add_argument("--debug", action="store_true", help="show the traceback of an error")
    top.add_argument("command", choices=list(available), metavar="COMMAND")
    top.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    head = top.parse_args(argv)
    module, help_text = available[head.command]
    sub = argparse.ArgumentParser(prog=f"hpo-ray {head.command}", description=help_text)
    sub.add_argument("--debug", action="store_true", help="show the traceback of an error")
    importlib.import_module(module).add_arguments(sub)
    nested = sub._subparsers is not None  # argparse cannot intermix with sub-commands (bench NAME)
    args = sub.parse_args(head.rest) if nested else sub.parse_intermixed_args(head.rest)
    args.command, args._module, args.debug = head.command, module, head.debug or args.debug
    return args


def main(argv: list[str] | None = None) -> int:
    apply_defaults()
    args = parse(sys.argv[1:] if argv is None else list(argv))
    from hpo_ray.errors import InputError

    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except InputError as exc:
        if args.debug:
            raise
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"hpo-ray {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
