#!/usr/bin/env python3
"""Serving soak: several threads call one loaded artifact for a fixed time.

Prints JSON: calls, errors (must be 0), throughput, latency p50/p99, and resident memory at the
start of the soak and at its end (growth must stay flat). Outputs are checked against a reference
call, so a wrong answer under concurrency counts as an error.

    python scripts/bench_serving.py tuning_logs/demo/translation.so --threads 4 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np
import psutil

import autotune
from autotune.bench.timing import summarize
from autotune.frontend.inputs import manifest_inputs


def soak(model, inputs: dict, reference: dict, threads: int, seconds: float) -> dict:
    """Call ``model`` from ``threads`` threads for ``seconds``; count calls, errors, latencies."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                out = model(inputs)
                ok = all(np.array_equal(out[k], reference[k]) for k in reference)
            except Exception:  # noqa: BLE001 - every failure is counted, none may escape
                ok = False
            latencies[index].append(time.perf_counter() - start)
            errors[index] += 0 if ok else 1
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    samples = [s for per_thread in latencies for s in per_thread]
    stats = summarize(samples, batch=1)
    stats["throughput_per_s"] = len(samples) / seconds
    return {"calls": len(samples), "errors": sum(errors), **stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("artifact")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    model = autotune.load(args.artifact)
    _, inputs = manifest_inputs(model.manifest)
    reference = model(inputs)
    process = psutil.Process()
    soak(model, inputs, reference, args.threads, min(5.0, args.seconds))  # warm-up: allocator settles
    rss_start = process.memory_info().rss
    result = soak(model, inputs, reference, args.threads, args.seconds)
    rss_end = process.memory_info().rss
    result.update({"threads": args.threads, "seconds": args.seconds,
                   "rss_start_mb": rss_start / 2**20, "rss_end_mb": rss_end / 2**20,
                   "rss_growth_mb": (rss_end - rss_start) / 2**20})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
