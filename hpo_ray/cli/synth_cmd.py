"""`hpo-ray synth --out DIR [--speech] [--talks N --seed S ...]`: write synthetic talks, manifests and SFT dialogues.

The explicit options override `data.synth.*` of the config (and of any `key=value` overrides);
`--speech` speaks the talks with eSpeak NG (extra `[speech]`) instead of rendering feature vectors.
"""

import argparse
import sys
import time

from hpo_ray.cli.common import add_config_arguments, config_from_args

# option dest -> data.synth field it overrides
_SYNTH_OPTIONS = {
    "talks": "talks",
    "seed": "seed",
    "language_seed": "language_seed",
    "omit_rate": "omit_rate",
    "premature_rate": "premature_rate",
    "segmentation_slip_rate": "segmentation_slip_rate",
    "speech": "speech.enabled",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output data directory (empty, new, or a previous synth output)")
    parser.add_argument("--talks", type=int, default=None, help="number of talks (data.synth.talks)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the talks (data.synth.seed)")
    parser.add_argument("--language-seed", type=int, default=None, help="seed of the language (data.synth.language_seed)")
    parser.add_argument("--omit-rate", type=float, default=None, help="fraction of SFT target words dropped")
    parser.add_argument("--premature-rate", type=float, default=None, help="fraction of SFT target words emitted early")
    parser.add_argument(
        "--segmentation-slip-rate",
        type=float,
        default=None,
        help="fraction of SFT sentence boundaries whose closing word is written a turn late",
    )
    parser.add_argument(
        "--speech", action="store_true", default=None, help="speak the talks with eSpeak NG into 16 kHz wavs (data.synth.speech.enabled)"
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from hpo_ray.synth import synthesize
    from hpo_ray.synth.espeak import SpeechEngineMissing

    explicit = [f"data.synth.{field}={getattr(args, dest)}" for dest, field in _SYNTH_OPTIONS.items() if getattr(args, dest) is not None]
    args.overrides = list(args.overrides) + explicit
    cfg = config_from_args(args)
    started = time.perf_counter()
    try:
        meta = synthesize(cfg, args.out)
    except (FileExistsError, SpeechEngineMissing) as exc:
        print(f"hpo-ray synth: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - started
    talks = ", ".join(f"{k} {v}" for k, v in meta["talks"].items())
    seconds = sum(meta["frames"].values()) * meta["frame_seconds"]
    form = (
        f"spoken by {meta['speech']['engine']} at {meta['speech']['sample_rate']} Hz"
        if "speech" in meta
        else f"width {meta['hidden_size']}"
    )
    print(
        f"wrote {args.out}: talks {talks}; {sum(meta['sentences'].values())} sentences, {seconds:.0f} s of speech "
        f"(seed {meta['seed']}, language_seed {meta['language_seed']}, {form}); "
        f"{wall:.1f} s, {wall / max(seconds / 60, 1e-9):.2f} s per talk-minute"
    )
    for split, st in meta["sft"].items():
        print(
            f"  sft/{split}.jsonl: {st['dialogues']} dialogues, {st['words']} target words, "
            f"omitted {st['omitted']}, premature {st['premature']} ({st['wrong']} wrong), slipped sentence ends {st['slipped']}"
        )
    return 0
