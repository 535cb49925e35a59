"""What this host can do at most, measured here: the fp32 FMA peak, the bf16 and int8 dot-product
peaks (``vdpbf16ps``, ``vpdpbusd``, where the CPU has them) and the memory bandwidth.

They come from small C loops built with the system's C compiler and run on the given number of
threads: independent FMA (or dot-product) chains held in vector registers (no kernel can beat
them), and every
thread streaming its share of a buffer far larger than any cache. A measurement is kept in
``tuning_logs/peaks.json`` with the host it was made on (CPU model, flags, threads) and its date,
and reused for that host unless a new one is asked for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..common.results import Result
from ..errors import AutotuneError
from ..targets.host import host_cpu_flags

CACHE = Path("tuning_logs/peaks.json")
STREAM_MB = 1024  # the buffer the bandwidth loop reads: larger than a server's last-level cache

FMA_LOOP = r"""
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(DOT_BF16)  /* vdpbf16ps: 16 lanes x a pair of bf16 products, accumulated in fp32 */
typedef __m512 vec;
typedef __m512bh operand;
#define OPS_PER_STEP (16 * 2 * 2)
#define STEP(acc) _mm512_dpbf16_ps(acc, left, right)
#define OPERAND(x) ((operand)_mm512_set1_epi32(x))
#define ZERO() _mm512_set1_ps(0.0f)
#elif defined(DOT_VNNI)  /* vpdpbusd: 16 lanes x 4 u8*i8 products, accumulated in int32 */
typedef __m512i vec;
typedef __m512i operand;
#define OPS_PER_STEP (16 * 4 * 2)
#define STEP(acc) _mm512_dpbusd_epi32(acc, left, right)
#define OPERAND(x) _mm512_set1_epi32(x)
#define ZERO() _mm512_set1_epi32(0)
#elif defined(__AVX512F__)
typedef __m512 vec;
typedef __m512 operand;
#define OPS_PER_STEP (16 * 2)
#define STEP(acc) _mm512_fmadd_ps(acc, left, right)
#define OPERAND(x) _mm512_set1_ps(1.0000001f)
#define ZERO() _mm512_set1_ps(1e-9f)
#else
typedef __m256 vec;
typedef __m256 operand;
#define OPS_PER_STEP (8 * 2)
#define STEP(acc) _mm256_fmadd_ps(acc, left, right)
#define OPERAND(x) _mm256_set1_ps(1.0000001f)
#define ZERO() _mm256_set1_ps(1e-9f)
#endif
#if defined(DOT_BF16)
#define CHAINS 24  /* vdpbf16ps's latency x throughput exceeds the FMA's: more chains in flight */
#else
#define CHAINS 12  /* FMA, vpdpbusd (GCC keeps vpdpbusd's accumulators in zmm0-15: 24 chains spill) */
#endif
#define STEPS 50000000L
static void *chains(void *out) {
    vec acc[CHAINS];
    operand left = OPERAND(0x3f803f80), right = OPERAND(0x00010001);
    for (int i = 0; i < CHAINS; i++) acc[i] = ZERO();
    for (long step = 0; step < STEPS; step++) {
#pragma GCC unroll 24
        for (int i = 0; i < CHAINS; i++) acc[i] = STEP(acc[i]);
    }
    float sum = 0.0f, lanes[16];
    for (int i = 0; i < CHAINS; i++) {
        vec last = acc[i];  /* a copy: taking acc's own address keeps the chains in memory */
        memcpy(lanes, &last, sizeof(last) < sizeof(lanes) ? sizeof(last) : sizeof(lanes));
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
    printf("%.3f\n", threads * (double)STEPS * CHAINS * OPS_PER_STEP / seconds / 1e9);
    return 0;
}
"""
# The dot-product instructions measured beside the FMA: their C macro, compiler flags, CPU flag.
DOT_PRODUCTS = {"bf16": ("DOT_BF16", ["-mavx512f", "-mavx512bf16"], "avx512_bf16"),
                "int8": ("DOT_VNNI", ["-mavx512f", "-mavx512vnni"], "avx512_vnni")}

STREAM_LOOP = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define PASSES 4
typedef struct { const double *start; long count; double sum; } part;
static void *stream(void *arg) {
    part *p = arg;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int pass = 0; pass < PASSES; pass++)
        for (long i = 0; i + 3 < p->count; i += 4) {
            s0 += p->start[i]; s1 += p->start[i + 1]; s2 += p->start[i + 2]; s3 += p->start[i + 3];
        }
    p->sum = s0 + s1 + s2 + s3;
    return NULL;
}
int main(int argc, char **argv) {
    int threads = atoi(argv[1]);
    long bytes = atol(argv[2]) << 20, count = bytes / sizeof(double);
    double *data = aligned_alloc(64, bytes);
    memset(data, 1, bytes);
    pthread_t ids[256];
    part parts[256];
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int t = 0; t < threads; t++) {
        parts[t] = (part){data + t * (count / threads), count / threads, 0};
        pthread_create(&ids[t], NULL, stream, &parts[t]);
    }
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) * 1e-9;
    printf("%.3f %g\n", PASSES * (double)bytes / seconds / 1e9, parts[0].sum);
    return 0;
}
"""


@dataclass
class Peaks(Result):
    """This host's roofs on ``threads`` threads, and when and where they were measured."""

    fma_gflops: float  # fp32 fused multiply-adds, 2 FLOPs each
    bandwidth_gbs: float  # reading memory, GB/s
    threads: int
    host: str
    measured_at: str
    bf16_gflops: float | None = None  # vdpbf16ps, 2 FLOPs per product (None: the CPU lacks it)
    int8_gops: float | None = None  # vpdpbusd, 2 operations per product

    def compute_peak(self, precision: str) -> float:
        """The roof of ``precision``'s dot products (fp32's FMA where the precision has none here)."""
        peak = {"bf16": self.bf16_gflops, "int8": self.int8_gops}.get(precision)
        return peak or self.fma_gflops

    def floor_s(self, flops: float, bytes_: float, precision: str = "fp32") -> float:
        """The least time work of ``flops`` over ``bytes_`` can take under these roofs."""
        return max(flops / (self.compute_peak(precision) * 1e9), bytes_ / (self.bandwidth_gbs * 1e9))

    @property
    def ridge(self) -> float:
        """The arithmetic intensity (FLOP per byte) from which a kernel is compute bound."""
        return self.fma_gflops / self.bandwidth_gbs


def _run_c(source: str, flags: list[str], args: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="autotune-peak-") as folder:
        path, binary = Path(folder) / "loop.c", Path(folder) / "loop"
        path.write_text(source)
        try:
            subprocess.run(["cc", "-O3", *flags, str(path), "-o", str(binary), "-lpthread"], check=True,
                           capture_output=True, text=True)
            return subprocess.run([str(binary), *args], check=True, capture_output=True,
                                  text=True).stdout.split()
        except (OSError, subprocess.CalledProcessError) as err:
            raise AutotuneError(f"cannot measure this host's peaks with the C compiler cc: "
                                f"{getattr(err, 'stderr', '') or err}") from None


def fma_peak(threads: int) -> float:
    """GFLOP/s of independent vector FMA chains on ``threads`` threads."""
    isa = ["-mavx512f"] if "avx512f" in host_cpu_flags() else ["-mavx2", "-mfma"]
    return round(float(_run_c(FMA_LOOP, isa, [str(threads)])[0]), 1)


def dot_product_peak(precision: str, threads: int) -> float | None:
    """G(FL)OP/s of independent ``vdpbf16ps`` (bf16) or ``vpdpbusd`` (int8) chains on ``threads``
    threads, 2 operations per product as for the FMA; None where the CPU lacks the instruction."""
    macro, flags, cpu_flag = DOT_PRODUCTS[precision]
    if cpu_flag not in host_cpu_flags():
        return None
    return round(float(_run_c(FMA_LOOP, [*flags, f"-D{macro}"], [str(threads)])[0]), 1)


def memory_bandwidth(threads: int, megabytes: int = STREAM_MB) -> float:
    """GB/s of ``threads`` threads reading a ``megabytes`` buffer."""
    return round(float(_run_c(STREAM_LOOP, [], [str(threads), str(megabytes)])[0]), 1)


def host_key(threads: int) -> str:
    """Which host, thread count and measuring code a measurement belongs to."""
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "?")
    flags = hashlib.sha256(" ".join(sorted(host_cpu_flags())).encode()).hexdigest()[:12]
    loops = hashlib.sha256((FMA_LOOP + STREAM_LOOP).encode()).hexdigest()[:8]  # remeasured when they change
    return f"{model} | flags {flags} | loops {loops} | {threads} threads"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def host_peaks(threads: int, remeasure: bool = False, cache: Path = CACHE) -> Peaks:
    """This host's peaks on ``threads`` threads: from the cache when measured here before, else
    measured now (and cached)."""
    key = host_key(threads)
    try:
        cached = json.loads(cache.read_text())
    except (OSError, ValueError):
        cached = {}
    if not remeasure and key in cached and "bf16_gflops" in cached[key]:
        return Peaks(**cached[key])
    peaks = Peaks(fma_peak(threads), memory_bandwidth(threads), threads, key,
                  dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  dot_product_peak("bf16", threads), dot_product_peak("int8", threads))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cached[key] = peaks.as_dict()
    partial = cache.with_name(f".{cache.name}.{os.getpid()}")
    partial.write_text(json.dumps(cached, indent=2))
    os.replace(partial, cache)
    return peaks
