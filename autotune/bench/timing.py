"""Timing systems fairly on a shared machine: warm-up, short turns in rotating order, percentiles.

The systems take turns in short slices (``time_in_turns``), so machine noise hits them alike; each
system's ratio to another is given over the whole run and turn by turn (``turn_ratios``: both ran
within seconds of each other, in the same spell of the machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..common.results import OMIT_NONE, Result
from ..common.turns import turn_order


@dataclass(frozen=True)
class BenchConfig:
    """How long to measure: ``count`` runs, or for ``duration_s`` if given, after ``warmup`` runs.

    Untuned TVM, tens of times slower than the rest, is timed after the turns for ``untuned_runs``
    runs (at most ``count``): its ratio does not need turns, and a hundred runs of a real model
    would take many minutes.
    """

    count: int = 100
    duration_s: float | None = None
    warmup: int = 10
    threads: int | None = None
    untuned_runs: int = 5
    streams: int = 0  # >1: also time this many concurrent requests (``time_streams``)
    stream_seconds: float = 10.0


def time_runs(run: Callable[[], object], config: BenchConfig) -> list[float]:
    """Wall-clock seconds of each run after warm-up."""
    return time_interleaved({"run": run}, config)["run"]


INTERLEAVE_SLICES = 10


def time_interleaved(runners: dict[str, Callable[[], object]], config: BenchConfig) -> dict[str, list[float]]:
    """Wall-clock seconds of each runner's runs, the runners taking turns (``time_in_turns``)."""
    return {name: runs_of(turns) for name, turns in time_in_turns(runners, config).items()}


def runs_of(turns: list[list[float]]) -> list[float]:
    """Every run of every turn, in order."""
    return [seconds for turn in turns for seconds in turn]


def time_in_turns(runners: dict[str, Callable[[], object]], config: BenchConfig
                  ) -> dict[str, list[list[float]]]:
    """Wall-clock seconds of each runner's runs, turn by turn: the runners take turns in short slices.

    On a shared machine the speed drifts over seconds; taking turns spreads every drift over all
    systems alike, so their ratios hold even when the absolute figures move. With several runners,
    each turn starts with one untimed run and the order rotates every slice: a system that runs
    right after ONNX Runtime shares the cores with its threads, which spin on for a while.
    """
    for run in runners.values():
        for _ in range(config.warmup):
            run()
    names = list(runners)
    turns: dict[str, list[list[float]]] = {name: [] for name in names}
    slice_s = config.duration_s / (INTERLEAVE_SLICES * len(names)) if config.duration_s else None
    per_slice = -(-config.count // INTERLEAVE_SLICES)
    for index in range(INTERLEAVE_SLICES):
        for name in turn_order(names, index):
            taken = sum(map(len, turns[name]))
            turns[name].append(_take_turn(runners[name], min(taken + per_slice, config.count) - taken,
                                          slice_s, warm=len(names) > 1))
    return turns


def _take_turn(run: Callable[[], object], goal: int, slice_s: float | None, warm: bool) -> list[float]:
    """``goal`` timed runs (or as many as ``slice_s`` allows); one untimed first if ``warm``."""
    samples: list[float] = []
    if slice_s is None and goal <= 0:
        return samples
    if warm:
        run()
    deadline = time.perf_counter() + slice_s if slice_s else None
    while (len(samples) < goal) if deadline is None else (time.perf_counter() < deadline):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return samples


def turn_ratios(turns: list[list[float]], reference: list[list[float]]) -> dict | None:
    """The median run of each turn over the reference's median in the same slice, seconds apart.

    The ratio of two p50s over a whole run mixes the machine's fast and slow spells; per turn, both
    systems ran in the same spell. Returns the median, lowest and highest of those ratios (None
    when no turn timed both)."""
    ratios = [float(np.median(mine) / np.median(theirs)) for mine, theirs in zip(turns, reference)
              if mine and theirs]
    if not ratios:
        return None
    return {"median": float(np.median(ratios)), "lowest": min(ratios), "highest": max(ratios),
            "turns": len(ratios)}


@dataclass
class SystemStats(Result):
    """One system's runs, as ONNX Runtime's perf_test and OpenVINO's benchmark_app report them:
    latency min/max/mean/std and percentiles (P50 = benchmark_app's median) in ms, and its
    single-stream throughput (one request at a time: batch ÷ mean latency, inferences per second);
    its ratios to ONNX Runtime when that ran too."""

    runs: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    throughput_per_s: float  # single stream
    min_ms: float = 0.0
    max_ms: float = 0.0
    std_ms: float = 0.0
    p999_ms: float = 0.0
    p50_vs_onnxruntime: float | None = field(default=None, metadata=OMIT_NONE)
    turns_vs_onnxruntime: dict | None = field(default=None, metadata=OMIT_NONE)
    p50_vs_openvino: float | None = field(default=None, metadata=OMIT_NONE)
    turns_vs_openvino: dict | None = field(default=None, metadata=OMIT_NONE)

    def compare_to(self, reference_name: str, reference: SystemStats, turns: list[list[float]] | None,
                   reference_turns: list[list[float]]) -> None:
        """Set this system's ratios to ``reference_name`` (``onnxruntime`` or ``openvino``): of the p50s,
        and turn by turn (``turn_ratios``) where this system took turns with it."""
        setattr(self, f"p50_vs_{reference_name}", self.p50_ms / reference.p50_ms)
        if turns is not None and turns is not reference_turns:
            setattr(self, f"turns_vs_{reference_name}", turn_ratios(turns, reference_turns))


REFERENCES = ("onnxruntime", "openvino")  # the peers every system's ratios are given against


def summarize(samples: list[float], batch: int) -> SystemStats:
    """The ``SystemStats`` of ``samples`` (seconds per run) of a batch of ``batch``."""
    ms = np.asarray(samples) * 1e3
    percentiles = {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 95, 99)}
    return SystemStats(runs=len(samples), mean_ms=float(ms.mean()), **percentiles,
                       throughput_per_s=float(batch * len(samples) / max(float(np.sum(samples)), 1e-12)),
                       min_ms=float(ms.min()), max_ms=float(ms.max()), std_ms=float(ms.std()),
                       p999_ms=float(np.percentile(ms, 99.9)))


@dataclass
class StreamStats(Result):
    """Several requests at a time (benchmark_app's throughput mode, MLPerf's Offline): ``streams``
    threads calling the model together for ``seconds``; throughput in inferences per second and
    the latency each request saw."""

    streams: int
    runs: int
    seconds: float
    throughput_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float


def time_streams(make_run: Callable[[], Callable[[], object]], streams: int, seconds: float,
                 batch: int) -> StreamStats:
    """``streams`` threads, each with its own ``make_run()``, calling it as fast as they can."""
    import threading

    calls = [make_run() for _ in range(streams)]
    for run in calls:
        run()  # warm: each stream's state is made before the clock starts
    latencies: list[list[float]] = [[] for _ in calls]
    start = time.perf_counter()
    deadline = start + seconds

    def stream(index: int) -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            calls[index]()
            latencies[index].append(time.perf_counter() - began)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ms = np.asarray([s for per in latencies for s in per]) * 1e3
    return StreamStats(streams=streams, runs=len(ms), seconds=round(elapsed, 3),
                       throughput_per_s=float(batch * len(ms) / elapsed),
                       **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)})
