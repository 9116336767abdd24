"""`hpo-ray sft-speech --init M --data D --out S --features F`: two-stage SFT on spoken talks (hear, then translate)."""

import json
from pathlib import Path

from hpo_ray.cli.common import add_config_arguments, config_from_args


def add_arguments(parser) -> None:
    parser.add_argument("--init", type=Path, required=True, help="speech LLM directory, or an LLM directory (a fresh encoder is added)")
    parser.add_argument("--data", type=Path, required=True, help="data dir with {train,dev,test}/audio_manifest.parquet and sft/")
    parser.add_argument("--out", type=Path, required=True, help="where the SFT speech LLM is written")
    parser.add_argument(
        "--features", type=Path, required=True, help="where every split is encoded with the stage-1 encoder (HPO trains on these)"
    )
    add_config_arguments(parser)


def run(args) -> int:
    from hpo_ray.speech.sft_speech import speech_finetune

    cfg = config_from_args(args)
    summary = speech_finetune(cfg, args.init, args.data, args.out, args.features)
    print(json.dumps(summary))
    return 0
