"""torch.distributed start-up for learner ranks: the DeepSpeed-on-CPU recipe (gloo) and NCCL on GPU.

On CPU, DeepSpeed would JIT-compile its shared-memory communication op with g++ (~60 s) inside
`init_distributed`; marking it incompatible first avoids that (docs/platform-notes.md).
"""

import os
import socket

import torch
import torch.distributed as dist


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (for a rendezvous address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def init_cpu_distributed(rank: int, world: int, addr: str, port: int) -> None:
    """Join (or check) the default process group for DeepSpeed on CPU: gloo, DS_ACCELERATOR=cpu."""
    _set_env(rank, world, rank, addr, port)
    os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        raise RuntimeError(f"DeepSpeed already chose accelerator {get_accelerator().device_name()!r} in this process; "
                           "call init_cpu_distributed before anything else touches deepspeed")
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if _already(rank, world, "gloo"):
        return
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, distributed_port=port,
                               rank=rank, world_size=world, verbose=False)


def init_cuda_distributed(rank: int, world: int, local_rank: int, addr: str, port: int) -> None:
    """Join (or check) the default process group for DeepSpeed on GPU: NCCL, device `local_rank`."""
    if not torch.cuda.is_available():
        raise RuntimeError("init_cuda_distributed needs CUDA, but torch.cuda.is_available() is False; "
                           "use init_cpu_distributed (learner.device=cpu)")
    _set_env(rank, world, local_rank, addr, port)
    torch.cuda.set_device(local_rank)
    import deepspeed

    if _already(rank, world, "nccl"):
        return
    deepspeed.init_distributed(dist_backend="nccl", auto_mpi_discovery=False, distributed_port=port,
                               rank=rank, world_size=world, verbose=False)


def _set_env(rank: int, world: int, local_rank: int, addr: str, port: int) -> None:
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}")
    os.environ.update(MASTER_ADDR=addr, MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(local_rank),
                      WORLD_SIZE=str(world))


def _already(rank: int, world: int, backend: str) -> bool:
    """True when this process already joined a matching default group; raises on a mismatch."""
    if not dist.is_initialized():
        return False
    got = (dist.get_rank(), dist.get_world_size(), dist.get_backend())
    if got != (rank, world, backend):
        raise RuntimeError(f"process group already initialised as rank/world/backend {got}, asked for {(rank, world, backend)}")
    return True
