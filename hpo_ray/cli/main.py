"""`hpo-ray` entry point: one subcommand per module in hpo_ray/cli, imported only when used."""

import argparse
import importlib
import sys

from hpo_ray.env import apply_defaults

# name -> (module, one-line help). Each module defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("hpo_ray.cli.config_cmd", "print the resolved config"),
    "synth": ("hpo_ray.cli.synth_cmd", "synthesize toy-SST talks, manifests and SFT dialogues"),
    "build-model": ("hpo_ray.cli.model_cmd", "build the tiny speech LLM and its tokenizer in HF format"),
    "encode": ("hpo_ray.cli.encode_cmd", "encode an audio manifest's talks chunk by chunk into the features manifest HPO trains on"),
    "sft": ("hpo_ray.cli.sft_cmd", "supervised fine-tuning on dialogue-form data (the HPO start)"),
    "sft-speech": ("hpo_ray.cli.sft_speech_cmd", "two-stage SFT on spoken talks: the encoder learns to hear (CTC), then the LLM to translate"),
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


def main(argv: list[str] | None = None) -> int:
    apply_defaults()
    parser = argparse.ArgumentParser(prog="hpo-ray", description="HPO for simultaneous speech translation on Ray")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in _available().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    from hpo_ray.config import ConfigError

    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ConfigError as exc:
        print(f"hpo-ray {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
