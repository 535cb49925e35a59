"""``bench --generate``: a translation generator timed as a translation service sees it.

Per batch size × source length: the latency of one ``generate`` call (p50/p90/p95/p99), sentences
and generated tokens per second, side by side with ONNX Runtime running the folder's own ONNX
files in the same search loop (``runtime.generation``: one loop, for correctness and for speed),
the two taking turns (``bench.timing``). Every sentence generates exactly ``new_tokens`` tokens
(``min_new_tokens``, as transformers' benchmarks set it), so tokens per second compare like with
like; whether both systems chose the same tokens is reported per point.

At batch 1 the time a step spends outside the decoder's kernels (the Python loop, VM dispatch,
cache handling, choosing the token) is measured: a step's wall time inside the loop against the
same step's compiled function called alone on the same device arguments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..common.results import OMIT_NONE, Result
from ..errors import AutotuneError
from .timing import BenchConfig, runs_of, summarize, time_in_turns, turn_ratios

OVERHEAD_STEPS = 50  # repeats of the step alone, for its kernels' time


@dataclass
class GenerationStats(Result):
    """One system's ``generate`` calls at one point of the grid."""

    runs: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    sentences_per_s: float
    tokens_per_s: float  # generated tokens (every beam's sentence counted once)
    tokens_per_s_vs_onnxruntime: float | None = field(default=None, metadata=OMIT_NONE)
    turns_vs_onnxruntime: dict | None = field(default=None, metadata=OMIT_NONE)  # p50 ratio per turn


@dataclass
class GenerationPoint(Result):
    """One batch size × source length of the grid."""

    batch: int
    source_length: int
    new_tokens: int
    beams: int
    systems: dict[str, GenerationStats]
    same_tokens: float | None = field(default=None, metadata=OMIT_NONE)  # share of sentences equal to ORT's


@dataclass
class StepOverhead(Result):
    """Where a cached decoder step's time goes at batch 1."""

    source_length: int
    step_ms: float  # one step of the loop, wall clock (median)
    kernels_ms: float  # the step's compiled function alone, same arguments (median)
    overhead_share: float  # (step - kernels) / step


@dataclass
class GenerationBenchResult(Result):
    generator: str
    threads: int
    new_tokens: int
    beams: int
    points: list[GenerationPoint]
    overhead: StepOverhead | None = None
    plots: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GenerationGrid:
    """What ``bench --generate`` measures."""

    batches: tuple[int, ...] = (1, 4, 8)
    source_lengths: tuple[int, ...] = (16, 32, 64, 128)
    new_tokens: int = 32
    beams: int = 1
    peers: bool = True  # ONNX Runtime's loop beside the generator
    seed: int = 0


def bench_generation(manifest_path: str | Path, grid: GenerationGrid = GenerationGrid(),
                     config: BenchConfig = BenchConfig(count=20, warmup=2), model_folder: str | Path | None = None,
                     plot_dir: str | Path | None = None) -> GenerationBenchResult:
    """Time the generator ``manifest_path`` (``compile --task seq2seq``'s ``NAME.json``) over
    ``grid`` (each point for ``config``'s count or duration), and ONNX Runtime's loop over the
    folder it was compiled from (``model_folder`` where it moved)."""
    from ..runtime.generator import Translator, is_generator_manifest
    from ..targets.host import usable_cores

    path = Path(manifest_path)
    if not is_generator_manifest(path):
        raise AutotuneError(f"{path}: bench --generate takes a translation generator's manifest "
                            "(compile --task seq2seq's NAME.json)")
    translator = Translator(path)
    threads = config.threads or usable_cores()
    reference = _reference(translator, model_folder, threads) if grid.peers else None
    rng = np.random.default_rng(grid.seed)
    points = [_point(translator, reference, batch, length, grid, config, rng)
              for batch in grid.batches for length in grid.source_lengths]
    timed_steps = 1 in grid.batches and grid.new_tokens >= 3  # two cached steps at least, for their gap
    overhead = step_overhead(translator, min(grid.source_lengths), grid.new_tokens, rng) if timed_steps else None
    result = GenerationBenchResult(str(path), threads, grid.new_tokens, grid.beams, points, overhead)
    if plot_dir is not None:
        result.plots = _plots(result, Path(plot_dir), path.stem)
    return result


def _reference(translator, model_folder, threads: int):
    """ONNX Runtime on the generator's own ONNX files."""
    from ..frontend.seq2seq import OnnxRuntimeSteps, read_seq2seq

    folder = Path(model_folder or translator.manifest["model"])
    if not folder.is_dir():
        raise AutotuneError(f"the translation model {folder} for ONNX Runtime is missing: pass --model DIR")
    return OnnxRuntimeSteps(read_seq2seq(folder), threads)


def _source(translator, batch: int, length: int, rng) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.integers(0, translator.vocab, (batch, length))
    return ids, np.ones_like(ids)


def _point(translator, reference, batch: int, length: int, grid: GenerationGrid, config: BenchConfig,
           rng) -> GenerationPoint:
    from ..runtime.generation import generate

    translator.steps(batch * grid.beams, length, grid.new_tokens)  # outside the ranges: one clear error first
    settings = translator.config(grid.new_tokens, grid.beams, min_new_tokens=grid.new_tokens)
    ids, mask = _source(translator, batch, length, rng)
    outputs: dict[str, np.ndarray] = {}

    def runner(name: str, make_steps):
        def run():
            outputs[name] = generate(make_steps(), ids, mask, settings)
        return run

    runners = {"autotune": runner("autotune", lambda: translator.steps(batch * grid.beams, length, grid.new_tokens))}
    if reference is not None:
        runners["onnxruntime"] = runner("onnxruntime", lambda: reference)
    turns = time_in_turns(runners, config)
    systems = {name: _stats(runs_of(system), batch, outputs[name]) for name, system in turns.items()}
    same = None
    if reference is not None:
        ours, theirs = outputs["autotune"], outputs["onnxruntime"]
        same = float(np.mean(np.all(ours == theirs, axis=1))) if ours.shape == theirs.shape else 0.0
        peer = systems["onnxruntime"]
        for name, stats in systems.items():
            if name != "onnxruntime":
                stats.tokens_per_s_vs_onnxruntime = stats.tokens_per_s / peer.tokens_per_s
                stats.turns_vs_onnxruntime = turn_ratios(turns[name], turns["onnxruntime"])
    return GenerationPoint(batch, length, grid.new_tokens, grid.beams, systems, same)


def _stats(samples: list[float], batch: int, output: np.ndarray) -> GenerationStats:
    stats = summarize(samples, batch)
    generated = batch * (output.shape[1] - 1)  # every sentence ran to new_tokens (min_new_tokens)
    return GenerationStats(stats.runs, stats.p50_ms, stats.p90_ms, stats.p95_ms, stats.p99_ms, stats.mean_ms,
                           sentences_per_s=stats.throughput_per_s,
                           tokens_per_s=generated * stats.runs / max(float(np.sum(samples)), 1e-12))


class _StepClock:
    """The generator's steps, with the start of every cached step stamped."""

    def __init__(self, steps):
        self.steps, self.starts = steps, []

    def encode(self, input_ids, attention_mask):
        return self.steps.encode(input_ids, attention_mask)

    def first_step(self, tokens, encoded):
        return self.steps.first_step(tokens, encoded)

    def next_step(self, tokens, encoded, cache):
        self.starts.append(time.perf_counter())
        return self.steps.next_step(tokens, encoded, cache)

    def select(self, state, rows):
        return self.steps.select(state, rows)


def step_overhead(translator, length: int, new_tokens: int, rng, batch: int = 1) -> StepOverhead:
    """A cached step's wall time in the greedy loop at ``batch`` against its compiled function alone."""
    from ..runtime.generation import generate

    settings = translator.config(new_tokens, min_new_tokens=new_tokens)
    ids, mask = _source(translator, batch, length, rng)
    gaps = []
    for _ in range(3):
        clock = _StepClock(translator.steps(batch, length, new_tokens))
        generate(clock, ids, mask, settings)
        gaps += list(np.diff(clock.starts))
    model, function, args = clock.steps.last_call  # the last cached step, replayed alone
    alone = []
    for _ in range(OVERHEAD_STEPS):
        start = time.perf_counter()
        model.run_on_device(function, args)
        alone.append(time.perf_counter() - start)
    step_s, kernels_s = float(np.median(gaps)), float(np.median(alone))
    return StepOverhead(length, step_s * 1e3, kernels_s * 1e3, max(step_s - kernels_s, 0.0) / step_s)


def _plots(result: GenerationBenchResult, out_dir: Path, name: str) -> list[str]:
    from .plots import latency_and_throughput

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"batch": p.batch, "seq": p.source_length,
             "systems": {s: stats.as_dict() for s, stats in p.systems.items()}} for p in result.points]
    return latency_and_throughput(name, rows, out_dir, ("tokens_per_s", "generated tokens/s"), "source tokens")
