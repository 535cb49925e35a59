"""This host's CPU: the ISA features /proc/cpuinfo lists, and the cores this process may use."""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")

# ISA extensions a CPU target may require; checked against /proc/cpuinfo before running code.
CHECKED_FEATURES = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni", "avx512bf16",
                    "avx512fp16", "amx-tile", "amx-bf16", "amx-int8", "avx2", "fma", "avx")
# Where /proc/cpuinfo spells a feature otherwise than LLVM (the rest only swap '-' for '_').
_CPUINFO_SPELLINGS = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
                      "avx512fp16": "avx512_fp16"}


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a container
    limited to 4 CPUs on a 64-core host gets 4)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def cgroup_cpu_quota(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs this process's cgroup may use (quota ÷ period, cgroup v2 or v1), or None where none
    is set or none can be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy, "max PERIOD" when unlimited
            limit = _read(root / path.lstrip("/") / "cpu.max")
            if limit and not limit.startswith("max"):
                quota, period = limit.split()[:2]
                return int(quota) / int(period)
        elif "cpu" in controllers.split(","):
            folder = root / controllers / path.lstrip("/")
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0:
                return int(quota) / int(period)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


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
