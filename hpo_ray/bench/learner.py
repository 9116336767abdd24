"""`hpo-ray bench learner`: one DeepSpeed ZeRO-2 optimiser step vs one plain torch AdamW step.

Both sides start from the same policy (the tiny Qwen3 built from `model.tiny`, or `model.path`)
and take the same batch of dialogue sequences with injected frames through the same work per
step: π_old and π_ref logprobs, token-budget micro-batches of `policy_loss` on `token_logprobs`,
backward, grad-norm clipping, AdamW. The ZeRO side is the learner's own `PolicyTrainer.train_step`
(world size 1 in this process, or 2 ranks over gloo in spawned processes). Warm-up steps are not
timed; the median of the timed steps counts. Both sides end with the same parameters (checked).
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
import torch.distributed

from hpo_ray.bench.common import (
    build_policy,
    dialogue_items,
    finite_json,
    load_note,
    quiet_transformers,
    timed,
)
from hpo_ray.config import RunConfig, load_config, parse_config
from hpo_ray.devices import resolve_device
from hpo_ray.dialogue import make_layout
from hpo_ray.learner.batch import SequenceItem, collate, micro_batches, token_logprobs
from hpo_ray.learner.ds_config import make_optimizer
from hpo_ray.learner.loss import policy_loss
from hpo_ray.model.build import load_policy
from hpo_ray.rollout.sampling import policy_ban_mask

TARGET = 1.3  # issue 5: a ZeRO-2 step within 1.3x of plain torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=5, help="timed optimiser steps per side (median counts)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimiser steps per side first")
    parser.add_argument("--sequences", type=int, default=16, help="dialogues in the batch (one optimiser step)")
    parser.add_argument("--turns", type=int, default=8, help="turns per dialogue (data.turn_frames frames each)")
    parser.add_argument("--words-per-turn", type=int, default=4, help="most assistant words per turn")
    parser.add_argument(
        "--ranks", type=int, choices=(1, 2), default=1, help="ZeRO world size: 1 in this process, 2 spawned processes over gloo"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per ZeRO rank (1 on a small shared machine: thread sync dwarfs tiny ops)"
    )
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads of the plain side (default --threads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=None, help="YAML config (defaults when omitted)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="e.g. model.tiny.hidden_size=256 model.tiny.num_layers=4 model.tiny.intermediate_size=768",
    )


class TorchStep:
    """The plain-torch reference: the same step as `PolicyTrainer.train_step` without DeepSpeed."""

    def __init__(self, cfg: RunConfig, policy: Path, device: str):
        self.cfg = cfg
        self.model, tokenizer = load_policy(policy, dtype="float32", device=device)
        self.reference, _ = load_policy(policy, dtype="float32", device=device)
        self.reference.requires_grad_(False)
        self.layout = make_layout(cfg, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.layout.end_of_turn_id
        self.banned = policy_ban_mask(self.layout, self.model.config.vocab_size, device)
        self.optimizer = make_optimizer(self.model.parameters(), cfg.learner.optimizer)
        self.device = device
        self.temperature = cfg.rollout.sampling.temperature or 1.0

    @torch.no_grad()
    def _logprobs(self, model, items: list[SequenceItem]) -> list[torch.Tensor]:
        model.eval()
        out: list[torch.Tensor] = [torch.empty(0)] * len(items)
        for group in micro_batches(items, self.cfg.learner.micro_batch_tokens):
            mb = collate(items, group, self.pad_id).to(self.device)
            lp, _ = token_logprobs(model, mb, self.layout.placeholder_id, self.banned, self.temperature)
            for row, i in enumerate(group):
                out[i] = lp[row, : len(items[i].input_ids) - 1].float()
        return out

    def step(self, items: list[SequenceItem], normaliser: float) -> None:
        algo = self.cfg.algorithm
        ref = self._logprobs(self.reference, items) if algo.kl_coef > 0 else None
        self.model.train()
        for group in micro_batches(items, self.cfg.learner.micro_batch_tokens):
            mb = collate(items, group, self.pad_id).to(self.device)
            lp, ent = token_logprobs(self.model, mb, self.layout.placeholder_id, self.banned, self.temperature, with_entropy=True)
            old = [lp[row, : len(items[i].input_ids) - 1].detach() for row, i in enumerate(group)]  # one step: old = current
            loss, _ = policy_loss(
                lp,
                _stack(dict(zip(group, old)), mb),
                mb.rollout_logprobs,
                _stack(ref, mb) if ref is not None else None,
                mb.advantages,
                mb.loss_mask,
                normaliser,
                algo,
                entropy=ent,
            )
            loss.backward()
        clip = self.cfg.learner.optimizer.grad_clip
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def _stack(per_item: list[torch.Tensor] | dict[int, torch.Tensor], mb) -> torch.Tensor:
    out = torch.zeros_like(mb.rollout_logprobs)
    for row, i in enumerate(mb.indices):
        out[row, : per_item[i].shape[0]] = per_item[i]
    return out


def _normaliser(items: list[SequenceItem], cfg: RunConfig) -> float:
    if cfg.algorithm.loss_agg == "token":
        return float(sum(sum(it.assistant_mask[1:]) for it in items) or 1)
    return float(len(items))


def _zero_rank(
    rank: int, world: int, port: int, cfg_json: dict, policy: str, items: list[SequenceItem], rounds: int, threads: int, results
) -> None:
    """One spawned ZeRO rank: `rounds` optimiser steps on its share of the batch, timed per step."""
    torch.set_num_threads(threads)
    quiet_transformers()
    from hpo_ray.learner.trainer import PolicyTrainer

    cfg = parse_config(cfg_json)
    trainer = PolicyTrainer(cfg, policy, rank, world, "127.0.0.1", port)
    mine = items[rank::world]
    normaliser = _normaliser(items, cfg)
    times = []
    for _ in range(rounds):
        trainer.barrier()
        times.append(timed(lambda: trainer.train_step(mine, [0] * len(mine), [normaliser], 1)))
    state = trainer.full_state_dict()
    # numpy, not tensors: torch's queue would share tensors through fds that die with this process
    results.put((rank, times, None if state is None else {k: v.numpy() for k, v in state.items()}))


def _zero_two_ranks(cfg: RunConfig, policy: Path, items: list[SequenceItem], rounds: int, threads: int):
    """Per-step seconds (slowest rank) and rank 0's final state, from 2 spawned ranks."""
    import torch.multiprocessing as mp

    from hpo_ray.learner.distributed import free_port

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_zero_rank, args=(r, 2, port, cfg.model_dump(mode="json"), str(policy), items, rounds, threads, results))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    got = {}
    try:
        for _ in procs:
            rank, times, state = results.get(timeout=900)
            got[rank] = (times, state)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    times = [max(a, b) for a, b in zip(got[0][0], got[1][0])]
    return times, {k: torch.from_numpy(v) for k, v in got[0][1].items()}


def _measure_one_rank(cfg: RunConfig, policy: Path, items: list[SequenceItem], rounds: int, threads: int, torch_threads: int):
    """World size 1 in this process: ZeRO and plain steps interleaved, so drifting load hits both alike."""
    from hpo_ray.learner.distributed import free_port
    from hpo_ray.learner.trainer import PolicyTrainer

    normaliser = _normaliser(items, cfg)
    had_group = torch.distributed.is_initialized()
    trainer = PolicyTrainer(cfg, policy, 0, 1, "127.0.0.1", free_port())
    plain = TorchStep(cfg, policy, str(trainer.device))
    zero_times, torch_times = [], []
    for _ in range(rounds):
        torch.set_num_threads(threads)
        zero_times.append(timed(lambda: trainer.train_step(items, [0] * len(items), [normaliser], 1)))
        torch.set_num_threads(torch_threads)
        torch_times.append(timed(lambda: plain.step(items, normaliser)))
    zero_state = trainer.full_state_dict()
    if not had_group:  # leave the process as we found it (tests run several benchmarks in one process)
        torch.distributed.destroy_process_group()
    return zero_times, torch_times, zero_state, plain


def run(args) -> int:
    # long by its report lines, not its logic: measure side by side, then print each row and the JSON line
    if args.steps < 1 or args.warmup < 0 or args.sequences < args.ranks:
        raise SystemExit("hpo-ray bench learner: need --steps ≥ 1, --warmup ≥ 0 and --sequences ≥ --ranks")
    quiet_transformers()
    cfg = load_config(args.config, list(args.overrides) + [f"learner.num_ranks={args.ranks}"])
    if args.ranks > 1 and resolve_device(cfg.learner.device, "learner.device") != "cpu":
        raise SystemExit("hpo-ray bench learner: --ranks 2 runs gloo ranks on CPU; add learner.device=cpu")
    rounds = args.warmup + args.steps
    torch_threads = args.torch_threads or args.threads
    with tempfile.TemporaryDirectory(prefix="hpo-bench-learner-") as tmp:
        policy = build_policy(cfg, Path(tmp) / "policy")
        _, tokenizer = load_policy(policy, dtype="float32", device="cpu")
        hidden = int(json.loads((policy / "config.json").read_text())["hidden_size"])
        items = dialogue_items(
            make_layout(cfg, tokenizer),
            hidden,
            Path(tmp) / "frames",
            args.sequences,
            args.turns,
            cfg.data.turn_frames,
            args.words_per_turn,
            args.seed,
        )
        normaliser = _normaliser(items, cfg)
        note = load_note()
        torch.manual_seed(args.seed)
        if args.ranks == 1:
            zero_times, torch_times, zero_state, plain = _measure_one_rank(cfg, policy, items, rounds, args.threads, torch_threads)
        else:
            zero_times, zero_state = _zero_two_ranks(cfg, policy, items, rounds, args.threads)
            torch.set_num_threads(torch_threads)
            plain = TorchStep(cfg, policy, "cpu")
            torch_times = [timed(lambda: plain.step(items, normaliser)) for _ in range(rounds)]
        device = plain.device
        model = plain.model
        n_params = sum(p.numel() for p in model.parameters())
        torch_state = model.state_dict()
        drift = max((zero_state[k].float().cpu() - torch_state[k].float().cpu()).abs().max().item() for k in torch_state)
        start, _ = load_policy(policy, dtype="float32", device="cpu")
        moved = max((torch_state[k].float().cpu() - v.float()).abs().max().item() for k, v in start.state_dict().items())

    zero_s = statistics.median(zero_times[args.warmup :])
    torch_s = statistics.median(torch_times[args.warmup :])
    ratio = zero_s / torch_s
    ratio_min = min(zero_times[args.warmup :]) / min(torch_times[args.warmup :])
    tokens = sum(len(it.input_ids) for it in items)
    mc = model.config
    print(
        f"learner bench: {args.sequences} dialogues x {args.turns} turns = {tokens} tokens ({int(normaliser)} assistant), "
        f"micro_batch_tokens={cfg.learner.micro_batch_tokens}; model {mc.model_type} hidden={mc.hidden_size} "
        f"layers={mc.num_hidden_layers} ({n_params / 1e6:.2f} M params) fp32 on {device}; "
        f"ZeRO-{cfg.learner.zero_stage} over gloo, world size {args.ranks}, {args.threads} thread(s)/rank; "
        f"plain torch {torch.get_num_threads()} thread(s); {note}"
    )
    print(f"{'side':<28}{'median s':>10}{'min s':>9}{'max s':>9}   ({args.warmup} warm-up + {args.steps} timed steps)")
    for name, times in ((f"DeepSpeed ZeRO-{cfg.learner.zero_stage}", zero_times), ("plain torch AdamW", torch_times)):
        t = times[args.warmup :]
        print(f"{name:<28}{statistics.median(t):>10.4f}{min(t):>9.4f}{max(t):>9.4f}")
    verdict = "meets" if ratio <= TARGET else "misses"
    print(
        f"zero_vs_torch = {zero_s:.4f} / {torch_s:.4f} = {ratio:.3f} ({verdict} the <= {TARGET} target); "
        f"after {rounds} steps the two sides' parameters differ by at most {drift:.2e} "
        f"(each moved by up to {moved:.2e}); ratio of the fastest steps {ratio_min:.3f}"
    )
    print(
        finite_json(
            {
                "zero_vs_torch": ratio,
                "zero_step_s": zero_s,
                "torch_step_s": torch_s,
                "zero_vs_torch_fastest": ratio_min,
                "zero_stage": cfg.learner.zero_stage,
                "ranks": args.ranks,
                "params_m": n_params / 1e6,
                "tokens": tokens,
                "max_param_diff": drift,
                "max_param_change": moved,
            }
        )
    )
    return 0
