"""Named targets, host feature detection, and the check that the host can run a target."""

from __future__ import annotations

import json
import os
from functools import lru_cache

from .errors import AutotuneError

# ISA extensions a CPU target may require; checked against /proc/cpuinfo before running code.
_CHECKED_FEATURES = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni", "avx512bf16",
                     "avx512fp16", "amx-tile", "amx-bf16", "amx-int8", "avx2", "fma", "avx")
# Where /proc/cpuinfo spells a feature otherwise than LLVM (the rest only swap '-' for '_').
_CPUINFO_SPELLINGS = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
                      "avx512fp16": "avx512_fp16"}

CUDA_ARCHS = {"cuda-sm80": "sm_80", "cuda-sm89": "sm_89", "cuda-sm90": "sm_90a"}
# Limits MetaSchedule's CUDA rules need (thread binding, shared memory), as TVM's nvidia/* tags
# give them for A100, RTX 4090 and H100 alike.
CUDA_LIMITS = {"max_num_threads": 1024, "max_threads_per_block": 1024, "thread_warp_size": 32,
               "max_shared_memory_per_block": 49152, "registers_per_block": 65536}


def physical_cores() -> int:
    """Cores available to this process (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def host_cpu_flags() -> frozenset[str]:
    """The ISA flags of this machine's CPU as /proc/cpuinfo spells them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _host_mcpu() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def named_targets(num_cores: int | None = None) -> dict[str, dict]:
    """The target names users may pass to ``--target``, as TVM target JSON."""
    cores = num_cores or physical_cores()
    targets = {
        "host": {"kind": "llvm", "mcpu": _host_mcpu(), "num-cores": cores},
        "avx512": {"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": cores},
        "avx2": {"kind": "llvm", "mcpu": "haswell", "num-cores": cores},
        "cuda": {"kind": "cuda", **CUDA_LIMITS},  # this host's GPU: arch read when parsed
    }
    targets.update({name: {"kind": "cuda", "arch": arch, **CUDA_LIMITS}
                    for name, arch in CUDA_ARCHS.items()})
    return targets


def parse_target(spec: str, num_cores: int | None = None):
    """A ``tvm.target.Target`` from a name (``host``, ``avx512``, ``cuda-sm90``…), JSON, or a tag."""
    import tvm

    named = named_targets(num_cores)
    if spec == "cuda":
        from .cuda import local_arch

        named[spec]["arch"] = local_arch()
    if spec in named:
        return tvm.target.Target(named[spec], host=_cuda_host(spec, named))
    try:
        config = json.loads(spec) if spec.lstrip().startswith("{") else spec
        return tvm.target.Target(config)
    except Exception as err:  # TVM raises several types for a bad target
        names = ", ".join(named)
        raise AutotuneError(f"unknown target --target {spec!r}: use one of {names}, "
                            f"a TVM target as JSON, or a TVM tag ({str(err).splitlines()[0][:120]})"
                            ) from None


def _cuda_host(spec: str, named: dict[str, dict]):
    return named["host"] if named[spec]["kind"] == "cuda" else None


def target_cores(target) -> int:
    """The cores a target's schedules are made for (its ``num-cores``; 1 when it names none)."""
    return int(target.attrs.get("num-cores", 1))


def canonical(target) -> str:
    """Stable string of a target, the key of the targets table."""
    return json.dumps(json.loads(str(target)), sort_keys=True)


def required_features(target) -> list[str]:
    """The checked ISA features that code for an LLVM ``target`` may use."""
    from tvm.target import codegen

    if target.kind.name != "llvm":
        return []
    with target:
        return [f for f in _CHECKED_FEATURES if codegen.llvm_cpu_has_features(f, target)]


def lacking_on_host(features: list[str]) -> list[str]:
    """Those of the LLVM-named ``features`` that this host's CPU lacks."""
    flags = host_cpu_flags()
    return [f for f in features if _CPUINFO_SPELLINGS.get(f, f.replace("-", "_")) not in flags]


def missing_host_features(target) -> list[str]:
    """Features the target needs that this host's CPU lacks (empty when it can run here)."""
    return lacking_on_host(required_features(target))


def check_runnable_here(target, what: str) -> None:
    """Raise a clear error if code for ``target`` cannot run on this host."""
    if target.kind.name == "cuda":
        from .cuda import check_device

        check_device(str(target.attrs["arch"]), what)
        return
    missing = missing_host_features(target)
    if missing:
        raise AutotuneError(
            f"cannot {what} on this host for target mcpu={target.attrs.get('mcpu')}: the CPU lacks "
            f"{', '.join(missing)} (use --target host, or measure on a matching machine via --rpc)")
