"""Embedding segmenter (LCME-style): monotone block alignment of hypothesis and reference sentences.

Windows of up to `embedding_max_block` consecutive sentences on each side are embedded with a local
Hugging Face encoder; a dynamic program picks the monotone sequence of blocks (a references ↔ b
hypothesis sentences, or one sentence left unaligned at `embedding_skip_cost`) with the least total
cost (1 − cos)·(a + b)/2. A block with several references is divided among them by exact mWER;
a hypothesis sentence aligned to nothing stays with the nearest aligned reference before it (after
it at the start), so extra output still costs quality, as with mWER.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpo_ray.config import RewardConfig
from hpo_ray.devices import resolve_device

from .mwer import mwer_segment
from .units import EMPTY, Units

CACHE_LIMIT = 20_000  # embedded texts kept (references repeat across the rollouts of a group)


class SentenceEncoder:
    """L2-normalised sentence embeddings from a local encoder (CLS or mean pooling)."""

    def __init__(self, path: Path, pooling: str, batch_size: int, device: str):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if not Path(path).is_dir():
            raise FileNotFoundError(f"reward.embedding_model_path: {path} is not a local model directory")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.pooling = pooling
        self.batch_size = batch_size
        self.device = device
        self.max_length = min(int(getattr(self.model.config, "max_position_embeddings", 512)), 8192)
        self._torch = torch
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-norm float32 row per text (repeated texts are embedded once)."""
        todo = sorted({t for t in texts if t not in self._cache})
        if len(self._cache) + len(todo) > CACHE_LIMIT:
            self._cache.clear()
        torch = self._torch
        for i in range(0, len(todo), self.batch_size):
            batch = todo[i : i + self.batch_size]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state.float()
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                weights = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            for text, row in zip(batch, pooled.cpu().numpy()):
                self._cache[text] = row
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)


def align_blocks(costs: dict[tuple[int, int], np.ndarray], n_refs: int, n_hyp: int, skip_cost: float) -> list[tuple[int, int, int, int]]:
    """Least-cost monotone alignment as blocks (ref start, a, hyp start, b); a or b is 0 for a skip.

    `costs[(a, b)][i, j]` is the cost of aligning refs[i:i+a] with hyp[j:j+b].
    """
    D = np.full((n_refs + 1, n_hyp + 1), np.inf)
    steps = np.arange(n_hyp + 1) * skip_cost
    for i in range(n_refs + 1):
        if i == 0:
            row = np.full(n_hyp + 1, np.inf)
            row[0] = 0.0
        else:
            row = D[i - 1] + skip_cost  # reference i−1 left unaligned
            for (a, b), c in costs.items():
                if a <= i and b <= n_hyp:
                    row[b:] = np.minimum(row[b:], D[i - a, : n_hyp + 1 - b] + c[i - a])
        D[i] = np.minimum.accumulate(row - steps) + steps  # hypothesis skips along the row
    blocks: list[tuple[int, int, int, int]] = []
    i, j = n_refs, n_hyp
    while i or j:
        here = D[i, j]
        for (a, b), c in sorted(costs.items()):
            if a <= i and b <= j and np.isclose(D[i - a, j - b] + c[i - a, j - b], here, rtol=0, atol=1e-9):
                blocks.append((i - a, a, j - b, b))
                i, j = i - a, j - b
                break
        else:
            if i and (j == 0 or np.isclose(D[i - 1, j] + skip_cost, here, rtol=0, atol=1e-9)):
                blocks.append((i - 1, 1, j, 0))
                i -= 1
            else:
                blocks.append((i, 0, j - 1, 1))
                j -= 1
    return blocks[::-1]


class EmbeddingSegmenter:
    """Segments by sentence-embedding alignment; see the module docstring."""

    def __init__(self, encoder: SentenceEncoder, max_block: int, skip_cost: float):
        self.encoder = encoder
        self.max_block = max_block
        self.skip_cost = skip_cost

    @classmethod
    def from_config(cls, cfg: RewardConfig) -> "EmbeddingSegmenter":
        """Load the encoder at `reward.embedding_model_path` on `reward.device`."""
        if cfg.embedding_model_path is None:
            raise ValueError("reward.embedding_model_path is required for reward.segmenter=embedding")
        encoder = SentenceEncoder(
            cfg.embedding_model_path, cfg.embedding_pooling, cfg.embedding_batch_size, resolve_device(cfg.device, "reward.device")
        )
        return cls(encoder, cfg.embedding_max_block, cfg.embedding_skip_cost)

    def _windows(self, sentences: Sequence[Units]) -> dict[int, np.ndarray]:
        """Embeddings of every window of 1..max_block consecutive sentences, keyed by window size."""
        out: dict[int, np.ndarray] = {}
        for size in range(1, min(self.max_block, len(sentences)) + 1):
            texts = [Units.concat(sentences[s : s + size]).text() for s in range(len(sentences) - size + 1)]
            out[size] = self.encoder.encode(texts)
        return out

    def segment(self, sentences: Sequence[Units], refs: Sequence[Units]) -> list[Units]:
        """Align blocks by embeddings, then give each reference its units (see the module docstring)."""
        segments = [EMPTY] * len(refs)
        if not sentences:
            return segments
        ref_win, hyp_win = self._windows(refs), self._windows(sentences)
        costs = {(a, b): (1.0 - ref_win[a] @ hyp_win[b].T) * (a + b) / 2 for a in ref_win for b in hyp_win}
        pending: list[Units] = []
        last_aligned: int | None = None
        for i, a, j, b in align_blocks(costs, len(refs), len(sentences), self.skip_cost):
            if b == 0:
                continue
            if a == 0:
                if last_aligned is None:
                    pending.append(sentences[j])
                else:
                    segments[last_aligned] = Units.concat([segments[last_aligned], sentences[j]])
                continue
            hyp = Units.concat([*pending, *sentences[j : j + b]])
            pending = []
            bounds, _ = mwer_segment(hyp.tokens, [r.tokens for r in refs[i : i + a]])
            for k in range(a):
                segments[i + k] = hyp[bounds[k] : bounds[k + 1]]
            last_aligned = i + a - 1
        return segments
