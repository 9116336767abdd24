"""`hpo-ray sft --init DIR --out DIR`: supervised fine-tuning on dialogue-form data (one process)."""

import json
from pathlib import Path

from hpo_ray.cli.common import add_config_arguments, config_from_args
from hpo_ray.sft import finetune


def add_arguments(parser) -> None:
    parser.add_argument("--init", type=Path, required=True, help="starting HF model directory")
    parser.add_argument("--out", type=Path, required=True, help="where the SFT policy is written (HF format)")
    parser.add_argument("--sft-dir", type=Path, default=None, help="folder with train.jsonl/dev.jsonl (default data.sft_dir)")
    add_config_arguments(parser)


def run(args) -> int:
    cfg = config_from_args(args)
    sft_dir = args.sft_dir or cfg.data.sft_dir
    if sft_dir is None:
        raise SystemExit("hpo-ray sft: give --sft-dir or set data.sft_dir")
    from hpo_ray.model.files import check_policy_dir

    check_policy_dir(args.init)
    summary = finetune(cfg, args.init, args.out, Path(sft_dir))
    print(json.dumps(summary))
    return 0
