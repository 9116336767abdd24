"""torch.distributed start-up for learner ranks: the DeepSpeed-on-CPU recipe (gloo) and NCCL on GPU.

On CPU, DeepSpeed would JIT-compile its shared-memory communication op with g++ (~60 s) inside
`init_distributed`; marking it incompatible first avoids that (docs/platform-notes.md).

The rendezvous binds only the address it is given (the node IP Ray gave rank 0; loopback on one
machine): torch's TCPStore server would listen on all interfaces, so rank 0 opens the listening
socket itself and hands it over. Gloo's own sockets go on the interface of the rank's node IP.
"""

import ipaddress
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (for a rendezvous address)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rendezvous_store(addr: str, port: int, rank: int, world: int, timeout: timedelta) -> dist.TCPStore:
    """The group's TCPStore: rank 0 serves it on `addr:port` only, the other ranks connect there."""
    if rank != 0:
        return dist.TCPStore(addr, port, world, is_master=False, timeout=timeout)
    sock = socket.socket(_family(addr), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen(max(128, world))
    return dist.TCPStore(
        addr, port, world, is_master=True, timeout=timeout, wait_for_workers=False, master_listen_fd=sock.detach()
    )  # the store owns the socket from here on


def pin_socket_interface(node_ip: str) -> None:
    """Make gloo bind the interface that carries this rank's node IP (unless GLOO_SOCKET_IFNAME is set;
    on loopback NCCL's bootstrap too), instead of whatever the host name resolves to."""
    name = interface_of(node_ip)
    if name is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", name)
        if ipaddress.ip_address(node_ip).is_loopback:
            os.environ.setdefault("NCCL_SOCKET_IFNAME", name)


def interface_of(ip: str) -> str | None:
    """The network interface holding address `ip`, else the one whose subnet contains it (127.0.0.2 → lo)."""
    import psutil

    target = ipaddress.ip_address(ip)
    on_subnet = None
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.netmask:
                continue
            address = a.address.split("%")[0]
            if address == ip:
                return name
            prefix = bin(int(ipaddress.ip_address(a.netmask.split("/")[0]))).count("1")
            net = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
            if on_subnet is None and target.version == net.version and target in net:
                on_subnet = name
    return on_subnet


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _init_group(backend: str, rank: int, world: int, addr: str, port: int) -> None:
    """The default process group over our own rendezvous store (DeepSpeed then adopts it)."""
    timeout = dist.default_pg_timeout
    dist.init_process_group(backend, store=rendezvous_store(addr, port, rank, world, timeout), rank=rank, world_size=world, timeout=timeout)


def init_cpu_distributed(rank: int, world: int, addr: str, port: int) -> None:
    """Join (or check) the default process group for DeepSpeed on CPU: gloo, DS_ACCELERATOR=cpu."""
    _set_env(rank, world, rank, addr, port)
    os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        raise RuntimeError(
            f"DeepSpeed already chose accelerator {get_accelerator().device_name()!r} in this process; "
            "call init_cpu_distributed before anything else touches deepspeed"
        )
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if _already(rank, world, "gloo"):
        return
    _init_group("gloo", rank, world, addr, port)
    deepspeed.init_distributed(
        dist_backend="gloo", auto_mpi_discovery=False, distributed_port=port, rank=rank, world_size=world, verbose=False
    )


def init_cuda_distributed(rank: int, world: int, local_rank: int, addr: str, port: int) -> None:
    """Join (or check) the default process group for DeepSpeed on GPU: NCCL, device `local_rank`."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            "init_cuda_distributed needs CUDA, but torch.cuda.is_available() is False; use init_cpu_distributed (learner.device=cpu)"
        )
    _set_env(rank, world, local_rank, addr, port)
    torch.cuda.set_device(local_rank)
    import deepspeed

    if _already(rank, world, "nccl"):
        return
    _init_group("nccl", rank, world, addr, port)
    deepspeed.init_distributed(
        dist_backend="nccl", auto_mpi_discovery=False, distributed_port=port, rank=rank, world_size=world, verbose=False
    )


def _set_env(rank: int, world: int, local_rank: int, addr: str, port: int) -> None:
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}")
    os.environ.update(MASTER_ADDR=addr, MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world))


def _already(rank: int, world: int, backend: str) -> bool:
    """True when this process already joined a matching default group; raises on a mismatch."""
    if not dist.is_initialized():
        return False
    got = (dist.get_rank(), dist.get_world_size(), dist.get_backend())
    if got != (rank, world, backend):
        raise RuntimeError(f"process group already initialised as rank/world/backend {got}, asked for {(rank, world, backend)}")
    return True
