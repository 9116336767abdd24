"""The learner's torch.distributed rendezvous listens on the address it is given, not on all interfaces."""

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

RANK = """
import json, os, psutil
from hpo_ray.learner.distributed import free_port, init_cpu_distributed, pin_socket_interface
pin_socket_interface("127.0.0.1")
init_cpu_distributed(0, 1, "127.0.0.1", free_port("127.0.0.1"))
import torch, torch.distributed as dist
t = torch.ones(3); dist.all_reduce(t)
print(json.dumps([c.laddr.ip for c in psutil.Process().net_connections("tcp") if c.status == psutil.CONN_LISTEN]))
"""


def test_a_learner_rank_listens_on_loopback_only_when_given_loopback():
    repo = Path(__file__).parents[1]
    out = subprocess.run(
        [sys.executable, "-c", RANK],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(repo), "DS_ACCELERATOR": "cpu"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    listening = json.loads(out.stdout.strip().splitlines()[-1])
    assert listening, "the rank should at least serve the rendezvous store"
    wildcard_or_external = [ip for ip in listening if not ipaddress.ip_address(ip.split("%")[0]).is_loopback]
    assert not wildcard_or_external, f"listening on {listening}"


def test_the_interface_of_a_loopback_node_ip_is_the_loopback_interface():
    from hpo_ray.learner.distributed import interface_of

    lo = interface_of("127.0.0.1")
    assert lo is not None and interface_of("127.0.0.2") == lo  # a 127.0.0.x node IP (simulated nodes) is on lo too
