#!/usr/bin/env python3
"""How close each system of a ``bench_models.py`` run came to this CPU's fp32 peak (JSON).

For every configuration in a ``bench_models.py`` report: the model's FLOPs (autotune's task
extraction: each task's FLOPs as TVM counts them × its calls per inference), the floor that sets at
this CPU's fp32 peak, and each system's p50 as GFLOP/s and as a share of the peak. Two peaks are
measured here, on the report's thread count:

* ``fma``: independent FMA chains in vector registers on every thread (AVX-512 where the CPU has
  it, else AVX2), a C loop built with the system's C compiler (``autotune.bench.peaks``): no
  kernel can beat it;
* ``sgemm``: numpy's BLAS on a 2048² fp32 matmul: what a tuned library reaches.

    python scripts/roofline.py tuning_logs/bench_models/report.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from autotune.bench.peaks import fma_peak


def sgemm_peak(size: int = 2048, repeats: int = 10) -> dict:
    """GFLOP/s of numpy's BLAS on a ``size``² fp32 matmul (median of ``repeats``)."""
    import numpy as np

    a, b = (np.random.default_rng(0).standard_normal((size, size), dtype=np.float32) for _ in range(2))
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return {"gflops": round(2 * size ** 3 / sorted(times)[repeats // 2] / 1e9, 1), "size": size}


def model_gflop(name: str, model: Path, batch: int, seq: int) -> float:
    """GFLOP per inference of one configuration of ``model``, as autotune's tasks count them."""
    from bench_models import shapes_for

    from autotune.jobs.prepare import prepare

    prepared = prepare(model, shapes_for(name, batch, seq), "host")
    return sum(task.flops * task.weight for task in prepared.tasks) / 1e9


def config_roofline(config: dict, gflop: float, peak: float) -> dict:
    """The configuration's floor at ``peak`` and each system's GFLOP/s and share of it."""
    rates = {name: gflop / (stats["p50_ms"] / 1e3) for name, stats in config["systems"].items()}
    systems = {name: {"gflops": round(rate, 1), "share_of_fma_peak": round(rate / peak, 3)}
               for name, rate in rates.items()}
    return {"model": config["model"], "batch": config["batch"], "seq": config["seq"],
            "gflop": round(gflop, 3), "floor_ms": round(gflop / peak * 1e3, 2), "systems": systems}


def main() -> None:
    from bench_models import model_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("report", type=Path, help="JSON printed by scripts/bench_models.py")
    parser.add_argument("--exported-dir", type=Path, default=Path("tuning_logs/models"))
    parser.add_argument("-o", "--out-dir", type=Path, default=Path("tuning_logs/roofline"),
                        help="where bundled models are written to count their FLOPs")
    args = parser.parse_args()
    try:
        report = json.loads(args.report.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"{args.report} is not a bench_models.py report: {err}") from None
    if not isinstance(report, dict) or not isinstance(report.get("models"), dict):
        raise SystemExit(f"{args.report} is not a bench_models.py report: it has no 'models'")
    threads = int(report.get("threads") or os.environ.get("TVM_NUM_THREADS") or 1)
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    peaks = {"threads": threads, "fma": {"gflops": fma_peak(threads)}, "sgemm": sgemm_peak()}
    configs = []
    for name, results in report["models"].items():
        model = model_path(name, args.out_dir, args.exported_dir)
        for config in results["configs"]:
            gflop = model_gflop(name, model, config["batch"], config["seq"])
            configs.append(config_roofline(config, gflop, peaks["fma"]["gflops"]))
    print(json.dumps({"peaks": peaks, "configs": configs}, indent=1))


if __name__ == "__main__":
    main()
