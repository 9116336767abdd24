"""The HPO policy loss: clipped policy gradient with IS correction and a KL penalty to the SFT model.

Which distribution the log-probabilities come from (docs/method.md §5, §6):
rollout engines sample from softmax(logits / T) with every banned id (newline tokens, specials,
embedding-padding ids ≥ len(tokenizer)) removed, and report the log-probability of the sampled token under exactly that distribution —
top-p / top-k are *not* part of it. The learner must score tokens under the same distribution, so
both sides call `masked_logprobs(logits, tokens, banned_ids, temperature)` with the same ban list and
temperature; then π_old and π_rollout differ only by numerics/weight staleness, and the importance
weight w = π_old / π_rollout corrects exactly that.

Per assistant token t of rollout i (A_i its advantage):
    ρ = exp(log π_θ − log π_old)
    ℓ = max(−A ρ, −A clip(ρ, 1 − clip_low, 1 + clip_high))       [dual clip: ℓ ← min(ℓ, −c A) if A < 0]
    w = exp(log π_old − log π_rollout), nan/inf → 0, optionally min(w, is_truncate)
    k = k1: −u | k2: u²/2 | k3: eᵘ − u − 1, u = log π_ref − log π_θ
    v = stopgrad(exp(log π_θ − log π_rollout)) with on_policy_kl (nan/inf → 0), else 1
    token term  = w ℓ + kl_coef · v k
Token aggregation: Σ over assistant tokens of the global batch / N_tok (global assistant tokens).
Sequence aggregation: Σ over rollouts of (mean of its token terms) / N_seq (global rollouts).
"""

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from hpo_ray.config.training import AlgorithmConfig
from hpo_ray.rollout.sampling import ban_mask, policy_log_probs

# Metrics that are contributions to the global-batch value: sum them over micro-batches and ranks.
ADDITIVE_METRICS = ("loss", "pg_loss", "kl_loss", "tokens", "sequences")


def masked_logprobs(logits: Tensor, tokens: Tensor, banned_ids: Sequence[int] | Tensor | None, temperature: float) -> Tensor:
    """Log-probability of each token under softmax(logits / temperature) with `banned_ids` removed.

    `logits` is [..., V] and `tokens` [...] (already aligned: logits at position t score tokens[t]).
    Computed in float32 or wider. A banned token gets −inf. The distribution is the engines' own
    (`hpo_ray.rollout.sampling.policy_log_probs`), so engine and learner cannot drift apart.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to define log-probabilities, got {temperature}")
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(tokens.shape)} (expect [..., V] vs [...])")
    logp = policy_log_probs(logits, _ban_mask(banned_ids, logits.shape[-1], logits.device), temperature)
    return logp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)


def masked_entropy(logits: Tensor, banned_ids: Sequence[int] | Tensor | None, temperature: float) -> Tensor:
    """Per-position entropy (nats) of the same masked, tempered distribution as `masked_logprobs`."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = policy_log_probs(logits, _ban_mask(banned_ids, logits.shape[-1], logits.device), temperature)
    return torch.special.entr(logp.exp()).sum(-1)


def _ban_mask(banned_ids: Sequence[int] | Tensor | None, vocab: int, device: torch.device) -> Tensor | None:
    if banned_ids is None or len(banned_ids) == 0:
        return None
    ids = torch.as_tensor(banned_ids, dtype=torch.long).flatten()
    bad = ids[(ids < 0) | (ids >= vocab)]
    if bad.numel():
        raise ValueError(f"banned_ids contains {bad[0].item()}, outside the vocabulary [0, {vocab})")
    return ban_mask(vocab, ids.tolist(), device)


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    rollout_logprobs: Tensor | None,
    ref_logprobs: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    normaliser: float | Tensor,
    algo: AlgorithmConfig,
    entropy: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """This micro-batch's share of the global HPO loss, and its metrics.

    All [B, T] tensors hold the log-probability of the *taken* token at each position (see
    `masked_logprobs`); `advantages` is [B] (one per rollout, broadcast to its tokens) or [B, T];
    `mask` is 1 on assistant tokens. `normaliser` is the number of assistant tokens (token
    aggregation) or rollouts (sequence aggregation) in the whole global batch — all micro-batches on
    all ranks — so summing the returned losses over them gives the global loss. A data-parallel
    gradient all-reduce that *averages* over R ranks (DeepSpeed, DDP) must be undone by calling
    backward on `loss * R`. `rollout_logprobs` may be None only without IS correction and on-policy
    KL; `ref_logprobs` only when `algo.kl_coef == 0`. `entropy` ([B, T], optional) is only logged.
    Metrics: `loss`, `pg_loss`, `kl_loss`, `tokens`, `sequences` are additive (see `merge_metrics`).
    """
    m = _check_inputs(logprobs, old_logprobs, rollout_logprobs, ref_logprobs, advantages, mask, entropy, algo)
    if not isinstance(normaliser, Tensor) and not normaliser > 0:
        raise ValueError(
            f"normaliser must be > 0 (global number of {'tokens' if algo.loss_agg == 'token' else 'rollouts'}), got {normaliser}"
        )
    dt = torch.promote_types(logprobs.dtype, torch.float32)
    zero = torch.zeros((), dtype=dt, device=logprobs.device)

    def masked(x: Tensor) -> Tensor:  # where() (not ×mask) so −inf/nan at padding cannot reach values or grads
        return torch.where(m, x.to(dt), zero)

    lp, old = masked(logprobs), masked(old_logprobs).detach()
    adv = advantages.to(dt)
    adv = masked(adv.unsqueeze(-1).expand_as(lp) if adv.dim() == 1 else adv).detach()

    ratio = torch.exp(lp - old)
    surr = -adv * ratio
    surr_clip = -adv * ratio.clamp(1.0 - algo.clip_low, 1.0 + algo.clip_high)
    pg = torch.maximum(surr, surr_clip)
    clipped = m & (surr_clip > surr)
    dual_clipped = torch.zeros_like(m)
    if algo.dual_clip is not None:
        cap = -algo.dual_clip * adv
        dual_clipped = m & (adv < 0) & (pg > cap)
        pg = torch.where(adv < 0, torch.minimum(pg, cap), pg)

    rollout = masked(rollout_logprobs).detach() if rollout_logprobs is not None else None
    is_weight = torch.ones_like(lp)
    truncated = torch.zeros_like(m)
    if algo.is_correction:
        is_weight = _finite_or_zero(torch.exp(old - rollout))
        if algo.is_truncate is not None:
            truncated = m & (is_weight > algo.is_truncate)
            is_weight = is_weight.clamp(max=algo.is_truncate)
    pg_tok = is_weight * pg

    kl_est = torch.zeros_like(lp)
    kl_tok = torch.zeros_like(lp)
    if algo.kl_coef > 0:
        u = masked(ref_logprobs).detach() - lp
        if algo.kl_estimator == "k1":
            kl_est = -u
        elif algo.kl_estimator == "k2":
            kl_est = 0.5 * u * u
        else:
            kl_est = torch.exp(u) - u - 1.0
        v = _finite_or_zero(torch.exp(lp.detach() - rollout)) if algo.on_policy_kl else 1.0
        kl_tok = v * kl_est

    n_tok = m.sum(-1)
    if algo.loss_agg == "token":
        pg_sum, kl_sum = masked(pg_tok).sum(), masked(kl_tok).sum()
    else:
        per_seq = n_tok.clamp(min=1).to(dt)
        pg_sum = (masked(pg_tok).sum(-1) / per_seq).sum()
        kl_sum = (masked(kl_tok).sum(-1) / per_seq).sum()
    pg_loss = pg_sum / normaliser
    kl_loss = algo.kl_coef * kl_sum / normaliser
    loss = pg_loss + kl_loss

    metrics = _metrics(
        m, loss, pg_loss, kl_loss, kl_est, ratio, clipped, dual_clipped, is_weight, truncated, old, rollout, entropy, n_tok, algo
    )
    return loss, metrics


def merge_metrics(parts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Combine micro-batch (or per-rank) metrics: additive ones summed, `*_max`/`*_min` reduced,
    the rest averaged weighted by assistant tokens."""
    if not parts:
        return {}
    total_tokens = sum(p["tokens"] for p in parts)
    out: dict[str, float] = {}
    for key in {k for p in parts for k in p}:
        values = [(p[key], p["tokens"]) for p in parts if key in p]
        if key in ADDITIVE_METRICS:
            out[key] = float(sum(v for v, _ in values))
        elif key.endswith("_max"):
            out[key] = float(max(v for v, _ in values))
        elif key.endswith("_min"):
            out[key] = float(min(v for v, _ in values))
        else:
            weight = sum(n for _, n in values) or total_tokens or 1
            out[key] = float(sum(v * n for v, n in values) / weight)
    return out


def _finite_or_zero(x: Tensor) -> Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _check_inputs(
    logprobs: Tensor,
    old_logprobs: Tensor,
    rollout_logprobs: Tensor | None,
    ref_logprobs: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    entropy: Tensor | None,
    algo: AlgorithmConfig,
) -> Tensor:
    """Validate shapes/requirements early; return the boolean assistant-token mask."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(mask.shape)}")
    shape = mask.shape
    named = {
        "logprobs": logprobs,
        "old_logprobs": old_logprobs,
        "rollout_logprobs": rollout_logprobs,
        "ref_logprobs": ref_logprobs,
        "entropy": entropy,
    }
    for name, x in named.items():
        if x is not None and x.shape != shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)} like mask")
    if advantages.shape not in (shape, shape[:1]):
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}, expected [{shape[0]}] or {tuple(shape)}")
    if rollout_logprobs is None and (algo.is_correction or (algo.on_policy_kl and algo.kl_coef > 0)):
        which = "algorithm.is_correction" if algo.is_correction else "algorithm.on_policy_kl"
        raise ValueError(f"rollout_logprobs are required with {which}=true")
    if ref_logprobs is None and algo.kl_coef > 0:
        raise ValueError(f"ref_logprobs are required with algorithm.kl_coef={algo.kl_coef} > 0")
    m = mask.bool()
    checked = [logprobs, old_logprobs] + ([ref_logprobs] if algo.kl_coef > 0 else [])
    finite = torch.stack([torch.isfinite(x.detach()) | ~m for x in checked])
    if not bool(finite.all()):
        which, b, t = (int(i) for i in (~finite).nonzero()[0])
        name = ("logprobs", "old_logprobs", "ref_logprobs")[which]
        raise ValueError(
            f"{name}[{b}, {t}] is not finite at an assistant token: was a banned token taken? "
            "learner and engine must use the same banned ids and temperature"
        )
    return m


def _metrics(
    m: Tensor,
    loss: Tensor,
    pg_loss: Tensor,
    kl_loss: Tensor,
    kl_est: Tensor,
    ratio: Tensor,
    clipped: Tensor,
    dual_clipped: Tensor,
    is_weight: Tensor,
    truncated: Tensor,
    old: Tensor,
    rollout: Tensor | None,
    entropy: Tensor | None,
    n_tok: Tensor,
    algo: AlgorithmConfig,
) -> dict[str, float]:
    """All metrics of one micro-batch, pulled to the host in one transfer."""
    with torch.no_grad():
        n = m.sum().clamp(min=1)

        def mean(x: Tensor) -> Tensor:
            return torch.where(m, x.to(loss.dtype), 0.0).sum() / n

        big = torch.finfo(loss.dtype).max
        stats: dict[str, Tensor] = {
            "loss": loss.detach(),
            "pg_loss": pg_loss.detach(),
            "kl_loss": kl_loss.detach(),
            "kl": mean(kl_est),
            "ratio_mean": mean(ratio),
            "ratio_max": torch.where(m, ratio, -big).max() if m.any() else ratio.new_ones(()),
            "clip_fraction": mean(clipped.to(loss.dtype)),
            "tokens": m.sum().to(loss.dtype),
            "sequences": (n_tok > 0).sum().to(loss.dtype),
        }
        if algo.dual_clip is not None:
            stats["dual_clip_fraction"] = mean(dual_clipped.to(loss.dtype))
        if algo.is_correction:
            stats["is_weight_mean"] = mean(is_weight)
            stats["is_weight_max"] = torch.where(m, is_weight, -big).max()
            stats["is_weight_min"] = torch.where(m, is_weight, big).min()
            if algo.is_truncate is not None:
                stats["is_truncated_fraction"] = mean(truncated.to(loss.dtype))
        if rollout is not None:
            gap = (old - rollout).abs()
            ok = m & torch.isfinite(gap)
            k = ok.sum().clamp(min=1)
            stats["logprob_mismatch"] = torch.where(ok, gap, 0.0).sum() / k
            stats["logprob_mismatch_exp"] = torch.where(ok, torch.exp(gap), 0.0).sum() / k
            stats["rollout_nonfinite_fraction"] = mean((~torch.isfinite(gap)).to(loss.dtype))
        if entropy is not None:
            stats["entropy"] = mean(entropy.detach())
        keys = list(stats)
        values = torch.stack([stats[k].to(loss.dtype).reshape(()) for k in keys]).tolist()
    return dict(zip(keys, values))
