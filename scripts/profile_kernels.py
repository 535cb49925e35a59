#!/usr/bin/env python3
"""Time every kernel of compiled artifacts in place, inside the model, and print JSON.

A kernel timed alone (as the tuner measures it) sees warm caches and no neighbours; inside the model
its inputs come from the previous kernel and its weights from memory. This script runs each
artifact's VM with an instrument that times every kernel call, taking turns between artifacts
round by round (this machine's speed drifts), and reports per kernel the median over rounds of its
time per inference (``autotune.profile``). With several artifacts of the same model (say a
heuristic and a tuned build), kernels line up by name, so the table shows which tasks a build wins
or loses inside the model.

    python scripts/profile_kernels.py heuristic.so tuned.so --rounds 20 --top 15
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))

from autotune.errors import AutotuneError  # noqa: E402


def profile(paths: list[Path], rounds: int, inferences: int) -> dict[str, dict]:
    """Per-artifact summaries; the artifacts (manifests checked) take turns on the same inputs."""
    from autotune.frontend.inputs import manifest_calls
    from autotune.measure.profile import profile_in_turns, summary
    from autotune.runtime import load

    manifest = load(paths[0]).manifest
    for path in paths[1:]:
        load(path)
    timers = profile_in_turns([str(p) for p in paths], manifest_calls(manifest), rounds, inferences)
    return {str(path): summary(timer) for path, timer in zip(paths, timers)}


def table(result: dict[str, dict], top: int) -> list[dict]:
    """Kernels side by side, heaviest (in the first artifact) first."""
    first, *rest = result.values()
    names = sorted({n for r in result.values() for n in r["kernels"]},
                   key=lambda n: -first["kernels"].get(n, {"us": 0})["us"])
    rows = []
    for name in names[:top]:
        row = {"kernel": name, "calls": first["kernels"].get(name, {}).get("calls")}
        for index, r in enumerate([first, *rest]):
            row[f"us_{index}"] = r["kernels"].get(name, {}).get("us")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", type=Path, help="compiled .so files (manifest beside)")
    parser.add_argument("--rounds", type=int, default=10, help="turns per artifact (default 10)")
    parser.add_argument("--inferences", type=int, default=5, help="inferences per turn (default 5)")
    parser.add_argument("--top", type=int, default=20, help="kernels in the side-by-side table")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.artifacts if not p.is_file()]
    if missing:
        parser.error(f"artifact not found: {', '.join(missing)}")
    try:
        result = profile(args.artifacts, args.rounds, args.inferences)
    except AutotuneError as err:  # a manifest missing or not matching its .so
        parser.error(str(err))
    json.dump({"artifacts": {str(i): p for i, p in enumerate(result)},
               "totals": {p: {k: r[k] for k in ("wall_p50_ms", "kernel_sum_ms")} for p, r in result.items()},
               "table": table(result, args.top), "kernels": result}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
