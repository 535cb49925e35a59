#!/usr/bin/env python3
"""How close each system of a ``bench_models.py`` run came to this CPU's peaks (JSON).

For every configuration in a ``bench_models.py`` report: the model's FLOPs (autotune's task
extraction: each task's FLOPs as TVM counts them × its calls per inference), the floor that sets at
this CPU's fp32 peak, and each system's p50 as GFLOP/s and as a share of the peak. Two peaks are
measured here, on the report's thread count:

* ``fp32``: independent FMA chains in vector registers on every thread (AVX-512 where the CPU has
  it, else AVX2), a C loop built with the system's C compiler (``autotune.bench.peaks``): no
  kernel can beat it;
* ``bf16``, ``int8``: the same chains of ``vdpbf16ps`` and ``vpdpbusd`` (where the CPU has them),
  2 operations per product; a bf16 system (autotune's bf16 builds, OpenVINO's default) is set
  against bf16's peak, an int8 one against int8's;
* ``sgemm``: numpy's BLAS on a 2048² fp32 matmul: what a tuned library reaches.

    python scripts/roofline.py tuning_logs/bench_models/report.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from autotune.bench.peaks import dot_product_peak, fma_peak


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


def system_precision(name: str) -> str:
    """The precision a system of the report computes in: bf16 for autotune's bf16 builds and
    OpenVINO's default (bf16 on AVX512-BF16 CPUs), int8 for int8 builds, else fp32."""
    if "int8" in name:
        return "int8"
    return "bf16" if "bf16" in name or name == "openvino" else "fp32"


def config_roofline(config: dict, gflop: float, peaks: dict) -> dict:
    """The configuration's floor at each precision's peak and each system's GFLOP/s and share of
    its own precision's peak."""
    rates = {name: gflop / (stats["p50_ms"] / 1e3) for name, stats in config["systems"].items()}
    systems = {}
    for name, rate in rates.items():
        precision = system_precision(name)
        peak = (peaks.get(precision) or peaks["fp32"])["gflops"]
        systems[name] = {"gflops": round(rate, 1), "precision": precision,
                         "share_of_fma_peak": round(rate / peaks["fp32"]["gflops"], 3),
                         "share_of_precision_peak": round(rate / peak, 3)}
    floors = {p: round(gflop / v["gflops"] * 1e3, 2) for p, v in peaks.items() if isinstance(v, dict)
              and p in ("fp32", "bf16", "int8")}
    return {"model": config["model"], "batch": config["batch"], "seq": config["seq"],
            "gflop": round(gflop, 3), "floor_ms": floors, "systems": systems}


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
    peaks = {"threads": threads, "fp32": {"gflops": fma_peak(threads), "instruction": "vfmadd (FMA)"},
             "sgemm": sgemm_peak()}
    for precision, instruction in (("bf16", "vdpbf16ps"), ("int8", "vpdpbusd")):
        peak = dot_product_peak(precision, threads)
        if peak is not None:
            peaks[precision] = {"gflops": peak, "instruction": instruction}
    configs = []
    for name, results in report["models"].items():
        model = model_path(name, args.out_dir, args.exported_dir)
        for config in results["configs"]:
            gflop = model_gflop(name, model, config["batch"], config["seq"])
            configs.append(config_roofline(config, gflop, peaks))
    print(json.dumps({"peaks": peaks, "configs": configs}, indent=1))


if __name__ == "__main__":
    main()
