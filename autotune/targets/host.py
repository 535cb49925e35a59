"""This host's CPU: the ISA features /proc/cpuinfo lists, and the cores this process may use."""

from __future__ import annotations

import os
from functools import lru_cache

# ISA extensions a CPU target may require; checked against /proc/cpuinfo before running code.
CHECKED_FEATURES = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni", "avx512bf16",
                    "avx512fp16", "amx-tile", "amx-bf16", "amx-int8", "avx2", "fma", "avx")
# Where /proc/cpuinfo spells a feature otherwise than LLVM (the rest only swap '-' for '_').
_CPUINFO_SPELLINGS = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
                      "avx512fp16": "avx512_fp16"}


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


def lacking_on_host(features: list[str]) -> list[str]:
    """Those of the LLVM-named ``features`` that this host's CPU lacks."""
    flags = host_cpu_flags()
    return [f for f in features if _CPUINFO_SPELLINGS.get(f, f.replace("-", "_")) not in flags]
