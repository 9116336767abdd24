"""Token sampling for assistant turns: bans, temperature, top-p / top-k, and the logprobs reported.

The reported logprob of a sampled token is taken from `policy_log_probs`: temperature-scaled
logits with banned tokens removed. The learner computes its logprobs with the same function, so
the IS weight compares like with like (docs/method.md §6). Top-p / top-k only narrow *which* token is
drawn; they are off by default and their bias is documented rather than hidden.
"""

import torch

from hpo_ray.config import SamplingConfig
from hpo_ray.dialogue import DialogueLayout


def ban_mask(vocab_size: int, banned_ids: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean [vocab] mask, True where a token may never be sampled."""
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    if banned_ids:
        mask[torch.tensor(banned_ids, device=device)] = True
    return mask


def policy_ban_mask(layout: DialogueLayout, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ban mask of a model whose logits span `vocab_size` ids (padding rows included), shared by
    the torch engine and the learner so both see the same distribution."""
    return ban_mask(vocab_size, layout.banned_token_ids(vocab_size), device)


def policy_log_probs(logits: torch.Tensor, banned: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Log-softmax of the policy's distribution: logits / T with banned tokens at -inf (float32 or wider)."""
    scaled = logits.to(torch.promote_types(logits.dtype, torch.float32)) / (temperature if temperature > 0 else 1.0)
    if banned is not None:
        scaled = scaled.masked_fill(banned[: scaled.shape[-1]], float("-inf"))
    return torch.log_softmax(scaled, dim=-1)


def sample_tokens(logprobs: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Draw one token per row of [B, V] policy logprobs (greedy, or top-k / top-p filtered)."""
    if cfg.greedy or cfg.temperature == 0:
        return logprobs.argmax(dim=-1)
    filtered = logprobs
    if cfg.top_k and cfg.top_k < logprobs.shape[-1]:
        kth = torch.topk(filtered, cfg.top_k, dim=-1).values[..., -1:]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_lp, order = torch.sort(filtered, dim=-1, descending=True)
        cum = torch.cumsum(sorted_lp.exp(), dim=-1)
        drop_sorted = (cum - sorted_lp.exp()) >= cfg.top_p  # keep the smallest prefix reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        filtered = filtered.masked_fill(drop, float("-inf"))
    probs = torch.softmax(filtered, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
