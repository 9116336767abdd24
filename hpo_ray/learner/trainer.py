"""One learner rank: a DeepSpeed engine over the policy, the frozen reference, logprobs and updates.

The Ray learner-group actors are thin wrappers over `PolicyTrainer`. A step's sequences are split
over ranks and over optimiser steps by the caller; π_old and π_ref are computed once for all of a
rank's sequences before the first update (so later optimiser steps are off-policy and rely on
clipping, as in PPO). Every rank runs the same number of backward passes per optimiser step.
An optimiser step whose loss or gradient norm is not finite is skipped (`hpo_ray.learner.finite`),
and DeepSpeed's checkpoint files are only ever read by the restricted loader (`safe_load`).
"""

import math
import time
from pathlib import Path

import torch
import torch.distributed as dist

from hpo_ray.config import RunConfig
from hpo_ray.devices import resolve_device
from hpo_ray.dialogue import make_layout
from hpo_ray.learner.batch import (
    MicroBatch,
    SequenceItem,
    collate,
    micro_batches,
    token_logprobs,
)
from hpo_ray.learner.distributed import init_cpu_distributed, init_cuda_distributed
from hpo_ray.learner.ds_config import deepspeed_config, make_optimizer, resolve_dtype
from hpo_ray.learner.finite import (
    NonFiniteTrainingError,
    SkipGuard,
    guarded_step,
    nonfinite_weights,
    poisoned,
)
from hpo_ray.learner.loss import merge_metrics, policy_loss
from hpo_ray.learner.safe_load import restricted_checkpoint_engine
from hpo_ray.model.build import load_policy
from hpo_ray.rollout.sampling import policy_ban_mask


class PolicyTrainer:
    """Policy + reference on one rank of the learner group."""

    def __init__(self, cfg: RunConfig, model_path: str | Path, rank: int, world: int, addr: str, port: int, local_rank: int = 0):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.device_type = resolve_device(cfg.learner.device, "learner.device")
        if self.device_type == "cuda":
            init_cuda_distributed(rank, world, local_rank, addr, port)
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            init_cpu_distributed(rank, world, addr, port)
            device = torch.device("cpu")
        import deepspeed

        self.dtype = resolve_dtype(cfg.learner, self.device_type)
        model, tokenizer = load_policy(model_path, dtype="float32", device=str(device))
        if cfg.learner.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.layout = make_layout(cfg, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.layout.end_of_turn_id
        self.banned = policy_ban_mask(self.layout, model.config.vocab_size, device)
        ref_device = "cpu" if cfg.learner.offload_reference else str(device)
        self.reference, _ = load_policy(model_path, dtype="float32" if self.dtype == torch.float32 else "bfloat16", device=ref_device)
        self.reference.requires_grad_(False)
        optimizer = make_optimizer(model.parameters(), cfg.learner.optimizer)
        ds_cfg = deepspeed_config(cfg.learner, world, self.device_type, self.dtype)
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_cfg)
        self.engine.checkpoint_engine = restricted_checkpoint_engine(self.engine.checkpoint_engine)
        self.device = device
        self.optimizer_steps = 0
        self.skips = SkipGuard(cfg.learner.max_skipped_updates)

    # -- logprobs ---------------------------------------------------------------------------------
    @torch.no_grad()
    def logprobs(self, items: list[SequenceItem], model=None, only: list[int] | None = None) -> list[torch.Tensor | None]:
        """Per item, the [len-1] policy logprobs of each next token (0 off the assistant mask); with `only`,
        just those items' (None for the rest)."""
        model = self.engine.module if model is None else model
        out: list[torch.Tensor | None] = [None] * len(items)
        chosen = list(range(len(items))) if only is None else sorted(only)
        if not chosen:
            return out
        was_training = model.training
        model.eval()
        dev = next(model.parameters()).device
        temperature = self.cfg.rollout.sampling.temperature or 1.0
        for sub in micro_batches([items[i] for i in chosen], self.cfg.learner.micro_batch_tokens):
            group = [chosen[j] for j in sub]
            mb = collate(items, group, self.pad_id).to(dev)
            lp, _ = token_logprobs(model, mb, self.layout.placeholder_id, self.banned.to(dev), temperature)
            for row, i in enumerate(group):
                out[i] = lp[row, : len(items[i].input_ids) - 1].float().cpu()
        model.train(was_training)
        return out

    def reference_logprobs(self, items: list[SequenceItem]) -> list[torch.Tensor]:
        if self.cfg.learner.offload_reference:
            self.reference.to(self.device)
        try:
            return self.logprobs(items, self.reference)
        finally:
            if self.cfg.learner.offload_reference:
                self.reference.to("cpu")

    # -- update -----------------------------------------------------------------------------------
    def train_step(self, items: list[SequenceItem], opt_step_of: list[int], normalisers: list[float], passes: int = 1) -> dict:
        """Run `passes` × len(normalisers) optimiser steps; item i contributes to step opt_step_of[i].

        `normalisers[k]` is the global (all ranks) number of assistant tokens — or rollouts for
        sequence aggregation — of optimiser step k.
        """
        algo = self.cfg.algorithm
        started = time.perf_counter()
        # The first optimiser step's sequences meet the weights they would be scored with before the update:
        # their training forward's logprobs, detached, are the old logprobs (ratio exactly 1), which saves a
        # forward pass over them. Only later steps' sequences need theirs computed now.
        later = [i for i, s in enumerate(opt_step_of) if s != 0]
        old = self.logprobs(items, only=later)
        ref = self.reference_logprobs(items) if algo.kl_coef > 0 else None
        logprob_seconds = time.perf_counter() - started
        temperature = self.cfg.rollout.sampling.temperature or 1.0
        parts: list[dict] = []
        grad_norms = []
        skipped = 0
        self.engine.train()
        for k, normaliser in [kn for _ in range(passes) for kn in enumerate(normalisers)]:
            mine = [i for i, s in enumerate(opt_step_of) if s == k]
            groups = micro_batches([items[i] for i in mine], self.cfg.learner.micro_batch_tokens) if mine else []
            groups = [[mine[j] for j in g] for g in groups]
            n_passes = self._max_over_ranks(len(groups))
            step_parts, nonfinite = [], False
            for p in range(n_passes):
                if p < len(groups):
                    mb = collate(items, groups[p], self.pad_id)
                else:
                    mb = self._empty_batch()
                mb = mb.to(self.device)
                lp, ent = token_logprobs(self.engine, mb, self.layout.placeholder_id, self.banned, temperature, with_entropy=True)
                if mb.indices and old[mb.indices[0]] is None:  # a first-step micro-batch, first pass
                    for row, i in enumerate(mb.indices):
                        old[i] = lp[row, : len(items[i].input_ids) - 1].detach().float().cpu()
                old_t = self._stack(old, mb)
                ref_t = self._stack(ref, mb) if ref is not None else None
                loss, metrics = policy_loss(
                    lp, old_t, mb.rollout_logprobs, ref_t, mb.advantages, mb.loss_mask, normaliser, algo, entropy=ent
                )
                if not math.isfinite(metrics["loss"]):
                    nonfinite, loss = True, poisoned(lp)  # NaN gradients: the whole optimiser step is dropped
                self.engine.backward(loss * self.world)
                if p < len(groups):
                    step_parts.append(metrics)
            nonfinite = self._any_rank(nonfinite)
            outcome = guarded_step(self.engine, nonfinite, self._any_rank)
            self.skips.record(outcome, nonfinite)
            if outcome.applied:
                parts += step_parts
                if outcome.grad_norm is not None:
                    grad_norms.append(outcome.grad_norm)
                self.optimizer_steps += 1
            else:
                skipped += 1
        metrics = merge_metrics(parts) if parts else {}
        if grad_norms:
            metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
        metrics["optimizer_steps"] = passes * len(normalisers) - skipped
        metrics["learner/skipped_updates"] = float(skipped)
        metrics["time/logprob"] = logprob_seconds
        return metrics

    def _stack(self, per_item: list[torch.Tensor | None] | None, mb: MicroBatch) -> torch.Tensor:
        out = torch.zeros_like(mb.rollout_logprobs)
        if per_item is None or not mb.indices:
            return out
        for row, i in enumerate(mb.indices):
            out[row, : per_item[i].shape[0]] = per_item[i].to(out.device)
        return out

    def _empty_batch(self) -> MicroBatch:
        """A one-row batch with no assistant tokens: a zero-loss backward that keeps ranks in step."""
        ids = torch.tensor([self.layout.system_ids("en", "en")])
        width = ids.shape[1] - 1
        zeros = torch.zeros(1, width)
        return MicroBatch(
            ids,
            torch.ones_like(ids),
            torch.zeros(0, self.engine.module.config.hidden_size),
            ids[:, 1:].clone(),
            torch.zeros(1, width, dtype=torch.bool),
            zeros,
            zeros.clone(),
            [],
        )

    def _max_over_ranks(self, n: int) -> int:
        if self.world == 1:
            return n
        t = torch.tensor([n], dtype=torch.long, device=self.device if self.device_type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def _any_rank(self, flag: bool) -> bool:
        return bool(self._max_over_ranks(int(flag)))

    # -- weights and checkpoints ------------------------------------------------------------------
    def full_state_dict(self, copy: bool = True) -> dict[str, torch.Tensor] | None:
        """HF-named full weights on CPU (rank 0; None elsewhere). Collective under ZeRO-3: call on all ranks.

        `copy=False` returns the live CPU tensors themselves where it can (not under ZeRO-3, whose
        gathered parameters are freed again): for a reader that is done before the next update.
        """
        module = self.engine.module
        if self.cfg.learner.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()} if self.rank == 0 else None
            return state
        return {k: v.detach().to("cpu", copy=copy) for k, v in module.state_dict().items()} if self.rank == 0 else None

    def save_checkpoint(self, folder: str | Path, client_state: dict) -> None:
        """DeepSpeed state (module, optimiser, step) into `folder` (all ranks write, shared filesystem).
        Refused on every rank when any rank's weights hold a non-finite value."""
        bad = nonfinite_weights(self.engine.module)
        if self._any_rank(bool(bad)):
            where = f"rank {self.rank}: {', '.join(bad[:5])}" if bad else "another rank's weights"
            raise NonFiniteTrainingError(f"refusing to save a checkpoint with non-finite weights ({where})")
        self.engine.save_checkpoint(str(folder), tag="state", client_state={**client_state, "optimizer_steps": self.optimizer_steps})

    def load_checkpoint(self, folder: str | Path) -> dict:
        _, client = self.engine.load_checkpoint(str(folder), tag="state", load_optimizer_states=True, load_lr_scheduler_states=True)
        client = client or {}
        self.optimizer_steps = int(client.get("optimizer_steps", 0))
        return client

    def optimizer_fingerprint(self) -> list[float]:
        """Sums of this rank's optimiser state tensors (Adam moments, steps): equal iff restored alike."""
        base = getattr(self.engine.optimizer, "optimizer", self.engine.optimizer)
        out = []
        for state in base.state.values():
            for key in sorted(state):
                value = state[key]
                out.append(float(value.double().abs().sum()) if torch.is_tensor(value) else float(value))
        return out

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()
