"""Process environment defaults, applied before Ray/vLLM import: the one home for them.

The Makefile and the cluster's runtime envs (cluster/*.yaml) repeat some of `DEFAULTS` for
processes that start before Python (a test checks they agree). `DEFAULTS` hold in every process
(CLI, actors, tests): no usage stats, vLLM in-process (multiprocess
startup costs ~30 s on CPU), nothing downloaded. `LOCAL_RAY` holds only when hpo-ray starts its own
single-node Ray (no `RAY_ADDRESS`, no `cluster.address`): Ray's single-machine mode, which binds
the node to 127.0.0.1 and lets no other node join, plus the auth mode chosen by
`cluster.local_auth`. A cluster hpo-ray joins keeps its own mode and auth (token auth included).
"""

import os
import sys
from pathlib import Path

DEFAULTS: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    # Weight buckets cross the object store as torch tensors; zero-copy makes that sync 3-6x faster.
    "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
# Ray's single-machine mode (node IP 127.0.0.1; `ray start --address` refuses to join). Local only.
LOCAL_RAY: dict[str, str] = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_SOURCES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")


def apply_defaults() -> None:
    """Set each process-wide default that the user has not set already."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def joins_cluster(address: str | None) -> bool:
    """Whether hpo-ray joins a running Ray (`cluster.address` or `RAY_ADDRESS`) instead of starting one."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def local_ray_environment(local_auth: str) -> dict[str, str]:
    """The single-machine settings of a Ray that hpo-ray starts itself."""
    return {**LOCAL_RAY, AUTH_MODE: local_auth}


def apply_ray_mode(address: str | None, local_auth: str) -> None:
    """Before Ray is imported: when joining a cluster, nothing but a check that token auth has a
    token to send; else the settings of a Ray hpo-ray starts itself (`apply_local_ray`)."""
    if joins_cluster(address):
        check_token_auth()
    else:
        apply_local_ray(local_auth)


def apply_local_ray(local_auth: str) -> None:
    """Before Ray is imported, for a single-node Ray started here: the local settings, each unless
    the user set it."""
    for key, value in local_ray_environment(local_auth).items():
        os.environ.setdefault(key, value)
    constants = sys.modules.get("ray._private.ray_constants")  # read at `import ray`: too late to change
    wanted = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"].lower() not in ("0", "false")
    if constants is not None and constants.ENABLE_RAY_CLUSTER != wanted:
        raise RuntimeError(
            "ray was imported before hpo-ray chose local or cluster mode: call hpo_ray.env.apply_ray_mode before `import ray`"
        )


def token_available() -> bool:
    """Whether a Ray auth token is set the way Ray looks for one (env, token file, ~/.ray)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return (Path(path) if path else Path.home() / ".ray" / "auth_token").is_file()


def check_token_auth() -> None:
    """With `RAY_AUTH_MODE=token`, fail before connecting when no token can be sent."""
    if os.environ.get(AUTH_MODE, "").lower() == "token" and not token_available():
        from hpo_ray.config import ConfigError

        sources = ", ".join(TOKEN_SOURCES)
        raise ConfigError(
            "cluster.address",
            f"RAY_AUTH_MODE=token but no token found: set one of {sources} "
            "to the cluster's token (`ray get-auth-token` on the head prints it)",
        )
