"""Supervised fine-tuning on dialogue-form data: the HPO starting checkpoint.

A record of `DIR/sft/{split}.jsonl` is one dialogue of a talk: `turns = [{frames, text}]`, where
turn k's user message carries the next `frames` frames and `text` is the reply ("" = wait). The
loss is next-token cross-entropy on assistant tokens only, with frames injected through the same
`embed` every engine and the learner use.
"""

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hpo_ray.config import RunConfig, SftConfig
from hpo_ray.data.manifest import Manifest, Talk
from hpo_ray.dialogue import DialogueLayout, embed
from hpo_ray.errors import InputError


class SftDataError(InputError):
    """A bad SFT record; the message names the file, line and field."""


@dataclass
class SftExample:
    """One laid-out dialogue with the frames its placeholders take."""

    input_ids: list[int]
    assistant_mask: list[bool]
    talk: Talk
    n_frames: int


def load_sft_examples(path: Path, layout: DialogueLayout, width: int | None = None) -> list[SftExample]:
    """Read and lay out every dialogue of a JSONL file; all records are checked before training."""
    path = Path(path)
    if not path.is_file():
        raise SftDataError(f"{path}: SFT file not found")
    manifests: dict[Path, Manifest] = {}
    examples = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {line_no}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SftDataError(f"{where}: not valid JSON ({exc})") from None
        for key in ("talk_id", "manifest", "turns"):
            if key not in rec:
                raise SftDataError(f"{where} field '{key}': missing")
        mpath = (path.parent / rec["manifest"]).resolve()
        if mpath not in manifests:
            manifests[mpath] = Manifest(mpath, width=width, check_values=False)
        try:
            talk = manifests[mpath].by_id(rec["talk_id"])
        except KeyError:
            raise SftDataError(f"{where} field 'talk_id': {rec['talk_id']!r} not in {mpath}") from None
        turns = rec["turns"]
        if not isinstance(turns, list) or not turns:
            raise SftDataError(f"{where} field 'turns': expected a non-empty list")
        pairs = []
        for k, turn in enumerate(turns):
            if (
                not isinstance(turn, dict)
                or not isinstance(turn.get("frames"), int)
                or turn["frames"] <= 0
                or not isinstance(turn.get("text"), str)
            ):
                raise SftDataError(f"{where} field 'turns[{k}]': expected {{frames: positive int, text: str}}, got {turn!r}")
            if "\n" in turn["text"]:
                raise SftDataError(f"{where} field 'turns[{k}].text': replies may not contain newlines")
            pairs.append((turn["frames"], turn["text"]))
        n_frames = sum(n for n, _ in pairs)
        if n_frames > talk.n_frames:
            raise SftDataError(f"{where} field 'turns': {n_frames} frames but talk {talk.talk_id} has {talk.n_frames}")
        d = layout.build_text(talk.src_lang, talk.tgt_lang, pairs)
        examples.append(SftExample(d.input_ids, d.assistant_mask, talk, n_frames))
    if not examples:
        raise SftDataError(f"{path}: no SFT records")
    return examples


def collate(examples: list[SftExample], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, labels (-100 off the assistant mask) and packed frames."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros(len(examples), width, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        attn[i, :n] = 1
        mask = torch.tensor(e.assistant_mask)
        labels[i, :n][mask] = ids[i, :n][mask]
    frames = torch.from_numpy(np.concatenate([np.asarray(e.talk.frames()[: e.n_frames], dtype=np.float32) for e in examples]))
    return ids.to(device), attn.to(device), labels.to(device), frames.to(device)


def assistant_loss(model, layout: DialogueLayout, ids, attn, labels, frames) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over assistant tokens, and how many there were."""
    inputs = embed(model.get_input_embeddings(), ids, frames, layout.placeholder_id)
    logits = model(inputs_embeds=inputs, attention_mask=attn).logits[:, :-1].float()
    target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
    return loss, int((target != -100).sum())


def batch_loss(model, layout: DialogueLayout, batch: list[SftExample], device, backward: bool) -> tuple[float, int]:
    """Token-weighted mean assistant loss of `batch` (and, with `backward`, its gradient), one dialogue
    per forward pass: a row without padding needs no attention mask, so SDPA takes its causal path
    (measured on CPU: 1.5× per batch of the demo's 1.2 k-token dialogues on one thread, 1.13× for a
    whole SFT run on two). The value and the gradient are the padded batch's: each row's mean is
    weighted by its share of the tokens."""
    rows = [collate([e], layout.tokenizer.pad_token_id, device) for e in batch]
    counts = [int((labels[:, 1:] != -100).sum()) for _, _, labels, _ in rows]
    total, value = sum(counts), 0.0
    for (ids, _, labels, frames), n in zip(rows, counts):
        if n == 0:
            continue  # nothing to learn in this dialogue (and its mean would be NaN)
        loss, _ = assistant_loss(model, layout, ids, None, labels, frames)
        if backward:
            (loss * (n / total)).backward()
        value += loss.item() * n / total
    return value, total


@torch.no_grad()
def evaluate_loss(model, layout: DialogueLayout, examples: list[SftExample], batch_size: int, device) -> float:
    """Token-weighted assistant cross-entropy on held-out dialogues."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        loss, n = batch_loss(model, layout, examples[i : i + batch_size], device, backward=False)
        total, count = total + loss * n, count + n
    return total / max(count, 1)


def train_sft(
    model, layout: DialogueLayout, train: list[SftExample], cfg: SftConfig, dev: list[SftExample] | None = None, progress: bool = True
) -> dict:
    """AdamW with linear warm-up and cosine decay over `cfg.epochs`; returns the loss history."""
    device = next(model.parameters()).device
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    history = {"train_loss": [], "dev_loss": []}
    bar = tqdm(total=total, desc="sft", disable=not progress, dynamic_ncols=True)
    for epoch in range(cfg.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        model.train()
        for s in range(steps_per_epoch):
            batch = [train[i] for i in order[s * cfg.batch_size : (s + 1) * cfg.batch_size]]
            opt.zero_grad(set_to_none=True)
            loss, _ = batch_loss(model, layout, batch, device, backward=True)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            history["train_loss"].append(loss)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{history['train_loss'][-1]:.3f}")
        if dev:
            history["dev_loss"].append(evaluate_loss(model, layout, dev, cfg.batch_size, device))
            bar.set_postfix(epoch=epoch, dev_loss=f"{history['dev_loss'][-1]:.3f}")
    bar.close()
    model.eval()
    return history


def finetune(cfg: RunConfig, init: Path, out: Path, sft_dir: Path) -> dict:
    """The SFT stage: load `init`, train on `sft_dir`/{train,dev}.jsonl, save the policy and a summary to `out`."""
    from hpo_ray.devices import resolve_device
    from hpo_ray.dialogue import make_layout
    from hpo_ray.model.build import carry_speech_encoder, load_policy, save_policy

    torch.manual_seed(cfg.sft.seed)
    model, tokenizer = load_policy(init, dtype="float32", device=resolve_device(cfg.learner.device, "learner.device"))
    layout = make_layout(cfg, tokenizer)
    width = model.config.hidden_size
    train = load_sft_examples(Path(sft_dir) / "train.jsonl", layout, width)
    dev_path = Path(sft_dir) / "dev.jsonl"
    dev = load_sft_examples(dev_path, layout, width) if dev_path.is_file() else None
    before = evaluate_loss(model, layout, dev, cfg.sft.batch_size, model.device) if dev else None
    history = train_sft(model, layout, train, cfg.sft, dev, progress=cfg.logging.progress)
    out = save_policy(model, tokenizer, out, extra=carry_speech_encoder(init))
    summary = {
        "train_dialogues": len(train),
        "dev_dialogues": len(dev or []),
        "dev_loss_before": before,
        "dev_loss_after": history["dev_loss"][-1] if history["dev_loss"] else None,
        "final_train_loss": history["train_loss"][-1],
    }
    (out / "sft_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
