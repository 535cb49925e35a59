"""How candidates are built and timed: workers, timeouts, repeats, threads."""

from __future__ import annotations

import os
from dataclasses import dataclass

MEMORY_SHARE = 2  # a worker may address at most 1/MEMORY_SHARE of the host's memory
MEMORY_CAP_MB = 16384


def default_memory_limit_mb() -> int:
    """The address space a measurement worker may use: a share of the host's memory, capped."""
    try:
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20
    except (ValueError, OSError):
        return MEMORY_CAP_MB
    return min(MEMORY_CAP_MB, total_mb // MEMORY_SHARE)


@dataclass(frozen=True)
class MeasureConfig:
    """Builder and runner settings (see ``worker_jobs`` for why these defaults)."""

    build_workers: int = 2
    build_timeout_s: float = 60.0
    run_timeout_s: float = 10.0
    number: int = 1  # runs per repeat (TVM raises it to fill min_repeat_ms)
    repeat: int = 9
    min_repeat_ms: int = 1
    threads: int | None = None  # TVM threads when timing; None: every core
    memory_limit_mb: int | None = None  # a worker's address space; None: ``default_memory_limit_mb``

    def settings(self) -> dict:
        """The settings a job records (those that change what a measurement means)."""
        return {"builders": self.build_workers, "build_timeout_s": self.build_timeout_s,
                "run_timeout_s": self.run_timeout_s, "number": self.number, "repeat": self.repeat,
                "min_repeat_ms": self.min_repeat_ms}
