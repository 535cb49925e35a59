"""How candidates are built and timed: workers, timeouts, repeats, threads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MeasureConfig:
    """Builder and runner settings (see ``worker_jobs`` for why these defaults)."""

    build_workers: int = 2
    build_timeout_s: float = 60.0
    run_timeout_s: float = 10.0
    repeat: int = 9
    min_repeat_ms: int = 1
    threads: int | None = None  # TVM threads when timing; None: every core
