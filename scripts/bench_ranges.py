#!/usr/bin/env python3
"""One range artifact against static builds and ONNX Runtime over a batch × sequence grid (JSON).

For every ``batch x seq`` of the grid, in one run, systems taking turns on the same inputs and
threads: the range artifact (``--range-so``, compiled for ranges covering the grid), a static build
compiled for exactly that shape from the same database (``--db``; built once into ``--static-dir``
and kept), and ONNX Runtime. With ``--versus-range OTHER.so`` the second system is that range
artifact instead (e.g. the heuristic-only build beside a tuned one). Prints each shape's p50s and
ratios, their geometric means and maxima, and the artifacts' sizes:

    python scripts/bench_ranges.py tuning_logs/models/all-MiniLM-L6-v2.onnx \\
        --range-so minilm_range.so --db tuning_logs/ranges.db --static-dir tuning_logs/static \\
        --batches 1,2,4,8 --seqs 8,17,32,50,77,100,128 --seconds 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))

import tvm.relax  # noqa: E402,F401  (the compiler: loaded before the runtime-only loader would be)

import autotune  # noqa: E402
from autotune.bench.bench import bench  # noqa: E402
from autotune.bench.timing import BenchConfig  # noqa: E402
from autotune.frontend.buckets import ShapePlan  # noqa: E402


def static_build(model: Path, plan: ShapePlan, sizes: dict[str, int], db: str, folder: Path) -> Path:
    """The static artifact for ``sizes``, compiled from ``db`` unless ``folder`` holds it already."""
    label = "x".join(str(v) for v in sizes.values())
    so_path = folder / f"{model.stem}_{label}.so"
    if not so_path.exists():
        shapes = {name: plan.shape_of(name, sizes) for name in plan.inputs}
        autotune.compile(model, so_path, shapes, db=db)
    return so_path


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--range-so", type=Path, required=True)
    parser.add_argument("--db", required=True, help="the database both kinds of build are compiled from")
    parser.add_argument("--static-dir", type=Path, help="where the static builds are kept (without --versus-range)")
    parser.add_argument("--versus-range", type=Path, help="another range artifact instead of static builds")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--seqs", default="8,17,32,50,77,100,128")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per shape, systems taking turns")
    args = parser.parse_args()

    ranged = autotune.load(args.range_so)
    plan = ShapePlan.from_dict(ranged.manifest.shape_plan)
    batch_dim, seq_dim = [d for d in plan.inputs[next(iter(plan.inputs))] if isinstance(d, str)][:2]
    if args.versus_range is None:
        args.static_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for batch in map(int, args.batches.split(",")):
        for seq in map(int, args.seqs.split(",")):
            sizes = {d: (batch if d == batch_dim else seq) for d in plan.dims}
            static = args.versus_range or static_build(args.model, plan, sizes, args.db, args.static_dir)
            result = bench(args.range_so, BenchConfig(duration_s=args.seconds, warmup=3), args.model,
                           ("onnxruntime",), {"static": static}, sizes=sizes)
            p50 = {name: s.p50_ms for name, s in result.systems.items()}
            rows.append({"batch": batch, "seq": seq, "range_p50_ms": p50["autotune"],
                         "static_p50_ms": p50["static"], "onnxruntime_p50_ms": p50["onnxruntime"],
                         "range_vs_static": p50["autotune"] / p50["static"],
                         "range_vs_onnxruntime": p50["autotune"] / p50["onnxruntime"],
                         "static_size_mb": static.stat().st_size / 1e6})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    largest = max(rows, key=lambda r: (r["batch"], r["seq"]))  # its static build: the size to compare with
    print(json.dumps({
        "model": str(args.model), "range_artifact": str(args.range_so), "threads": os.environ["TVM_NUM_THREADS"],
        "ranges": {d: str(r) for d, r in plan.dims.items()}, "buckets": len(plan.buckets()),
        "range_size_mb": args.range_so.stat().st_size / 1e6,
        "range_size_vs_static": args.range_so.stat().st_size / 1e6 / largest["static_size_mb"],
        "vs_static": {"geomean": geomean([r["range_vs_static"] for r in rows]),
                      "max": max(r["range_vs_static"] for r in rows)},
        "vs_onnxruntime": {"geomean": geomean([r["range_vs_onnxruntime"] for r in rows]),
                           "max": max(r["range_vs_onnxruntime"] for r in rows)},
        "shapes": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
