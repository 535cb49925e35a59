"""What this host can do at most, measured here: the fp32 FMA peak and the memory bandwidth.

Both come from small C loops built with the system's C compiler and run on the given number of
threads: independent FMA chains held in vector registers (no kernel can beat them), and every
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
    printf("%.3f\n", threads * (double)STEPS * CHAINS * LANES * 2 / seconds / 1e9);
    return 0;
}
"""

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


def memory_bandwidth(threads: int, megabytes: int = STREAM_MB) -> float:
    """GB/s of ``threads`` threads reading a ``megabytes`` buffer."""
    return round(float(_run_c(STREAM_LOOP, [], [str(threads), str(megabytes)])[0]), 1)


def host_key(threads: int) -> str:
    """Which host and thread count a measurement belongs to."""
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "?")
    flags = hashlib.sha256(" ".join(sorted(host_cpu_flags())).encode()).hexdigest()[:12]
    return f"{model} | flags {flags} | {threads} threads"


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
    if not remeasure and key in cached:
        return Peaks(**cached[key])
    peaks = Peaks(fma_peak(threads), memory_bandwidth(threads), threads, key,
                  dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cached[key] = peaks.as_dict()
    partial = cache.with_name(f".{cache.name}.{os.getpid()}")
    partial.write_text(json.dumps(cached, indent=2))
    os.replace(partial, cache)
    return peaks
