#!/usr/bin/env python3
"""How much this machine's timing drifts: one kernel timed again and again, in one process and in fresh ones.

Before trusting absolute latencies from a tuning run, check the machine: a dense 32x128 @ 128x512
matmul (autotune's heuristic schedule) is timed with the tuner's own runner settings (median of 9
repeats of at least 1 ms) every 50 ms for ``--seconds`` in one process, then once in each of
``--processes`` fresh processes. On a quiet machine both spreads are a few percent; on a shared VM
the same code drifts by tens of percent over 0.1–1 s phases, which no per-candidate measurement
protocol of a few milliseconds can undo. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = [(32, 128), (512, 128), (32, 512)]


def build(path: Path) -> None:
    """Compile the probe kernel with the heuristic matmul schedule and export it."""
    import tvm
    from tvm import te

    from autotune.schedules.heuristics import default_schedule
    from autotune.targets.names import parse_target

    a = te.placeholder(SHAPES[0], name="A")
    b = te.placeholder(SHAPES[1], name="B")
    k = te.reduce_axis((0, 128), name="k")
    c = te.compute(SHAPES[2], lambda i, j: te.sum(a[i, k] * b[j, k], axis=k), name="matmul")
    mod = tvm.IRModule({"main": te.create_prim_func([a, b, c])})
    target = parse_target("host")
    sch = default_schedule(mod, target)
    tvm.tirx.build(sch.mod if sch is not None else mod, target=target).export_library(str(path))


def time_kernel(path: Path, seconds: float) -> list[float]:
    """Microseconds per timing window, one window every 50 ms for ``seconds`` (one window if 0)."""
    import tvm

    module = tvm.runtime.load_module(str(path))
    device = tvm.cpu(0)
    args = [tvm.runtime.tensor(np.random.default_rng(0).standard_normal(s).astype("float32"), device)
            for s in SHAPES]
    evaluator = module.time_evaluator(module.entry_name, device, number=1, repeat=9, min_repeat_ms=1)
    evaluator(*args)
    samples, deadline = [], time.monotonic() + seconds
    while True:
        samples.append(statistics.median(evaluator(*args).results) * 1e6)
        if time.monotonic() >= deadline:
            return samples
        time.sleep(0.05)


def spread(samples: list[float]) -> dict:
    """Min, percentiles, max (µs) and p90/p10 of a set of timings."""
    p10, p50, p90 = np.percentile(samples, [10, 50, 90])
    return {"n": len(samples), "min_us": round(min(samples), 1), "p10_us": round(p10, 1),
            "p50_us": round(p50, 1), "p90_us": round(p90, 1), "max_us": round(max(samples), 1),
            "p90_over_p10": round(p90 / p10, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernel", type=Path, help=argparse.SUPPRESS)  # a child process's run
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    if args.kernel:
        print(json.dumps(time_kernel(args.kernel, 0.0)))
        return
    kernel = Path(tempfile.mkdtemp(prefix="autotune-drift-")) / "probe.so"
    build(kernel)
    in_process = time_kernel(kernel, args.seconds)
    fresh = [json.loads(subprocess.run(
        [sys.executable, __file__, "--kernel", str(kernel), "--threads", str(args.threads)],
        check=True, capture_output=True, text=True, env=os.environ).stdout)[0]
        for _ in range(args.processes)]
    print(json.dumps({"threads": args.threads, "one_process": spread(in_process),
                      "fresh_processes": spread(fresh)}, indent=1))


if __name__ == "__main__":
    main()
