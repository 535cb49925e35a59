#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU (about 6-7 minutes on an H200): install, tune the
# bundled encoder for `--target cuda` on a small budget, compile fp32 and fp16 (validated against
# ONNX Runtime fp32), time them, and time ONNX Runtime's CUDA execution provider where it exists.
# Prints one JSON object on stdout; progress goes to stderr.
#
#   bash scripts/gpu_check.sh [WORKDIR]
#
# Offline machines: put wheels in .whl/ at the repository root (apache-tvm, apache-tvm-ffi, …);
# they are installed from there without an index. The venv sees the system's packages, so a GPU
# image's onnxruntime(-gpu), cuda-bindings and nvcc are used where present.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-$(mktemp -d -t autotune-gpu-XXXXXX)}
PYTHON=${PYTHON:-python3}
SHAPE=(--shape input_ids=1x128)
mkdir -p "$WORK"
log() { echo "gpu_check: $*" >&2; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv >&2 || true

log "venv in $WORK/venv"
"$PYTHON" -m venv --system-site-packages "$WORK/venv"
# shellcheck disable=SC1091
source "$WORK/venv/bin/activate"
PIP=(python -m pip install -q --disable-pip-version-check)
[ -d "$ROOT/.whl" ] && PIP+=(--no-index --find-links "$ROOT/.whl")
"${PIP[@]}" -e "$ROOT" >&2
"${PIP[@]}" onnxruntime-gpu >&2 2>&1 || log "onnxruntime-gpu not installable here; ORT CUDA EP only if present"

export AUTOTUNE_DB="sqlite:///$WORK/tune.db"
MODEL="$WORK/encoder.onnx"
autotune example encoder -o "$MODEL" >&2

log "tune fp32 (64 trials, at most 150 s) and fp16 (32 trials, at most 75 s)"
autotune tune "$MODEL" "${SHAPE[@]}" --target cuda --trials 64 --time-budget 150s --quiet --json \
    > "$WORK/tune_fp32.json"
autotune tune "$MODEL" "${SHAPE[@]}" --target cuda --precision fp16 --trials 32 --time-budget 75s \
    --quiet --json > "$WORK/tune_fp16.json"

for precision in fp32 fp16; do
    log "compile + validate $precision"
    autotune compile "$MODEL" "${SHAPE[@]}" --target cuda --precision "$precision" \
        -o "$WORK/encoder_$precision.so" --json > "$WORK/compile_$precision.json"
    log "bench $precision"
    autotune bench "$WORK/encoder_$precision.so" --count 300 --warmup 20 --no-peers --json \
        > "$WORK/bench_$precision.json"
done

log "ONNX Runtime CUDA EP and the report"
WORK="$WORK" MODEL="$MODEL" python - <<'EOF'
import json
import os
import time
from pathlib import Path

import numpy as np

work = Path(os.environ["WORK"])
load = lambda name: json.loads((work / name).read_text())
report = {"gpu": None, "model": os.environ["MODEL"], "inputs": {"input_ids": [1, 128]}}
try:
    import tvm
    report["gpu"] = {"name": tvm.cuda(0).device_name, "compute_version": tvm.cuda(0).compute_version}
except Exception as err:  # report what we can
    report["gpu"] = {"error": str(err)}
for precision in ("fp32", "fp16"):
    tune, built = load(f"tune_{precision}.json"), load(f"compile_{precision}.json")
    stats = load(f"bench_{precision}.json")["systems"]["autotune"]
    manifest = json.loads(Path(built["manifest"]).read_text())
    report[f"tuned_{precision}"] = {
        "p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"], "cuda_arch": manifest["cuda_arch"],
        "trials": tune["trials_measured"], "failures": tune["failures"],
        "tuning_seconds": tune["tuning_seconds"], "untuned_tasks": len(tune["untuned_tasks"]),
        "validation": built["validation"]}


def ort_cuda():
    try:
        import onnxruntime as ort
    except ImportError:
        return {"available": False, "reason": "onnxruntime not installed"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"available": False, "reason": f"providers {ort.get_available_providers()}"}
    session = ort.InferenceSession(os.environ["MODEL"], providers=["CUDAExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return {"available": False, "reason": "CUDA EP did not initialise"}
    feed = {"input_ids": np.random.default_rng(0).integers(0, 1000, (1, 128), dtype=np.int64)}
    for _ in range(20):
        session.run(None, feed)
    samples = []
    for _ in range(300):
        start = time.perf_counter()
        session.run(None, feed)
        samples.append(1e3 * (time.perf_counter() - start))
    return {"available": True, "p50_ms": float(np.percentile(samples, 50)),
            "p99_ms": float(np.percentile(samples, 99))}


report["onnxruntime_cuda"] = ort_cuda()
print(json.dumps(report, indent=2))
EOF
