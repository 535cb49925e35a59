"""This host's CUDA GPU: its arch, and whether machine code for an arch runs on it."""

from __future__ import annotations

from ..errors import AutotuneError

_KNOWN_ARCHS = "cuda-sm80, cuda-sm89 or cuda-sm90"


def arch_of(compute_version: str) -> str:
    """``"9.0"`` → ``"sm_90a"`` (TVM's arch for Hopper and later), ``"8.9"`` → ``"sm_89"``."""
    major, minor = (int(v) for v in compute_version.split(".")[:2])
    return f"sm_{major}{minor}" + ("a" if major >= 9 else "")


def local_arch() -> str:
    """The arch of this host's first CUDA GPU, or a clear error naming the explicit targets."""
    import tvm

    device = tvm.cuda(0)
    if not device.exist:
        raise AutotuneError("--target cuda means this host's GPU, and this host has no CUDA GPU: "
                            f"name the arch instead ({_KNOWN_ARCHS})")
    return arch_of(device.compute_version)


def arch_runs_on(arch: str, compute_version: str) -> bool:
    """Whether machine code for ``arch`` (no PTX) runs on a GPU of ``compute_version``.

    SASS runs on the same major version with an equal or newer minor; ``a`` archs run on theirs only.
    """
    digits = arch.removeprefix("sm_").rstrip("a")
    want = (int(digits[:-1]), int(digits[-1]))
    have = tuple(int(v) for v in compute_version.split(".")[:2])
    if arch.endswith("a"):
        return have == want
    return have[0] == want[0] and have[1] >= want[1]


def check_device(arch: str, what: str) -> None:
    """Raise ``cannot {what}: …`` unless this host has a CUDA GPU that runs code for ``arch``."""
    import tvm

    device = tvm.cuda(0)
    if not device.exist:
        raise AutotuneError(f"cannot {what}: it needs a CUDA GPU ({arch}) and this host has none "
                            "(or no NVIDIA driver)")
    version = device.compute_version
    if not arch_runs_on(arch, version):
        raise AutotuneError(f"cannot {what}: code for {arch} does not run on this host's GPU "
                            f"({device.device_name}, compute capability {version}, {arch_of(version)});"
                            " compile for it (--target cuda on that host)")
