"""`hpo-ray build-model --data DIR --out DIR`: tokenizer trained on the data + tiny model, HF format."""

from pathlib import Path

from hpo_ray.cli.common import add_config_arguments, config_from_args
from hpo_ray.model.prepare import prepare_tiny_policy


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="a data dir from `hpo-ray synth` (uses its train manifest)")
    parser.add_argument("--out", required=True, type=Path, help="output HF model directory")
    parser.add_argument(
        "--speech",
        action="store_true",
        help="also write a freshly initialised speech encoder + projector (model.speech) in speech_encoder/",
    )
    add_config_arguments(parser)


def run(args) -> int:
    cfg = config_from_args(args)
    manifests = [
        p for s in ("train", "dev") for p in (args.data / s / "manifest.parquet", args.data / s / "audio_manifest.parquet") if p.is_file()
    ]
    if not manifests:
        raise SystemExit(f"hpo-ray build-model: no manifest.parquet or audio_manifest.parquet under {args.data}/train or /dev")
    out = prepare_tiny_policy(cfg, manifests, args.out, speech=args.speech)
    n = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({n / 1e6:.1f} MB)")
    return 0
