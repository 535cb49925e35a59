"""Latency percentiles and throughput of an artifact, side by side with ONNX Runtime and untuned TVM.

The systems take turns in short slices (``time_in_turns``), so machine noise hits them alike; each
system's ratio to ONNX Runtime is given over the whole run (``p50_vs_onnxruntime``) and turn by turn
(``turns_vs_onnxruntime``: both ran within seconds of each other, in the same spell of the machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AutotuneError


@dataclass(frozen=True)
class BenchConfig:
    """How long to measure: ``count`` runs, or for ``duration_s`` if given, after ``warmup`` runs.

    Untuned TVM, tens of times slower than the rest, is timed after the turns for ``untuned_runs``
    runs (at most ``count``): its ratio does not need turns, and a hundred runs of a real model
    would take many minutes.
    """

    count: int = 100
    duration_s: float | None = None
    warmup: int = 10
    threads: int | None = None
    untuned_runs: int = 5


def time_runs(run: Callable[[], object], config: BenchConfig) -> list[float]:
    """Wall-clock seconds of each run after warm-up."""
    return time_interleaved({"run": run}, config)["run"]


INTERLEAVE_SLICES = 10


def turn_order(items: list, turn: int) -> list:
    """``items`` rotated by ``turn``: who goes first changes every turn, so no system always follows
    the same neighbour."""
    shift = turn % len(items) if items else 0
    return items[shift:] + items[:shift]


def time_interleaved(runners: dict[str, Callable[[], object]], config: BenchConfig) -> dict[str, list[float]]:
    """Wall-clock seconds of each runner's runs, the runners taking turns (``time_in_turns``)."""
    return {name: _runs(turns) for name, turns in time_in_turns(runners, config).items()}


def _runs(turns: list[list[float]]) -> list[float]:
    """Every run of every turn, in order."""
    return [seconds for turn in turns for seconds in turn]


def time_in_turns(runners: dict[str, Callable[[], object]], config: BenchConfig
                  ) -> dict[str, list[list[float]]]:
    """Wall-clock seconds of each runner's runs, turn by turn: the runners take turns in short slices.

    On a shared machine the speed drifts over seconds; taking turns spreads every drift over all
    systems alike, so their ratios hold even when the absolute figures move. With several runners,
    each turn starts with one untimed run and the order rotates every slice: a system that ran
    right after ONNX Runtime (whose threads still spin for a while) measured up to 1.4x slower than
    the identical build that ran after it.
    """
    for run in runners.values():
        for _ in range(config.warmup):
            run()
    names = list(runners)
    turns: dict[str, list[list[float]]] = {name: [] for name in names}
    slice_s = config.duration_s / (INTERLEAVE_SLICES * len(names)) if config.duration_s else None
    per_slice = -(-config.count // INTERLEAVE_SLICES)
    for index in range(INTERLEAVE_SLICES):
        for name in turn_order(names, index):
            taken = sum(map(len, turns[name]))
            turns[name].append(_take_turn(runners[name], min(taken + per_slice, config.count) - taken,
                                          slice_s, warm=len(names) > 1))
    return turns


def _take_turn(run: Callable[[], object], goal: int, slice_s: float | None, warm: bool) -> list[float]:
    """``goal`` timed runs (or as many as ``slice_s`` allows); one untimed first if ``warm``."""
    samples: list[float] = []
    if slice_s is None and goal <= 0:
        return samples
    if warm:
        run()
    deadline = time.perf_counter() + slice_s if slice_s else None
    while (len(samples) < goal) if deadline is None else (time.perf_counter() < deadline):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return samples


def turn_ratios(turns: list[list[float]], reference: list[list[float]]) -> dict | None:
    """The median run of each turn over the reference's median in the same slice, seconds apart.

    The ratio of two p50s over a whole run mixes the machine's fast and slow spells; per turn, both
    systems ran in the same spell. Returns the median, lowest and highest of those ratios (None
    when no turn timed both)."""
    ratios = [float(np.median(mine) / np.median(theirs)) for mine, theirs in zip(turns, reference)
              if mine and theirs]
    if not ratios:
        return None
    return {"median": float(np.median(ratios)), "lowest": min(ratios), "highest": max(ratios),
            "turns": len(ratios)}


def summarize(samples: list[float], batch: int) -> dict:
    """p50/p90/p95/p99 and mean in ms, and throughput in inferences (samples × batch) per second."""
    ms = np.asarray(samples) * 1e3
    return {"runs": len(samples), "mean_ms": float(ms.mean()),
            **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 95, 99)},
            "throughput_per_s": float(batch * len(samples) / max(float(np.sum(samples)), 1e-12))}


def _onnxruntime_runner(model_path: Path, inputs: dict[str, np.ndarray], threads: int):
    from .artifact import onnxruntime_session

    session = onnxruntime_session(model_path, threads)
    return lambda: session.run(None, inputs)


def _untuned_runner(model_path: Path, manifest: dict, inputs: dict[str, np.ndarray]):
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from .artifact import build_untuned
    from .frontend import load_model

    shapes = {spec["name"]: tuple(spec["shape"]) for spec in manifest["inputs"]}
    model = load_model(model_path, shapes)
    target = tvm.target.Target(manifest["target"])
    vm = VirtualMachine(build_untuned(model.relax_mod, target), tvm.cpu())
    args = [tvm.runtime.tensor(inputs[spec["name"]]) for spec in manifest["inputs"]]
    return lambda: vm["main"](*args)


def bench(so_path: str | Path, config: BenchConfig = BenchConfig(), model_path: str | Path | None = None,
          peers: tuple[str, ...] = ("onnxruntime", "untuned"), others: dict[str, Path] | None = None,
          inputs_path: str | Path | None = None) -> dict:
    """Benchmark the artifact and each peer on the same inputs (``inputs_path``, an ``.npz``, or
    inputs the model accepts); returns a JSON-able dict.

    ``others`` names more artifacts of the same model to take turns with (e.g. another build).
    """
    from .frontend import inputs_from_file, manifest_inputs
    from .runtime import load
    from .targets import physical_cores

    if "untuned" in peers:
        import tvm.relax  # noqa: F401  (the compiler, loaded before the runtime-only loader runs)
    compiled = load(so_path)
    manifest = compiled.manifest
    threads = config.threads or physical_cores()
    specs, inputs = manifest_inputs(manifest)
    if inputs_path is not None:
        inputs = inputs_from_file(inputs_path, specs)
    batch = specs[0].shape[0] if specs and specs[0].shape else 1
    source = Path(model_path or manifest["model"]["path"])
    if peers and not source.is_file():
        raise AutotuneError(f"the ONNX model {source} for the peers is missing: pass --model PATH")
    runners = {"autotune": lambda: compiled(inputs)}
    for name, path in (others or {}).items():
        if name in (*runners, "onnxruntime", "untuned_tvm"):
            raise AutotuneError(f"another build cannot be named {name!r}: a system of the benchmark is")
        other = load(path)
        if other.manifest["inputs"] != manifest["inputs"]:
            raise AutotuneError(f"{path} ({name}) takes other inputs than {so_path}: "
                                f"{other.manifest['inputs']} vs {manifest['inputs']}")
        runners[name] = (lambda model: lambda: model(inputs))(other)
    if "onnxruntime" in peers:
        runners["onnxruntime"] = _onnxruntime_runner(source, inputs, threads)
    turns = time_in_turns(runners, config)
    results = {name: summarize(_runs(system), batch) for name, system in turns.items()}
    if "untuned" in peers:
        untuned = _untuned_runner(source, manifest, inputs)
        runs = min(config.untuned_runs, config.count) if config.duration_s is None else config.untuned_runs
        results["untuned_tvm"] = summarize(time_runs(untuned, BenchConfig(count=runs, warmup=1)), batch)
    reference = results.get("onnxruntime")
    for name, stats in results.items():
        if reference:
            stats["p50_vs_onnxruntime"] = stats["p50_ms"] / reference["p50_ms"]
            if name in turns and name != "onnxruntime":
                stats["turns_vs_onnxruntime"] = turn_ratios(turns[name], turns["onnxruntime"])
    return {"artifact": str(so_path), "threads": threads, "batch": batch,
            "inputs": {s.name: list(s.shape) for s in specs}, "systems": results}
