"""Stage 1 of SFT on speech: the encoder + projector learn to hear.

Each sentence of an audio manifest (its segment plus a margin) is a training example; a CTC head
predicts the sentence's source words (a word vocabulary from the training talks; blank = 0). With the
`mlp` projector the head is a fresh linear layer over the projector's frames, discarded afterwards;
the `ctc` projector's head is the encoder's own and stays (its posteriors are the frames). Whole talks
(`talk_examples`, `sft.hear.talk_epochs`) then train the same head as the stream hears. Stage 2 trains the
LLM to translate from the frames this encoder writes.
"""

import math
import random
import string
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from hpo_ray.config import HearConfig
from hpo_ray.data.audio import AudioManifest, SpokenTalk

from .encoder import ChunkCausalEncoder
from .features import LogMel


@dataclass
class HeardSentence:
    """One training example: log-mel frames of a sentence's audio crop and its word ids."""

    mel: np.ndarray
    n_frames: int
    words: list[int]


def sentence_words(talk: SpokenTalk) -> list[list[str]]:
    """Per sentence, the spoken source words (the `words` column, else the sentence without punctuation)."""
    if talk.words is not None:
        return [[w for w, _, _ in sentence] for sentence in talk.words]
    return [[w for w in s.split() if w.strip(string.punctuation)] for s in talk.src_sentences]


def word_vocab(manifests: list[AudioManifest]) -> list[str]:
    """Sorted source words; CTC id = index + 1 (0 is the blank)."""
    return sorted({w for m in manifests for talk in m for sentence in sentence_words(talk) for w in sentence})


def sentence_examples(manifest: AudioManifest, vocab: list[str], encoder: ChunkCausalEncoder, margin: float) -> list[HeardSentence]:
    """Crop every sentence (segment ± margin), compute its log-mel on whole chunks; unknown words are dropped."""
    c, ids, out = encoder.config, {w: i + 1 for i, w in enumerate(vocab)}, []
    front = LogMel(c.sample_rate, c.n_mels, c.window_samples, c.hop_samples)
    for talk in manifest:
        audio = talk.samples()
        for (start, end), words in zip(talk.segments, sentence_words(talk)):
            a, b = max(0, int((start - margin) * c.sample_rate)), min(len(audio), int(math.ceil((end + margin) * c.sample_rate)))
            example = _example(encoder, front, audio[a:b], [ids[w] for w in words if w in ids])
            if example is not None:
                out.append(example)
    return out


def talk_examples(manifest: AudioManifest, vocab: list[str], encoder: ChunkCausalEncoder) -> list[HeardSentence]:
    """Every whole talk with all its words: what the stream hears, each sentence after its talk's left context
    (sentence crops never show it; on the demo's talks crop-trained hearing missed 9.5 % of the train words
    streamed, against ~0 on the crops)."""
    c, ids = encoder.config, {w: i + 1 for i, w in enumerate(vocab)}
    front = LogMel(c.sample_rate, c.n_mels, c.window_samples, c.hop_samples)
    out = [_example(encoder, front, talk.samples(), [ids[w] for s in sentence_words(talk) for w in s if w in ids]) for talk in manifest]
    return [x for x in out if x is not None]


def _example(encoder: ChunkCausalEncoder, front: LogMel, audio: np.ndarray, target: list[int]) -> HeardSentence | None:
    """Log-mel of `audio` padded with silence to whole chunks, the frames that cover it, and its word ids."""
    if not target:
        return None
    c = encoder.config
    padded = np.zeros(-(-len(audio) // c.chunk_samples) * c.chunk_samples, np.float32)
    padded[: len(audio)] = audio
    return HeardSentence(front.talk(padded), -(-len(audio) // (c.hop_samples * c.subsampling)), target)


class HearingHead(torch.nn.Module):
    """Log-mel batch → CTC logits: the `ctc` projector's own head, else a fresh linear layer over the frames."""

    def __init__(self, encoder: ChunkCausalEncoder, vocab_size: int):
        super().__init__()
        self.encoder = encoder
        own = encoder.config.projector == "ctc"
        if own and len(encoder.config.words) != vocab_size:
            raise ValueError(f"the encoder's CTC head has {len(encoder.config.words)} words, the hearing vocabulary {vocab_size}")
        self.linear = None if own else torch.nn.Linear(encoder.config.llm_hidden_size, vocab_size + 1).to(next(encoder.parameters()).device)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encoder.ctc_logits(mel) if self.linear is None else self.linear(self.encoder(mel))


def _frame_logits(encoder: ChunkCausalEncoder, head: HearingHead, batch: list[HeardSentence]) -> torch.Tensor:
    """[B, T, vocab + 1] CTC logits of a batch, its log-mel padded with silence to the longest crop."""
    c = encoder.config
    width = max(len(x.mel) for x in batch)
    silence = LogMel(c.sample_rate, c.n_mels, c.window_samples, c.hop_samples).silence
    mel = np.full((len(batch), width, c.n_mels), silence, np.float32)
    for i, x in enumerate(batch):
        mel[i, : len(x.mel)] = x.mel
    return head(torch.from_numpy(mel).to(next(encoder.parameters()).device))


def ctc_batch(encoder: ChunkCausalEncoder, head: HearingHead, batch: list[HeardSentence]) -> torch.Tensor:
    """Mean CTC loss of a batch."""
    device = next(encoder.parameters()).device
    logp = _frame_logits(encoder, head, batch).log_softmax(-1).transpose(0, 1)
    targets = torch.tensor([w for x in batch for w in x.words], device=device)
    return torch.nn.functional.ctc_loss(
        logp, targets, torch.tensor([x.n_frames for x in batch]), torch.tensor([len(x.words) for x in batch]), zero_infinity=True
    )


def word_error_rate(encoder: ChunkCausalEncoder, head: HearingHead, examples: list[HeardSentence], batch_size: int) -> float:
    """Greedy CTC decoding → word error rate (edit distance / reference words) over `examples`."""
    errors = total = 0
    with torch.no_grad():
        for s in range(0, len(examples), batch_size):
            batch = examples[s : s + batch_size]
            best = _frame_logits(encoder, head, batch).argmax(-1).cpu().numpy()
            for x, path in zip(batch, best):
                hyp = [int(t) for k, t in enumerate(path[: x.n_frames]) if t and (k == 0 or t != path[k - 1])]
                errors += _edit_distance(hyp, x.words)
                total += len(x.words)
    return errors / max(1, total)


def _edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def train_hearing(
    encoder: ChunkCausalEncoder,
    train: list[HeardSentence],
    vocab_size: int,
    cfg: HearConfig,
    dev: list[HeardSentence] | None = None,
    progress: bool = True,
    head: HearingHead | None = None,
) -> dict:
    """AdamW + warm-up/cosine on encoder, projector and the CTC head (`head`: one already trained, e.g. by the
    crops before the whole talks; else a new one); returns losses and dev WER."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    head = HearingHead(encoder, vocab_size) if head is None else head
    params = list(head.parameters())  # the encoder's, plus the fresh linear layer's if any
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    steps = math.ceil(len(train) / cfg.batch_size)
    total = steps * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda k: (
            (k + 1) / cfg.warmup_steps
            if k < cfg.warmup_steps
            else 0.5 * (1 + math.cos(math.pi * (k - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)))
        ),
    )
    history = {"train_loss": [], "dev_wer_before": word_error_rate(encoder, head, dev, cfg.batch_size) if dev else None}
    bar = tqdm(total=total, desc="sft hear", disable=not progress, dynamic_ncols=True)
    encoder.train()
    for epoch in range(cfg.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        for s in range(steps):
            loss = ctc_batch(encoder, head, [train[i] for i in order[s * cfg.batch_size : (s + 1) * cfg.batch_size]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            history["train_loss"].append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch, ctc=f"{loss.item():.3f}")
    bar.close()
    encoder.eval()
    history["dev_wer"] = word_error_rate(encoder, head, dev, cfg.batch_size) if dev else None
    return history
