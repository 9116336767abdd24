"""The HPO policy loss against a float64 hand computation with explicit loops over tokens."""

import math

import pytest
import torch

from hpo_ray.config.training import AlgorithmConfig
from hpo_ray.learner.loss import masked_entropy, masked_logprobs, merge_metrics, policy_loss

D = torch.float64


def reference_loss(lp, old, roll, ref, adv, mask, normaliser, algo, lp_frozen=None):
    """Float64 loops. `lp_frozen` is what the stop-gradient weight v sees (defaults to lp)."""
    lp_frozen = lp if lp_frozen is None else lp_frozen
    total_pg = total_kl = 0.0
    for i in range(len(mask)):
        seq_pg = seq_kl = 0.0
        n = 0
        for t in range(len(mask[i])):
            if not mask[i][t]:
                continue
            n += 1
            a = adv[i]
            rho = math.exp(lp[i][t] - old[i][t])
            s1 = -a * rho
            s2 = -a * min(max(rho, 1 - algo.clip_low), 1 + algo.clip_high)
            ell = max(s1, s2)
            if algo.dual_clip is not None and a < 0:
                ell = min(ell, -algo.dual_clip * a)
            w = 1.0
            if algo.is_correction:
                try:
                    w = math.exp(old[i][t] - roll[i][t])
                except OverflowError:
                    w = math.inf
                if not math.isfinite(w):
                    w = 0.0
                if algo.is_truncate is not None:
                    w = min(w, algo.is_truncate)
            seq_pg += w * ell
            if algo.kl_coef > 0:
                u = ref[i][t] - lp[i][t]
                k = {"k1": -u, "k2": 0.5 * u * u, "k3": math.exp(u) - u - 1}[algo.kl_estimator]
                v = math.exp(lp_frozen[i][t] - roll[i][t]) if algo.on_policy_kl else 1.0
                seq_kl += v * k
        if algo.loss_agg == "token":
            total_pg += seq_pg
            total_kl += seq_kl
        elif n:
            total_pg += seq_pg / n
            total_kl += seq_kl / n
    return (total_pg + algo.kl_coef * total_kl) / normaliser


def make_batch(seed: int, b: int = 5, t: int = 9):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g, dtype=D) * 3 - 0.05
    lp = old + torch.randn(b, t, generator=g, dtype=D) * 0.4  # ratios spread around 1 so clipping triggers
    roll = old + torch.randn(b, t, generator=g, dtype=D) * 0.5
    ref = old + torch.randn(b, t, generator=g, dtype=D) * 0.3
    adv = torch.randn(b, generator=g, dtype=D)
    adv[0], adv[1] = -1.5, 1.2  # both signs always present
    lp[0, :4] = old[0, :4] + 2.0  # ρ ≈ 7.4 with a negative advantage: the dual-clip regime
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[:, 0] = False  # a prompt position
    mask[:2, 1:5] = True
    mask[-1] = False  # a rollout with no assistant token (sequence aggregation must skip it)
    mask[-1, 2] = True
    return lp, old, roll, ref, adv, mask


FEATURES = {
    "default_k3_on_policy_token": {},
    "clip_asymmetric": {"clip_low": 0.1, "clip_high": 0.35},
    "dual_clip": {"dual_clip": 3.0},
    "is_truncated": {"is_truncate": 1.1},
    "no_is_correction": {"is_correction": False},
    "k1": {"kl_estimator": "k1"},
    "k2": {"kl_estimator": "k2"},
    "k3_off_policy_weights": {"on_policy_kl": False},
    "sequence_level": {"loss_agg": "sequence"},
    "strong_kl": {"kl_coef": 0.5, "kl_estimator": "k2", "on_policy_kl": False},
    "no_kl": {"kl_coef": 0.0},
}


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_loss_matches_float64_reference(name):
    algo = AlgorithmConfig(**FEATURES[name])
    lp, old, roll, ref, adv, mask = make_batch(seed=len(name))
    normaliser = int(mask.sum()) if algo.loss_agg == "token" else int(mask.any(-1).sum())
    loss, metrics = policy_loss(lp, old, roll, ref, adv, mask, normaliser, algo)
    expected = reference_loss(lp.tolist(), old.tolist(), roll.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), normaliser, algo)
    assert loss.dtype == D
    assert loss.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert metrics["loss"] == pytest.approx(metrics["pg_loss"] + metrics["kl_loss"], rel=1e-12, abs=1e-14)
    assert metrics["tokens"] == int(mask.sum())


def test_features_are_active_in_the_reference_batch():
    """The parametrised comparison above only proves something if each feature changes the loss."""
    lp, old, roll, ref, adv, mask = make_batch(seed=3)
    n = int(mask.sum())

    def loss(**kw):
        return policy_loss(lp, old, roll, ref, adv, mask, n, AlgorithmConfig(**kw))

    base, m = loss()
    assert 0 < m["clip_fraction"] < 1
    for kw in (
        {"clip_low": 0.1, "clip_high": 0.35},
        {"dual_clip": 3.0},
        {"is_truncate": 1.1},
        {"is_correction": False},
        {"kl_estimator": "k1"},
        {"kl_estimator": "k2"},
        {"on_policy_kl": False},
        {"loss_agg": "sequence"},
    ):
        assert loss(**kw)[0].item() != pytest.approx(base.item(), rel=1e-9), kw
    assert loss(dual_clip=3.0)[1]["dual_clip_fraction"] > 0
    assert loss(is_truncate=1.1)[1]["is_truncated_fraction"] > 0


def test_asymmetric_clip_uses_low_bound_for_negative_and_high_bound_for_positive_advantage():
    mask = torch.ones(2, 1, dtype=torch.bool)
    old = torch.zeros(2, 1, dtype=D)
    lp = torch.tensor([[math.log(1.25)], [math.log(0.85)]], dtype=D)
    adv = torch.tensor([1.0, -1.0], dtype=D)

    def per_token(clip_low, clip_high):
        algo = AlgorithmConfig(clip_low=clip_low, clip_high=clip_high, is_correction=False, kl_coef=0.0)
        return [
            policy_loss(lp[i : i + 1], old[i : i + 1], None, None, adv[i : i + 1], mask[i : i + 1], 1, algo)[0].item() for i in range(2)
        ]

    # A > 0, ρ = 1.25: capped at 1 + clip_high; A < 0, ρ = 0.85: held at 1 − clip_low.
    assert per_token(0.1, 0.2) == pytest.approx([-1.2, 0.9])
    assert per_token(0.2, 0.3) == pytest.approx([-1.25, 0.85])


def test_dual_clip_caps_the_loss_of_a_negative_advantage_with_a_huge_ratio():
    mask = torch.ones(1, 1, dtype=torch.bool)
    lp, old = torch.tensor([[math.log(10.0)]], dtype=D), torch.zeros(1, 1, dtype=D)
    adv = torch.tensor([-1.0], dtype=D)
    plain = AlgorithmConfig(is_correction=False, kl_coef=0.0)
    dual = AlgorithmConfig(is_correction=False, kl_coef=0.0, dual_clip=3.0)
    assert policy_loss(lp, old, None, None, adv, mask, 1, plain)[0].item() == pytest.approx(10.0)
    loss, m = policy_loss(lp, old, None, None, adv, mask, 1, dual)
    assert loss.item() == pytest.approx(3.0)
    assert m["dual_clip_fraction"] == 1.0


def test_is_weight_zeroes_nan_and_inf_and_truncates():
    mask = torch.ones(1, 4, dtype=torch.bool)
    old = torch.full((1, 4), -1.0, dtype=D)
    lp = old.clone()
    roll = torch.tensor([[float("nan"), float("-inf"), -1.0 - math.log(5.0), -1.0 + math.log(2.0)]], dtype=D)
    adv = torch.tensor([-1.0], dtype=D)  # ℓ = −A ρ = 1 per token, so the loss is Σ w / 4
    algo = AlgorithmConfig(is_truncate=3.0, kl_coef=0.0)
    loss, m = policy_loss(lp, old, roll, None, adv, mask, 4, algo)
    assert loss.item() == pytest.approx((0 + 0 + 3.0 + 0.5) / 4)
    assert (m["is_weight_max"], m["is_weight_min"]) == pytest.approx((3.0, 0.0))
    assert m["is_truncated_fraction"] == 0.25
    assert m["rollout_nonfinite_fraction"] == 0.5
    assert m["logprob_mismatch"] == pytest.approx((math.log(5.0) + math.log(2.0)) / 2)
    assert m["logprob_mismatch_exp"] == pytest.approx((5.0 + 2.0) / 2)


def test_kl_estimators_match_closed_forms():
    mask = torch.ones(1, 3, dtype=torch.bool)
    lp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=D)
    ref = torch.tensor([[-1.5, -1.0, -0.5]], dtype=D)
    u = ref - lp
    expected = {"k1": -u, "k2": 0.5 * u**2, "k3": u.exp() - u - 1}
    for name, k in expected.items():
        algo = AlgorithmConfig(is_correction=False, on_policy_kl=False, kl_coef=1.0, kl_estimator=name)
        loss, m = policy_loss(lp, lp.clone(), None, ref, torch.zeros(1, dtype=D), mask, 3, algo)
        assert loss.item() == pytest.approx(k.mean().item(), rel=1e-12)
        assert m["kl"] == pytest.approx(k.mean().item(), rel=1e-12)


@pytest.mark.parametrize("overrides", [{}, {"loss_agg": "sequence", "dual_clip": 2.0, "is_truncate": 1.5}])
def test_gradient_matches_finite_differences_with_stop_gradient_weights(overrides):
    """d loss / d log π_θ: v = exp(log π_θ − log π_rollout) and w are constants for the gradient."""
    algo = AlgorithmConfig(kl_coef=0.3, **overrides)
    lp, old, roll, ref, adv, mask = make_batch(seed=11)
    normaliser = int(mask.sum()) if algo.loss_agg == "token" else int(mask.any(-1).sum())
    x = lp.clone().requires_grad_(True)
    policy_loss(x, old, roll, ref, adv, mask, normaliser, algo)[0].backward()
    frozen = lp.tolist()
    args = (old.tolist(), roll.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), normaliser, algo)
    h = 1e-6
    for i, t in [(0, 1), (1, 3), (2, 4), (3, 6), (4, 0)]:
        plus, minus = lp.clone(), lp.clone()
        plus[i, t] += h
        minus[i, t] -= h
        numeric = (reference_loss(plus.tolist(), *args, lp_frozen=frozen) - reference_loss(minus.tolist(), *args, lp_frozen=frozen)) / (
            2 * h
        )
        assert x.grad[i, t].item() == pytest.approx(numeric, rel=1e-6, abs=1e-9), (i, t)
    assert x.grad[~mask].abs().max().item() == 0.0


@pytest.mark.parametrize("agg", ["token", "sequence"])
def test_two_micro_batches_with_global_normaliser_equal_one_batch(agg):
    algo = AlgorithmConfig(loss_agg=agg, kl_coef=0.1, dual_clip=3.0)
    lp, old, roll, ref, adv, mask = make_batch(seed=5, b=6, t=11)
    normaliser = int(mask.sum()) if agg == "token" else int(mask.any(-1).sum())

    whole = lp.clone().requires_grad_(True)
    loss_whole, m_whole = policy_loss(whole, old, roll, ref, adv, mask, normaliser, algo)
    loss_whole.backward()

    parts = lp.clone().requires_grad_(True)
    total, metrics = 0.0, []
    for rows in (slice(0, 2), slice(2, 6)):  # uneven token counts per micro-batch
        loss, m = policy_loss(parts[rows], old[rows], roll[rows], ref[rows], adv[rows], mask[rows], normaliser, algo)
        loss.backward()
        total += loss.item()
        metrics.append(m)
    assert total == pytest.approx(loss_whole.item(), rel=1e-12)
    assert torch.allclose(parts.grad, whole.grad, rtol=1e-12, atol=1e-15)
    merged = merge_metrics(metrics)
    for key in (
        "loss",
        "pg_loss",
        "kl_loss",
        "kl",
        "clip_fraction",
        "is_weight_mean",
        "is_weight_max",
        "is_weight_min",
        "logprob_mismatch",
        "tokens",
        "sequences",
        "ratio_max",
    ):
        assert merged[key] == pytest.approx(m_whole[key], rel=1e-12), key
    # Normalising each micro-batch by its own count instead would not give the one-batch loss.
    local = sum(
        policy_loss(
            lp[r], old[r], roll[r], ref[r], adv[r], mask[r], int(mask[r].sum()) if agg == "token" else int(mask[r].any(-1).sum()), algo
        )[0].item()
        for r in (slice(0, 2), slice(2, 6))
    )
    assert local != pytest.approx(loss_whole.item(), rel=1e-6)


def test_per_token_advantages_equal_broadcast_rollout_advantages():
    algo = AlgorithmConfig()
    lp, old, roll, ref, adv, mask = make_batch(seed=2)
    n = int(mask.sum())
    a = policy_loss(lp, old, roll, ref, adv, mask, n, algo)[0]
    b = policy_loss(lp, old, roll, ref, adv[:, None].expand_as(lp).clone(), mask, n, algo)[0]
    assert a.item() == b.item()


def test_non_finite_values_outside_the_mask_do_not_reach_loss_or_gradient():
    algo = AlgorithmConfig()
    lp, old, roll, ref, adv, mask = make_batch(seed=8)
    n = int(mask.sum())
    clean = policy_loss(lp, old, roll, ref, adv, mask, n, algo)[0].item()
    dirty = [x.clone() for x in (lp, old, roll, ref)]
    for x, bad in zip(dirty, (float("-inf"), float("nan"), float("inf"), float("-inf"))):
        x[~mask] = bad
    x = dirty[0].requires_grad_(True)
    loss, m = policy_loss(x, *dirty[1:], adv, mask, n, algo)
    loss.backward()
    assert loss.item() == pytest.approx(clean, rel=1e-12)
    assert torch.isfinite(x.grad).all()
    assert all(math.isfinite(v) for v in m.values())


def test_banned_assistant_token_is_an_error():
    algo = AlgorithmConfig()
    lp, old, roll, ref, adv, mask = make_batch(seed=4)
    lp[1, 2] = float("-inf")
    with pytest.raises(ValueError, match=r"logprobs\[1, 2\].*banned"):
        policy_loss(lp, old, roll, ref, adv, mask, int(mask.sum()), algo)


def test_missing_inputs_and_bad_shapes_name_the_problem():
    lp, old, roll, ref, adv, mask = make_batch(seed=4)
    with pytest.raises(ValueError, match="algorithm.is_correction"):
        policy_loss(lp, old, None, ref, adv, mask, 10, AlgorithmConfig())
    with pytest.raises(ValueError, match="algorithm.kl_coef"):
        policy_loss(lp, old, roll, None, adv, mask, 10, AlgorithmConfig())
    with pytest.raises(ValueError, match="old_logprobs has shape"):
        policy_loss(lp, old[:, :-1], roll, ref, adv, mask, 10, AlgorithmConfig())
    with pytest.raises(ValueError, match="normaliser"):
        policy_loss(lp, old, roll, ref, adv, mask, 0, AlgorithmConfig())


def test_entropy_and_mismatch_metrics_are_assistant_token_means():
    lp, old, roll, ref, adv, mask = make_batch(seed=6)
    ent = torch.rand(lp.shape, dtype=D)
    _, m = policy_loss(lp, old, roll, ref, adv, mask, int(mask.sum()), AlgorithmConfig(), entropy=ent)
    assert m["entropy"] == pytest.approx(ent[mask].mean().item(), rel=1e-12)
    assert m["logprob_mismatch"] == pytest.approx((old - roll)[mask].abs().mean().item(), rel=1e-12)
    assert m["logprob_mismatch_exp"] == pytest.approx((old - roll)[mask].abs().exp().mean().item(), rel=1e-12)
    assert m["sequences"] == int(mask.any(-1).sum())


def test_float32_inputs_stay_float32_and_match_float64():
    algo = AlgorithmConfig(dual_clip=3.0)
    lp, old, roll, ref, adv, mask = make_batch(seed=9)
    n = int(mask.sum())
    l64 = policy_loss(lp, old, roll, ref, adv, mask, n, algo)[0]
    l32 = policy_loss(*(x.float() for x in (lp, old, roll, ref, adv)), mask, n, algo)[0]
    assert l32.dtype == torch.float32
    assert l32.item() == pytest.approx(l64.item(), rel=1e-5)


def test_masked_logprobs_is_the_log_of_the_renormalised_tempered_distribution():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=g) * 3
    tokens = torch.tensor([[0, 2, 6], [5, 3, 1]])
    banned, temperature = [4, 1], 0.7
    out = masked_logprobs(logits, tokens, banned, temperature)
    for b in range(2):
        for t in range(3):
            z = sum(math.exp(logits[b, t, k].item() / temperature) for k in range(7) if k not in banned)
            tok = tokens[b, t].item()
            want = -math.inf if tok in banned else logits[b, t, tok].item() / temperature - math.log(z)
            assert out[b, t].item() == pytest.approx(want, rel=1e-5)
    # Every allowed token's probability sums to one: it is the distribution the engine samples from.
    allowed = torch.tensor([k for k in range(7) if k not in banned])
    full = masked_logprobs(logits[..., None, :].expand(2, 3, 5, 7), allowed.expand(2, 3, 5), banned, temperature)
    assert torch.allclose(full.exp().sum(-1), torch.ones(2, 3), atol=1e-6)


def test_masked_logprobs_rejects_bad_temperature_and_ids():
    logits, tokens = torch.zeros(1, 2, 5), torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        masked_logprobs(logits, tokens, [], 0.0)
    with pytest.raises(ValueError, match="banned_ids contains 5"):
        masked_logprobs(logits, tokens, [5], 1.0)
    with pytest.raises(ValueError, match="do not match"):
        masked_logprobs(logits, tokens[:, :1], None, 1.0)


def test_masked_entropy_matches_hand_computation():
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    banned, temperature = [2], 2.0
    p = [math.exp(v / temperature) if k not in banned else 0.0 for k, v in enumerate(logits[0].tolist())]
    z = sum(p)
    want = -sum(q / z * math.log(q / z) for q in p if q > 0)
    assert masked_entropy(logits, banned, temperature)[0].item() == pytest.approx(want, rel=1e-6)


def test_masked_logprobs_of_a_real_tiny_model_train_the_same_distribution_as_sampled():
    """With a tiny HF model: sampling frequencies from the masked distribution match exp(masked_logprobs)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=12,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
        )
    ).eval()
    ids = torch.tensor([[1, 5, 3]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, -1] * 20  # sharpen so the ban matters
    banned, temperature = [int(logits.argmax())], 1.3
    probs = masked_logprobs(logits.expand(12, -1), torch.arange(12)[:, None].squeeze(-1), banned, temperature).exp()
    x = (logits[0] / temperature).index_fill(0, torch.tensor(banned), float("-inf"))
    draws = torch.multinomial(torch.softmax(x, -1), 20000, replacement=True, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(draws, minlength=12).double() / 20000
    assert freq[banned[0]] == 0 and probs[banned[0]] == 0
    assert torch.allclose(freq, probs.double(), atol=0.015)
