"""Process environment defaults the stack needs on these machines, applied before Ray/vLLM import.

Ray 2.60 turns token auth on by default and resolves the node IP to a non-loopback interface;
we keep everything on loopback with auth off unless the user set these variables themselves.
vLLM runs its engine in-process (multiprocess startup costs ~30 s on CPU). Nothing is downloaded.
"""

import os

DEFAULTS: dict[str, str] = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
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


def apply_defaults() -> None:
    """Set each default that the user has not set already."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
