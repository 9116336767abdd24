"""Generated DeepSpeed configs initialise real engines (gloo, CPU) and train like plain torch AdamW."""

import math
import multiprocessing as mp

import pytest
import torch

from hpo_ray.config.base import ConfigError
from hpo_ray.config.training import AlgorithmConfig, LearnerConfig
from hpo_ray.devices import resolve_device
from hpo_ray.learner.distributed import free_port, init_cpu_distributed
from hpo_ray.learner.ds_config import deepspeed_config, make_optimizer, resolve_dtype
from hpo_ray.learner.finite import NonFiniteTrainingError, guarded_step, poisoned
from hpo_ray.learner.loss import masked_logprobs, policy_loss

VOCAB, BANNED, TEMPERATURE = 11, [7], 1.0
LEARNER = {"optimizer": {"lr": 5e-2, "grad_clip": 0.5}}  # clipping is active with these gradients
# Without clipping and with a large eps, AdamW's update depends on the gradient's scale, so a wrong
# normaliser or a missing ×world shows up in the parameters.
SCALE_SENSITIVE = {"optimizer": {"lr": 5e-2, "eps": 1.0, "grad_clip": None}}


class TinyPolicy(torch.nn.Module):
    """A bigram policy: token → logits over the next token."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 16)
        self.head = torch.nn.Linear(16, VOCAB)

    def forward(self, tokens):
        return self.head(torch.tanh(self.embed(tokens)))


def make_data(seed=0, b=8, t=6):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (b, t + 1), generator=g)
    tokens[tokens == BANNED[0]] = 0
    mask = torch.rand(b, t, generator=g) > 0.25
    mask[:, 0] = True
    adv = torch.randn(b, generator=g)
    return tokens, mask, adv


def logprobs(model, tokens):
    return masked_logprobs(model(tokens[:, :-1]), tokens[:, 1:], BANNED, TEMPERATURE)


def train(model, step_fn, tokens, mask, adv, micro_batches, n_tok, steps=3, scale=1.0):
    """HPO-style updates: π_old/π_ref frozen at the start, global token normaliser, several steps."""
    algo = AlgorithmConfig(kl_coef=0.05)
    with torch.no_grad():
        old = logprobs(model, tokens)
    roll, ref = old + 0.05, old - 0.1
    for _ in range(steps):
        for rows in micro_batches:
            loss, _ = policy_loss(logprobs(model, tokens[rows]), old[rows], roll[rows], ref[rows], adv[rows], mask[rows], n_tok, algo)
            step_fn.backward(loss * scale)
        step_fn.step()


class TorchSteps:
    """Plain torch AdamW with grad-norm clipping: the reference."""

    def __init__(self, model, learner):
        self.model, self.opt, self.clip = model, make_optimizer(model.parameters(), learner.optimizer), learner.optimizer.grad_clip

    def backward(self, loss):
        loss.backward()

    def step(self):
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad()


def reference_params(tokens, mask, adv, learner=LEARNER, scale=1.0):
    torch.manual_seed(0)
    model = TinyPolicy()
    train(model, TorchSteps(model, LearnerConfig(**learner)), tokens, mask, adv, [slice(None)], int(mask.sum()), scale=scale)
    return [p.detach().clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def single_rank():
    init_cpu_distributed(0, 1, "127.0.0.1", free_port())


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_every_zero_stage_config_trains_like_plain_torch(single_rank, stage):
    import deepspeed

    tokens, mask, adv = make_data()
    learner = LearnerConfig(zero_stage=stage, **LEARNER)
    torch.manual_seed(0)
    model = TinyPolicy()
    engine, *_ = deepspeed.initialize(
        model=model,
        config=deepspeed_config(learner, 1, "cpu", torch.float32),
        optimizer=make_optimizer(model.parameters(), learner.optimizer),
    )
    # Three uneven micro-batches per optimiser step: DeepSpeed's own accumulation counter is off.
    train(engine, engine, tokens, mask, adv, [slice(0, 1), slice(1, 5), slice(5, 8)], int(mask.sum()))
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), enabled=stage == 3):
        got = [p.detach().clone() for p in engine.module.parameters()]
    want = reference_params(tokens, mask, adv)
    torch.manual_seed(0)
    moved = max((w - p0).abs().max().item() for w, p0 in zip(want, TinyPolicy().parameters()))
    assert moved > 1e-2  # the check below is not vacuous
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-6), (g - w).abs().max()


def test_bf16_config_initialises_and_steps_on_cpu(single_rank):
    import deepspeed

    learner = LearnerConfig(zero_stage=2, dtype="bfloat16", **LEARNER)
    cfg = deepspeed_config(learner, 1, "cpu", resolve_dtype(learner, "cpu"))
    assert cfg["bf16"]["enabled"]
    torch.manual_seed(0)
    model = TinyPolicy()
    engine, *_ = deepspeed.initialize(model=model, config=cfg, optimizer=make_optimizer(model.parameters(), learner.optimizer))
    assert next(engine.module.parameters()).dtype == torch.bfloat16
    before = [p.detach().float().clone() for p in engine.module.parameters()]
    tokens, mask, adv = make_data()
    train(engine, engine, tokens, mask, adv, [slice(0, 4), slice(4, 8)], int(mask.sum()), steps=1)
    after = [p.detach().float() for p in engine.module.parameters()]
    assert any((a - b).abs().max() > 0 for a, b in zip(after, before))


def guarded_train(engine, bad_steps, stage):
    """One optimiser step per entry of `bad_steps`; a True step's batch has an infinite advantage.
    Returns each step's outcome and the final parameters."""
    tokens, mask, adv = make_data()
    algo = AlgorithmConfig(kl_coef=0.0)
    outcomes = []
    for bad in bad_steps:
        a = adv.clone()
        if bad:
            a[0] = math.inf
        lp = logprobs(engine, tokens)
        loss, metrics = policy_loss(lp, lp.detach(), lp.detach(), None, a, mask, int(mask.sum()), algo)
        nonfinite = not math.isfinite(metrics["loss"])
        engine.backward(poisoned(lp) if nonfinite else loss)
        outcomes.append(guarded_step(engine, nonfinite, lambda flag: flag))
    with deepspeed_gathered(engine, stage):
        return outcomes, [p.detach().float().clone() for p in engine.module.parameters()]


def deepspeed_gathered(engine, stage):
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), enabled=stage == 3)


def fresh_engine(stage, dtype, optimizer=None):
    import deepspeed

    learner = LearnerConfig(zero_stage=stage, **LEARNER)
    torch.manual_seed(0)
    model = TinyPolicy()
    engine, *_ = deepspeed.initialize(
        model=model,
        config=deepspeed_config(learner, 1, "cpu", dtype),
        optimizer=(optimizer or make_optimizer)(model.parameters(), learner.optimizer),
    )
    return engine


@pytest.mark.parametrize(
    "stage, dtype",
    [(0, torch.float32), (1, torch.float32), (2, torch.float32), (3, torch.float32), (0, torch.bfloat16), (2, torch.bfloat16)],
)
def test_every_zero_stage_drops_a_step_with_a_non_finite_loss_exactly(single_rank, stage, dtype):
    outcomes, skipped_between = guarded_train(fresh_engine(stage, dtype), [False, True, False], stage)
    _, straight = guarded_train(fresh_engine(stage, dtype), [False, False], stage)
    assert [o.applied for o in outcomes] == [True, False, True] and outcomes[1].grad_norm == math.inf
    assert all(torch.equal(a, b) for a, b in zip(skipped_between, straight)), "the skipped step left a trace"


def test_weights_overflowing_in_an_applied_step_stop_training(single_rank):
    # Decoupled weight decay multiplies by 1 − lr·wd ≈ −3e38: finite gradients, infinite weights. No config
    # passes such an lr (learner.optimizer.lr ≤ 1); a hand-built optimiser shows the last guard.
    engine = fresh_engine(2, torch.float32, lambda params, _: torch.optim.AdamW(params, lr=3e37, weight_decay=10.0))
    with pytest.raises(NonFiniteTrainingError, match="weights became non-finite"):
        guarded_train(engine, [False], 2)


def test_device_and_dtype_resolution():
    assert resolve_device(LearnerConfig(device="cpu").device, "learner.device") == "cpu"
    assert resolve_dtype(LearnerConfig(), "cpu") == torch.float32
    assert resolve_dtype(LearnerConfig(), "cuda") == torch.bfloat16
    assert resolve_dtype(LearnerConfig(dtype="float32"), "cuda") == torch.float32
    if not torch.cuda.is_available():
        assert resolve_device(LearnerConfig().device, "learner.device") == "cpu"
        with pytest.raises(ConfigError, match="learner.device"):
            resolve_device(LearnerConfig(device="cuda").device, "learner.device")


def test_config_reflects_the_learner_section():
    cfg = deepspeed_config(LearnerConfig(zero_stage=3, optimizer={"grad_clip": None}), 4, "cuda", torch.bfloat16)
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["zero_optimization"]["overlap_comm"]
    assert cfg["gradient_clipping"] == 0.0 and cfg["train_batch_size"] == 4 and cfg["bf16"]["enabled"]
    assert cfg["managed_gradient_accumulation"] is False
    cpu = deepspeed_config(LearnerConfig(zero_stage=2), 2, "cpu", torch.float32)
    assert cpu["zero_optimization"]["overlap_comm"] is False and cpu["gradient_clipping"] == 1.0
    with pytest.raises(ConfigError, match="learner.dtype"):
        deepspeed_config(LearnerConfig(), 1, "cpu", torch.float16)


def _rank_worker(rank, world, port, stage, out):
    init_cpu_distributed(rank, world, "127.0.0.1", port)
    import deepspeed

    tokens, mask, adv = make_data()
    learner = LearnerConfig(zero_stage=stage, **SCALE_SENSITIVE)
    torch.manual_seed(0)
    model = TinyPolicy()
    engine, *_ = deepspeed.initialize(
        model=model,
        config=deepspeed_config(learner, world, "cpu", torch.float32),
        optimizer=make_optimizer(model.parameters(), learner.optimizer),
    )
    half = tokens.shape[0] // world
    rows = slice(rank * half, (rank + 1) * half)
    # The normaliser counts both ranks' tokens; ×world undoes DeepSpeed's averaging of gradients over ranks.
    train(engine, engine, tokens[rows], mask[rows], adv[rows], [slice(0, 1), slice(1, half)], int(mask.sum()), scale=float(world))
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), enabled=stage == 3):
        out.put((rank, [p.detach().tolist() for p in engine.module.parameters()]))  # plain lists: no shared memory


@pytest.mark.parametrize("stage", [2, 3])
def test_two_ranks_with_global_normaliser_match_one_process(stage):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_worker, args=(r, 2, port, stage, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        got = dict(out.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    tokens, mask, adv = make_data()
    want = reference_params(tokens, mask, adv, SCALE_SENSITIVE)
    halved = reference_params(tokens, mask, adv, SCALE_SENSITIVE, scale=0.5)  # what forgetting ×world would give
    assert max((h - w).abs().max().item() for h, w in zip(halved, want)) > 1e-4
    for rank in (0, 1):
        for g, w in zip(map(torch.tensor, got[rank]), want):
            assert torch.allclose(g, w, atol=1e-6), (rank, (g - w).abs().max())
