"""Which transport a run's weight sync uses, decided once from the config (aliases resolved here only)."""

from dataclasses import dataclass
from typing import Literal

from hpo_ray.config import RunConfig, learner_on_gpu


@dataclass(frozen=True)
class SyncChoice:
    """The transport (`object_store`, `broadcast`, `cuda_ipc`) and, for broadcast, its group backend."""

    transport: Literal["object_store", "broadcast", "cuda_ipc"]
    group: Literal["gloo", "nccl"] | None = None


def choose_sync(cfg: RunConfig) -> SyncChoice:
    """What `sync.backend` stands for: `auto` is the object store on CPU and, on GPUs, CUDA IPC when
    rollout workers share the learners' GPUs (`cluster.colocate`), else broadcast; `nccl` is
    broadcast over NCCL; `broadcast` runs over NCCL when the learner is on GPUs, else gloo."""
    chosen = cfg.sync.backend
    on_gpu = learner_on_gpu(cfg)
    if chosen == "auto":
        chosen = "object_store" if not on_gpu else "cuda_ipc" if cfg.cluster.colocate else "broadcast"
    if chosen in ("broadcast", "nccl"):
        return SyncChoice("broadcast", "nccl" if chosen == "nccl" or on_gpu else "gloo")
    return SyncChoice(chosen)
