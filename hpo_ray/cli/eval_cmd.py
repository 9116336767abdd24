"""`hpo-ray eval --checkpoint X --data MANIFEST --multiplier m --output DIR [--samples n] [--config C] [key=value ...]`.

Runs the policy on every talk of the manifest (features, or an audio manifest: then encoded first, chunk by
chunk, with the checkpoint's speech encoder into DIR/encoded/) and writes `instances.log`, `segments.yaml`,
`references.txt`, `sources.txt` (OmniSTEval / StreamLAAL inputs), `rollouts.jsonl` (re-scorable with
`hpo-ray score`), `scored.jsonl` and `scores.json` into DIR, then prints the scores.

`--via simulstream` then runs the field's loop on the same talks' audio (`--audio`, default: the
audio manifest given, or the one `hpo-ray encode` recorded): `simulstream_inference` with our speech processor, and
`omnisteval longform` on its log and on our instances.log, into DIR/simulstream/ (docs/evaluation.md).
"""

import argparse
import sys
from pathlib import Path

from hpo_ray.cli.common import add_config_arguments, config_from_args

ROWS = (
    ("chrF", "chrf", "{:.2f}"),
    ("BLEU", "bleu", "{:.2f}"),
    ("quality ({quality_metric})", "quality", "{:.4g}"),
    ("StreamLAAL (s)", "stream_laal", "{:.3f}"),
    ("HPO latency (s)", "hpo_latency", "{:.3f}"),
    ("length ratio", "length_ratio", "{:.3f}"),
    ("empty sentences", "empty_sentences", "{}"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None, help="HF policy directory (default: model.path)")
    parser.add_argument("--data", type=Path, default=None, help="manifest of the talks (default: data.test_manifest)")
    parser.add_argument("--multiplier", type=int, default=None, help="chunk multiplier m (default: data.multiplier)")
    parser.add_argument("--output", type=Path, required=True, help="folder for instances.log, segments.yaml, scores.json ...")
    parser.add_argument("--samples", type=int, default=1, help="dialogues per talk (>1 needs rollout.validation_sampling.greedy=false)")
    parser.add_argument("--talks-per-batch", type=int, default=None, help="talks run together (default: all)")
    parser.add_argument(
        "--via",
        choices=("hpo-ray", "simulstream"),
        default="hpo-ray",
        help="simulstream: also stream the talks' audio through simulstream_inference + OmniSTEval",
    )
    parser.add_argument(
        "--audio", type=Path, default=None, help="audio manifest of the talks for --via simulstream (default: the one in encode.json)"
    )
    add_config_arguments(parser)


def format_table(scores: dict) -> str:
    """The scores as a two-column table."""
    lines = [
        f"eval m={scores['multiplier']} (turn {scores['turn_seconds']:.3g} s): {scores['talks']} talks, "
        f"{scores['samples']} sample(s), {scores['turns']} turns, {scores['truncated']} truncated"
    ]
    for label, key, fmt in ROWS:
        value = scores.get(key)
        lines.append(f"  {label.format(**scores):<22} {'n/a' if value is None else fmt.format(value)}")
    return "\n".join(lines)


FIELD_ROWS = (
    ("BLEU", "BLEU", "{:.2f}"),
    ("chrF", "chrF", "{:.2f}"),
    ("LongLAAL ideal (s)", "LongLAAL (CU)", "{:.3f}"),
    ("LongLAAL comp.-aware (s)", "LongLAAL (CA)", "{:.3f}"),
    ("LongYAAL ideal (s)", "LongYAAL (CU)", "{:.3f}"),
)


def format_field_table(field: dict) -> str:
    """OmniSTEval on the simulstream log next to OmniSTEval on our instances.log, with the RTF and the hardware."""
    hw = field["hardware"]
    lines = [
        f"simulstream_inference + omnisteval longform: {field['talks']} talks, {field['audio_seconds']:.1f} s of audio",
        f"  {'':<28}{'simulstream log':>16}{'instances.log':>16}",
    ]
    for label, key, fmt in FIELD_ROWS:
        cells = []
        for source in ("omnisteval", "omnisteval_of_instances_log"):
            value = field[source].get(key)
            scale = 1000.0 if label.endswith("(s)") else 1.0
            cells.append("n/a" if value is None else fmt.format(value / scale))
        lines.append(f"  {label:<28}{cells[0]:>16}{cells[1]:>16}")
    lines.append(
        f"  real-time factor {field['rtf']:.3f} ({field['compute_seconds']:.1f} s compute) on {hw['cpu']}, "
        f"{hw['usable_cores']} usable of {hw['logical_cores']} cores, device {hw['device']}" + (f" ({hw['gpu']})" if "gpu" in hw else "")
    )
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
    if args.via == "simulstream" and args.samples != 1:
        print("hpo-ray eval: --via simulstream streams each talk once (--samples 1)", file=sys.stderr)
        return 2
    try:
        from hpo_ray.speech.encode import features_manifest

        features = features_manifest(cfg, checkpoint, manifest, Path(args.output) / "encoded")
        if args.via == "simulstream":
            from hpo_ray.serve.field_eval import evaluate_via_simulstream

            scores, field = evaluate_via_simulstream(cfg, checkpoint, features, multiplier, args.output, args.audio)
        else:
            scores, field = (
                evaluate(cfg, checkpoint, features, multiplier, args.output, args.samples, talks_per_batch=args.talks_per_batch),
                None,
            )
    except (ManifestError, FileNotFoundError, FileExistsError) as exc:
        print(f"hpo-ray eval: {exc}", file=sys.stderr)
        return 2
    print(format_table(scores))
    print(f"wrote {args.output}/scores.json, instances.log, segments.yaml, references.txt")
    if field is not None:
        print(format_field_table(field))
        print(f"wrote {args.output}/simulstream/scores.json, metrics.jsonl, processor.yaml; {args.output}/omnisteval/")
    return 0
