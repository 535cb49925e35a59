"""Named targets (``--target``) as TVM targets, and the features a CPU target's code uses."""

from __future__ import annotations

import json

from ..common.text import first_line
from ..errors import AutotuneError
from .host import usable_cores

CUDA_ARCHS = {"cuda-sm80": "sm_80", "cuda-sm89": "sm_89", "cuda-sm90": "sm_90a"}
# Limits MetaSchedule's CUDA rules need (thread binding, shared memory), as TVM's nvidia/* tags
# give them for A100, RTX 4090 and H100 alike.
CUDA_LIMITS = {"max_num_threads": 1024, "max_threads_per_block": 1024, "thread_warp_size": 32,
               "max_shared_memory_per_block": 49152, "registers_per_block": 65536}


def _host_mcpu() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def named_targets(num_cores: int | None = None) -> dict[str, dict]:
    """The target names users may pass to ``--target``, as TVM target JSON."""
    cores = num_cores or usable_cores()
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
        from .gpu import local_arch

        named[spec]["arch"] = local_arch()
    if spec in named:
        return tvm.target.Target(named[spec], host=_cuda_host(spec, named))
    try:
        config = json.loads(spec) if spec.lstrip().startswith("{") else spec
        return tvm.target.Target(config)
    except Exception as err:  # TVM raises several types for a bad target
        names = ", ".join(named)
        raise AutotuneError(f"unknown target --target {spec!r}: use one of {names}, "
                            f"a TVM target as JSON, or a TVM tag ({first_line(err, 120)})"
                            ) from None


def _cuda_host(spec: str, named: dict[str, dict]):
    return named["host"] if named[spec]["kind"] == "cuda" else None


def target_cores(target) -> int:
    """The cores a target's schedules are made for (its ``num-cores``; 1 when it names none)."""
    return int(target.attrs.get("num-cores", 1))


def canonical(target) -> str:
    """Stable string of a target, the key of the targets table."""
    return json.dumps(json.loads(str(target)), sort_keys=True)
