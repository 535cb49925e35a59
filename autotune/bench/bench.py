"""``bench``: an artifact's latency percentiles and throughput, side by side with its peers."""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from pathlib import Path

from ..common.results import OMIT_NONE, Result
from ..errors import AutotuneError
from .peers import TURN_PEERS
from .timing import (REFERENCES, BenchConfig, StreamStats, SystemStats, runs_of, summarize, time_in_turns,
                     time_runs, time_streams)

PEERS = ("onnxruntime", "untuned")  # the default peers (``peers.PEERS_ALL``: every one there is)
RESERVED = ("autotune", *TURN_PEERS, "untuned_tvm")  # the systems' names in a result


@dataclass
class BenchResult(Result):
    """A benchmark's systems (autotune, other builds, peers) on the same inputs and threads."""

    artifact: str
    threads: int
    batch: int
    inputs: dict[str, list[int]]
    systems: dict[str, SystemStats]
    peak_rss_mb: float = 0.0  # of the benchmark's process, every system included
    streams: dict[str, StreamStats] | None = field(default=None, metadata=OMIT_NONE)


def _others(others: dict[str, Path], inputs: dict) -> dict:
    """The other builds to take turns with, loaded; each must take the benchmark's inputs."""
    from ..frontend.inputs import fits
    from ..runtime.loader import load

    loaded = {}
    for name, path in others.items():
        if name in RESERVED:
            raise AutotuneError(f"another build cannot be named {name!r}: a system of the benchmark is")
        other = load(path)
        specs = {s.name: s for s in other.manifest.input_specs()}
        if sorted(specs) != sorted(inputs) or not all(fits(specs[n], a) for n, a in inputs.items()):
            shapes = {n: f"{a.dtype}{list(a.shape)}" for n, a in inputs.items()}
            raise AutotuneError(f"{path} ({name}) does not take the benchmark's inputs {shapes}: it takes "
                                f"{[s.as_dict() for s in specs.values()]}")
        loaded[name] = other
    return loaded


@dataclass
class ShapesBenchResult(Result):
    """A range artifact benchmarked at several shapes: a ``BenchResult`` per shape (its inputs'
    distinct shapes: ``1x77``, or ``1x32,1x5`` for a source and a target)."""

    artifact: str
    shapes: dict[str, BenchResult]


def bench_shapes(so_path: str | Path, shapes: str | None = None, config: BenchConfig = BenchConfig(),
                 model_path: str | Path | None = None, peers: tuple[str, ...] = PEERS,
                 others: dict[str, Path] | None = None) -> ShapesBenchResult:
    """Benchmark a range artifact at each of ``shapes`` (of its first ranged input, ``"1x77,4x128"``,
    or of the input named, ``"decoder_input_ids=1x5,2x13"``; default: its validation shapes, spread
    over the range), every system at the same shape."""
    from ..deploy.validate import validation_sizes
    from ..frontend.buckets import ShapePlan
    from ..frontend.ranged import parse_tune_shapes
    from ..runtime.manifest import read_manifest

    if not Path(so_path).is_file():
        raise AutotuneError(f"artifact not found: {so_path}")
    manifest = read_manifest(Path(so_path))  # which shapes to time; each bench() verifies as it loads
    if not manifest.shape_plan:
        raise AutotuneError(f"--shapes needs a range artifact; {so_path} serves one shape")
    plan = ShapePlan.from_dict(manifest.shape_plan)
    chosen = parse_tune_shapes(shapes, plan, "--shapes") if shapes else validation_sizes(plan)
    results = {}
    for sizes in chosen:
        shapes_of_inputs = dict.fromkeys("x".join(map(str, plan.shape_of(name, sizes))) for name in plan.inputs)
        results[",".join(shapes_of_inputs)] = bench(so_path, config, model_path, peers, others, sizes=sizes)
    return ShapesBenchResult(str(so_path), results)


def bench(so_path: str | Path, config: BenchConfig = BenchConfig(), model_path: str | Path | None = None,
          peers: tuple[str, ...] = PEERS, others: dict[str, Path] | None = None,
          inputs_path: str | Path | None = None, sizes: dict[str, int] | None = None) -> BenchResult:
    """Benchmark the artifact and each peer on the same inputs (``inputs_path``, an ``.npz``, or
    inputs the model accepts; a range artifact's at ``sizes`` per ranged dim, else its largest).

    ``others`` names more artifacts of the same model to take turns with (e.g. another build).
    Untuned TVM is timed after the turns (``BenchConfig.untuned_runs``).
    """
    from ..frontend.inputs import inputs_from_file, manifest_inputs
    from ..runtime.loader import load
    from ..targets.host import usable_cores
    from .peers import turn_runner, untuned_runner

    if "untuned" in peers:
        import tvm.relax  # noqa: F401  (the compiler, loaded before the runtime-only loader runs)
    compiled = load(so_path)
    manifest = compiled.manifest
    threads = config.threads or usable_cores()
    specs, inputs = manifest_inputs(manifest, sizes)
    if inputs_path is not None:
        inputs = inputs_from_file(inputs_path, specs)
    batch = next(iter(inputs.values())).shape[0] if inputs and next(iter(inputs.values())).ndim else 1
    source = Path(model_path or manifest.model["path"])
    if peers and not source.is_file():
        raise AutotuneError(f"the ONNX model {source} for the peers is missing: pass --model PATH")
    runners = {"autotune": lambda: compiled(inputs)}
    for name, other in _others(others or {}, inputs).items():
        runners[name] = (lambda model: lambda: model(inputs))(other)
    for peer in (p for p in TURN_PEERS if p in peers):
        runners[peer] = turn_runner(peer, source, inputs, threads)
    turns = time_in_turns(runners, config)
    results = {name: summarize(runs_of(system), batch) for name, system in turns.items()}
    if "untuned" in peers:
        untuned = untuned_runner(source, manifest, inputs)
        runs = min(config.untuned_runs, config.count) if config.duration_s is None else config.untuned_runs
        results["untuned_tvm"] = summarize(time_runs(untuned, BenchConfig(count=runs, warmup=1)), batch)
    for reference in (r for r in REFERENCES if r in results):
        for name, stats in results.items():
            stats.compare_to(reference, results[reference], turns.get(name), turns[reference])
    streams = _streams(config, compiled, source, inputs, threads, batch, peers) if config.streams > 1 else None
    return BenchResult(artifact=str(so_path), threads=threads, batch=batch,
                       inputs={name: list(a.shape) for name, a in inputs.items()}, systems=results,
                       peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, streams=streams)


def _streams(config: BenchConfig, compiled, source: Path, inputs: dict, threads: int, batch: int,
             peers: tuple[str, ...]) -> dict[str, StreamStats]:
    """The artifact (a VM per stream) and ONNX Runtime (one session, as its users share one) under
    ``config.streams`` concurrent requests, one after the other."""
    from .peers import turn_runner

    results = {"autotune": time_streams(lambda: (lambda: compiled(inputs)), config.streams,
                                        config.stream_seconds, batch)}
    if "onnxruntime" in peers:
        shared = turn_runner("onnxruntime", source, inputs, threads)
        results["onnxruntime"] = time_streams(lambda: shared, config.streams, config.stream_seconds, batch)
    return results
