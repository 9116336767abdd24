"""`hpo-ray sft --init DIR --out DIR`: supervised fine-tuning on dialogue-form data (one process)."""

import json
from pathlib import Path

import torch

from hpo_ray.cli.common import add_config_arguments, config_from_args
from hpo_ray.dialogue import DialogueLayout
from hpo_ray.model.build import load_policy, resolve_device, save_policy
from hpo_ray.sft import evaluate_loss, load_sft_examples, train_sft


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
    torch.manual_seed(cfg.sft.seed)
    model, tokenizer = load_policy(args.init, dtype="float32", device=str(resolve_device(cfg.learner.device)))
    layout = DialogueLayout(tokenizer, cfg.model.placeholder_token, cfg.model.end_of_turn_token, cfg.model.instruction)
    width = model.config.hidden_size
    train = load_sft_examples(Path(sft_dir) / "train.jsonl", layout, width)
    dev_path = Path(sft_dir) / "dev.jsonl"
    dev = load_sft_examples(dev_path, layout, width) if dev_path.is_file() else None
    before = evaluate_loss(model, layout, dev, cfg.sft.batch_size, model.device) if dev else None
    history = train_sft(model, layout, train, cfg.sft, dev, progress=cfg.logging.progress)
    out = save_policy(model, tokenizer, args.out)
    summary = {"train_dialogues": len(train), "dev_dialogues": len(dev or []), "dev_loss_before": before,
               "dev_loss_after": history["dev_loss"][-1] if history["dev_loss"] else None,
               "final_train_loss": history["train_loss"][-1]}
    (out / "sft_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0
