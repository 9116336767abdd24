"""`hpo-ray eval --checkpoint X --data MANIFEST --multiplier m --output DIR [--samples n] [--config C] [key=value ...]`.

Runs the policy on every talk of the manifest (features, or an audio manifest: then encoded first, chunk by
chunk, with the checkpoint's speech encoder into DIR/encoded/) and writes `instances.log`, `segments.yaml`,
`references.txt`, `sources.txt` (OmniSTEval / StreamLAAL inputs), `rollouts.jsonl` (re-scorable with
`hpo-ray score`), `scored.jsonl` and `scores.json` into DIR, then prints the scores.
"""

import argparse
import sys
from pathlib import Path

from hpo_ray.cli.common import add_config_arguments, config_from_args

ROWS = (
    ("chrF", "chrf", "{:.2f}"), ("BLEU", "bleu", "{:.2f}"), ("quality ({quality_metric})", "quality", "{:.4g}"),
    ("StreamLAAL (s)", "stream_laal", "{:.3f}"), ("HPO latency (s)", "hpo_latency", "{:.3f}"),
    ("length ratio", "length_ratio", "{:.3f}"), ("empty sentences", "empty_sentences", "{}"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None, help="HF policy directory (default: model.path)")
    parser.add_argument("--data", type=Path, default=None, help="manifest of the talks (default: data.test_manifest)")
    parser.add_argument("--multiplier", type=int, default=None, help="chunk multiplier m (default: data.multiplier)")
    parser.add_argument("--output", type=Path, required=True, help="folder for instances.log, segments.yaml, scores.json ...")
    parser.add_argument("--samples", type=int, default=1, help="dialogues per talk (>1 needs rollout.validation_sampling.greedy=false)")
    parser.add_argument("--talks-per-batch", type=int, default=None, help="talks run together (default: all)")
    add_config_arguments(parser)


def format_table(scores: dict) -> str:
    """The scores as a two-column table."""
    lines = [f"eval m={scores['multiplier']} (turn {scores['turn_seconds']:.3g} s): {scores['talks']} talks, "
             f"{scores['samples']} sample(s), {scores['turns']} turns, {scores['truncated']} truncated"]
    for label, key, fmt in ROWS:
        value = scores.get(key)
        lines.append(f"  {label.format(**scores):<22} {'n/a' if value is None else fmt.format(value)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from hpo_ray.config import ConfigError
    from hpo_ray.data.manifest import ManifestError
    from hpo_ray.eval import evaluate
    from hpo_ray.model.files import check_policy_dir

    cfg = config_from_args(args)
    checkpoint = args.checkpoint or cfg.model.path
    manifest = args.data or cfg.data.test_manifest
    multiplier = args.multiplier if args.multiplier is not None else cfg.data.multiplier
    if checkpoint is None:
        raise ConfigError("model.path", "no policy: pass --checkpoint or set model.path")
    if manifest is None:
        raise ConfigError("data.test_manifest", "no talks: pass --data or set data.test_manifest")
    check_policy_dir(checkpoint)  # config.json and safetensors headers, before anything loads
    for flag, value in (("--multiplier", multiplier), ("--samples", args.samples), ("--talks-per-batch", args.talks_per_batch)):
        if value is not None and value < 1:
            print(f"hpo-ray eval: {flag} must be a positive integer, got {value}", file=sys.stderr)
            return 2
    try:
        from hpo_ray.speech.encode import features_manifest

        manifest = features_manifest(cfg, checkpoint, manifest, Path(args.output) / "encoded")
        scores = evaluate(cfg, checkpoint, manifest, multiplier, args.output, args.samples,
                          talks_per_batch=args.talks_per_batch)
    except (ManifestError, FileNotFoundError, FileExistsError) as exc:
        print(f"hpo-ray eval: {exc}", file=sys.stderr)
        return 2
    print(format_table(scores))
    print(f"wrote {args.output}/scores.json, instances.log, segments.yaml, references.txt")
    return 0
