#!/usr/bin/env python3
"""How close each system of a ``bench_models.py`` run came to this CPU's fp32 peak (JSON).

For every configuration in a ``bench_models.py`` report: the model's FLOPs (autotune's task
extraction: each task's FLOPs as TVM counts them × its calls per inference), the floor that sets at
this CPU's fp32 peak, and each system's p50 as GFLOP/s and as a share of the peak. Two peaks are
measured here, on the report's thread count:

* ``fma``: independent FMA chains in vector registers on every thread (AVX-512 where the CPU has
  it, else AVX2), a C loop built with the system's C compiler: no kernel can beat it;
* ``sgemm``: numpy's BLAS on a 2048² fp32 matmul: what a tuned library reaches.

    python scripts/roofline.py tuning_logs/bench_models/report.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

FMA_LOOP = r"""
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __AVX512F__
typedef __m512 vec;
#define LANES 16
#define FMA _mm512_fmadd_ps
#define SET _mm512_set1_ps
#else
typedef __m256 vec;
#define LANES 8
#define FMA _mm256_fmadd_ps
#define SET _mm256_set1_ps
#endif
#define CHAINS 12
#define STEPS 50000000L
static void *chains(void *out) {
    vec acc[CHAINS], scale = SET(1.0000001f), shift = SET(1e-9f);
    for (int i = 0; i < CHAINS; i++) acc[i] = SET((float)i);
    for (long step = 0; step < STEPS; step++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = FMA(acc[i], scale, shift);
    }
    float sum = 0.0f, lanes[LANES];
    for (int i = 0; i < CHAINS; i++) {
        memcpy(lanes, &acc[i], sizeof(lanes));
        sum += lanes[0];
    }
    *(float *)out = sum;
    return NULL;
}
int main(int argc, char **argv) {
    int threads = atoi(argv[1]);
    pthread_t ids[256];
    float sums[256];
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, chains, &sums[t]);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) * 1e-9;
    printf("%.3f %d\n", threads * (double)STEPS * CHAINS * LANES * 2 / seconds / 1e9, LANES);
    return 0;
}
"""


def fma_peak(threads: int) -> dict:
    """GFLOP/s of independent vector FMA chains on ``threads`` threads (C, built here)."""
    from autotune.targets.host import host_cpu_flags

    isa = ["-mavx512f"] if "avx512f" in host_cpu_flags() else ["-mavx2", "-mfma"]
    with tempfile.TemporaryDirectory() as folder:
        source, binary = Path(folder) / "fma.c", Path(folder) / "fma"
        source.write_text(FMA_LOOP)
        subprocess.run(["cc", "-O3", *isa, str(source), "-o", str(binary), "-lpthread"], check=True)
        gflops, lanes = subprocess.run([str(binary), str(threads)], check=True, capture_output=True,
                                       text=True).stdout.split()
    return {"gflops": round(float(gflops), 1), "lanes": int(lanes)}


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
    peaks = {"threads": threads, "fma": fma_peak(threads), "sgemm": sgemm_peak()}
    configs = []
    for name, results in report["models"].items():
        model = model_path(name, args.out_dir, args.exported_dir)
        for config in results["configs"]:
            gflop = model_gflop(name, model, config["batch"], config["seq"])
            configs.append(config_roofline(config, gflop, peaks["fma"]["gflops"]))
    print(json.dumps({"peaks": peaks, "configs": configs}, indent=1))


if __name__ == "__main__":
    main()
