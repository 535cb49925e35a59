#!/usr/bin/env python3
"""Time the heuristic matmul kernel with warm and with cold weights, and print JSON.

Alone, as the tuner measures it, a kernel reads the same weights every run, so they stay in cache;
inside a model (MiniLM's weights are 42 MB, more than this VM's L3) each layer's weights come from
memory. This script builds one matmul + bias task per shape with its heuristic default schedule
(weights pre-packed, as compile packs them, and prefetched a panel ahead), then times it in turns:
``warm`` reuses one weight tensor, ``cold`` rotates through copies that together exceed the
last-level cache. The ratio cold / warm is the part of the in-place slowdown that the weights'
memory traffic explains.

    python scripts/cold_weights.py --shapes 128x384x384 128x384x1536 128x1536x384 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))

COLD_BYTES = 96 << 20  # weight copies in turn: three times this VM's 32 MB L3
WARM_UP_S = 1.0  # untimed runs first: in a fresh process parallel kernels here ran at serial speed for a while


def matmul_task(m: int, k: int, n: int):
    """``A[m, k] @ W[k, n] + bias`` as a task whose weights (W, bias) are layout-free."""
    import tvm
    from tvm import te

    a = te.placeholder((m, k), name="A")
    w = te.placeholder((k, n), name="W")
    bias = te.placeholder((n,), name="bias")
    r = te.reduce_axis((0, k), name="k")
    product = te.compute((m, n), lambda i, j: te.sum(a[i, r] * w[r, j], axis=r), name="matmul")
    out = te.compute((m, n), lambda i, j: product[i, j] + bias[j], name="add")
    func = te.create_prim_func([a, w, bias, out]).with_attr("layout_free_buffers", [1, 2])
    return tvm.IRModule({"main": func})


def build_default(mod, target):
    """The task's heuristic default schedule, built by the runner's own build job; the loaded
    kernel and its arguments' info."""
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from autotune.schedules.heuristics import default_schedule
    from autotune.measure.worker_jobs import build

    scheduled = default_schedule(mod, target).mod
    lib = tvm.runtime.load_module(build(tvm.ir.save_json(scheduled), str(target)))
    return lib, [a.as_json() for a in ArgInfo.from_entry_func(scheduled)]


def time_shape(m: int, k: int, n: int, rounds: int, runs: int) -> dict:
    """Median µs per call with warm and with cold weights, the two taking turns ``rounds`` times."""
    import tvm

    from autotune.measure.worker_jobs import candidate_argument
    from autotune.targets.names import parse_target

    target, device = parse_target("host"), tvm.cpu()
    lib, args_info = build_default(matmul_task(m, k, n), target)
    kernel = lib[lib.entry_name]
    args = [candidate_argument(info, device) for info in args_info]
    copies = max(2, COLD_BYTES // (4 * k * n))
    weights = [args[1]] + [candidate_argument(args_info[1], device) for _ in range(copies - 1)]
    deadline = time.perf_counter() + WARM_UP_S
    while time.perf_counter() < deadline:
        kernel(*args)
    medians: dict[str, list[float]] = {"warm": [], "cold": []}
    for _ in range(rounds):
        for mode in medians:
            times = []
            for run in range(runs):
                args[1] = weights[0] if mode == "warm" else weights[run % copies]
                started = time.perf_counter()
                kernel(*args)
                times.append(time.perf_counter() - started)
            medians[mode].append(1e6 * statistics.median(times))
    warm, cold = (statistics.median(medians[mode]) for mode in ("warm", "cold"))
    return {"shape": [m, k, n], "weight_copies": copies, "warm_us": round(warm, 1), "cold_us": round(cold, 1),
            "cold_vs_warm": round(cold / warm, 3), "gflops_warm": round(2 * m * k * n / warm / 1e3, 1),
            "rounds_us": {mode: [round(x, 1) for x in v] for mode, v in medians.items()}}


def shape_arg(text: str) -> tuple[int, int, int]:
    """``MxKxN`` as three positive ints."""
    dims = text.split("x")
    if len(dims) != 3 or not all(d.isdigit() and int(d) > 0 for d in dims):
        raise argparse.ArgumentTypeError(f"--shapes takes MxKxN with positive integers, e.g. 128x384x1536, not {text!r}")
    return int(dims[0]), int(dims[1]), int(dims[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", type=shape_arg,
                        default=[(128, 384, 384), (128, 384, 1536), (128, 1536, 384)],
                        help="MxKxN matmuls (default: MiniLM's at batch 1, sequence 128)")
    parser.add_argument("--rounds", type=int, default=6, help="turns of warm and cold")
    parser.add_argument("--runs", type=int, default=150, help="calls per turn")
    args = parser.parse_args()
    results = [time_shape(*shape, args.rounds, args.runs) for shape in args.shapes]
    print(json.dumps({"threads": int(os.environ["TVM_NUM_THREADS"]), "results": results}, indent=1))


if __name__ == "__main__":
    main()
