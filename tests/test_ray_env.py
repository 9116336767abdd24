"""Single-machine Ray settings stay on single machines: a cluster hpo-ray joins keeps Ray's cluster
mode and its own auth; only the Ray hpo-ray starts itself binds to loopback with `cluster.local_auth`."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpo_ray.config import ConfigError
from hpo_ray.env import AUTH_MODE, LOCAL_RAY, apply_local_ray, apply_ray_mode, check_token_auth

REPO = Path(__file__).parents[1]
RAY_VARS = (*LOCAL_RAY, AUTH_MODE, "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
# What the CLI does before `connect` imports ray: process defaults, then the mode from the config.
PROBE = """
import json, os, sys
from hpo_ray.config import load_config
from hpo_ray.env import apply_defaults, apply_ray_mode
apply_defaults()
cfg = load_config(None, sys.argv[1:])
apply_ray_mode(cfg.cluster.address, cfg.cluster.local_auth)
from ray._private import ray_constants
print(json.dumps({"cluster_mode": ray_constants.ENABLE_RAY_CLUSTER, "auth": os.environ.get("RAY_AUTH_MODE")}))
"""


def ray_mode(overrides: list[str], **env: str) -> dict:
    """Ray's cluster mode and auth mode in a fresh process with no Ray variable but `env`."""
    clean = {k: v for k, v in os.environ.items() if k not in RAY_VARS} | env | {"PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", PROBE, *overrides], env=clean, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "overrides, env",
    [
        ([], {"RAY_ADDRESS": "127.0.0.2:6390"}),
        (["cluster.address=127.0.0.2:6390"], {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t0k"}),
    ],
    ids=["RAY_ADDRESS", "cluster.address+token"],
)
def test_joining_a_cluster_leaves_ray_cluster_mode_and_auth_alone(overrides, env):
    assert ray_mode(overrides, **env) == {"cluster_mode": True, "auth": env.get("RAY_AUTH_MODE")}


def test_a_ray_started_here_is_single_machine_with_the_chosen_local_auth(monkeypatch):
    assert ray_mode([]) == {"cluster_mode": False, "auth": "disabled"}
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    apply_local_ray("token")  # cluster.local_auth=token
    assert os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    apply_local_ray("disabled")  # the user's own setting wins
    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_token_auth_without_a_token_is_refused_before_connecting(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="RAY_AUTH_TOKEN"):
        apply_ray_mode("127.0.0.2:6390", "disabled")
    (tmp_path / "token").write_text("t0k")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    check_token_auth()
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t0k")
    check_token_auth()


def test_choosing_the_mode_after_ray_was_imported_is_an_error(monkeypatch):
    pytest.importorskip("ray._private.ray_constants")  # this process imported ray in single-machine mode
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    with pytest.raises(RuntimeError, match="before `import ray`"):
        apply_local_ray("disabled")


def test_no_launcher_makefile_or_job_env_sets_a_single_machine_ray_variable():
    files = [REPO / "Makefile", *sorted(p for p in (REPO / "cluster").rglob("*") if p.is_file())]
    for path in files:
        text = path.read_text()
        for var in LOCAL_RAY:  # an assignment (shell VAR=, YAML VAR:, ENV VAR ...), not a mention in a comment
            assert not re.search(rf"{var}\s*[=:]|ENV\s+{var}\b", text), f"{path.name} sets {var}, a single-machine Ray setting"
        assert not re.search(rf"{AUTH_MODE}\s*[=:]\s*[\"']?disabled|{AUTH_MODE}:-disabled", text), f"{path.name} turns Ray auth off"
    exported = re.findall(r"^export\s+(\w+)", (REPO / "Makefile").read_text(), flags=re.M)
    assert AUTH_MODE not in exported
