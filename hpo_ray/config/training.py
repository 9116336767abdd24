"""Training config: the HPO algorithm (loss, advantages), the learner group, weight sync and SFT."""

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from .base import Section, Seed

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class AlgorithmConfig(Section):
    """One HPO step: P talks × G rollouts, then a clipped policy-gradient update with KL to SFT.

    Loss terms (exact formulas in `hpo_ray/learner/loss.py`): ratio clipped to
    [1 − clip_low, 1 + clip_high], optional dual clip c; IS weight π_old/π_rollout (nan/inf → 0),
    optionally capped at `is_truncate`; KL estimator k1/k2/k3 weighted by π_θ/π_rollout when
    `on_policy_kl`; `loss_agg` token (÷ global assistant tokens) or sequence (÷ global rollouts).
    `max_staleness` k: the rollouts of up to k coming steps run while the learner trains, so a step may
    train on trajectories sampled up to k weight versions ago (0: the synchronous loop; needs separate pools).
    """

    steps: PositiveInt = 30
    talks_per_step: PositiveInt = 4
    group_size: PositiveInt = 8
    updates_per_step: PositiveInt = 1
    clip_low: float = Field(0.2, ge=0.0, lt=1.0)
    clip_high: float = Field(0.2, ge=0.0)
    dual_clip: float | None = Field(None, gt=1.0)
    is_correction: bool = True
    is_truncate: PositiveFloat | None = None
    kl_coef: float = Field(0.01, ge=0.0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    on_policy_kl: bool = True
    loss_agg: Literal["token", "sequence"] = "token"
    baseline: Literal["none", "group_mean", "group_norm", "leave_one_out"] = "none"
    dynamic_sampling: bool = False
    truncated_reward: float | None = None
    max_staleness: NonNegativeInt = 0


class OptimizerConfig(Section):
    """AdamW settings (the original: lr 1e-6, wd 0.01, betas .9/.999, eps 1e-8, clip 1.0)."""

    lr: float = Field(1e-6, gt=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    grad_clip: PositiveFloat | None = 1.0


class LearnerConfig(Section):
    """The DeepSpeed learner group: one Ray actor per rank, gloo on CPU, NCCL on GPU."""

    num_ranks: PositiveInt = 1
    zero_stage: Literal[0, 1, 2, 3] = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    micro_batch_tokens: PositiveInt = 4096
    global_batch_size: PositiveInt | None = None
    offload_reference: bool = False
    gradient_checkpointing: bool = False
    # Optimiser steps with a non-finite loss or gradient norm are skipped; this many in a row stop the run.
    max_skipped_updates: PositiveInt = 3
    optimizer: OptimizerConfig = OptimizerConfig()


class SyncConfig(Section):
    """Learner → rollout-engine weight sync: buckets of ≤ `bucket_mb`, each with a checksum.

    `checksum` makes every bucket carry a checksum that the receiver checks (a corrupted bucket
    raises); `verify` also compares whole-state checksums of learner and engine after each sync.
    """

    backend: Literal["auto", "object_store", "broadcast", "nccl", "cuda_ipc"] = "auto"
    bucket_mb: PositiveFloat = 64.0
    checksum: bool = True
    verify: bool = False


class HearConfig(Section):
    """Stage 1 of SFT on speech: the encoder + projector learn to hear (CTC on each sentence's source words,
    then optionally on whole talks)."""

    epochs: PositiveInt = 20
    lr: float = Field(1e-2, gt=0.0, le=1.0)  # 3e-3 left the demo's dev WER at 0.68, 1e-2 reaches 0.13, 2e-2 diverges (docs/speech.md)
    batch_size: PositiveInt = 4
    margin_seconds: float = Field(0.16, ge=0.0)
    warmup_steps: int = Field(10, ge=0)
    seed: Seed = 0
    # Then this many epochs on whole talks (0: none), at `talk_lr`: the stream hears each sentence after its
    # talk's left context, which the crops never show (docs/speech.md: streamed dev WER 0.124 → 0.079 with 30).
    talk_epochs: NonNegativeInt = 0
    talk_lr: float = Field(3e-3, gt=0.0, le=1.0)


class SftConfig(Section):
    """Supervised fine-tuning on dialogue-form data (the HPO starting point); `hear` is speech stage 1."""

    epochs: PositiveInt = 4
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    batch_size: PositiveInt = 8
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(20, ge=0)
    seed: Seed = 0
    hear: HearConfig = HearConfig()
