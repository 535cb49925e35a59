"""autotune: automated tuning of Transformer inference on Apache TVM.

``tune`` and ``compile`` drive the compiler, ``bench`` times an artifact against its peers
(``bench_generate``: a translation generator's ``generate`` calls), and
``load`` is the production loader, which imports only TVM's runtime. The compiler's modules load on
first use, so ``import autotune`` stays cheap. ``manual`` holds the hook for hand schedules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .common.version import __version__
from .errors import AutotuneError, ValidationFailed
from .runtime import CompiledModel, load
from .schedules import manual

if TYPE_CHECKING:
    from .bench.bench import BenchResult
    from .bench.generation import GenerationBenchResult
    from .jobs.compile import CompileResult
    from .jobs.seq2seq import Seq2SeqCompileResult
    from .jobs.seq2seq_tune import Seq2SeqTuneSummary
    from .jobs.tune import TuneSummary
    from .measure.config import MeasureConfig
    from .search.driver import SearchConfig

__all__ = ["AutotuneError", "CompiledModel", "ValidationFailed", "__version__", "bench", "bench_generate", "compile",
           "load", "manual", "tune"]


def tune(model: str | Path, shapes: dict[str, tuple[int, ...]] | None = None, target="host",
         db: str | None = None, trials: int | None = None, time_budget_s: float | None = None,
         reuse: bool = True, config: SearchConfig | None = None, fusion: str = "full",
         manual: Sequence[str | Path] = (), progress: Callable[[dict], None] | None = None,
         rpc: str | None = None, rpc_key: str | None = None, precision: str = "fp32",
         confirm: bool = True, trust_runners: Sequence[str] | None = None,
         measure: MeasureConfig | None = None, tune_shapes: str | None = None, task: str = "model",
         max_new_tokens: int = 32) -> TuneSummary | Seq2SeqTuneSummary:
    """Tune every task of an ONNX model; every measurement goes to the database.

    Args:
        model: the ONNX file; with ``task="seq2seq"``, a translation model's folder in Hugging Face
            Optimum's layout, whose three parts are tuned as one job (``shapes`` names only the
            source, ``{"input_ids": "1..8x1..64"}``, rows counting sentences × beams).
        max_new_tokens: ``task="seq2seq"``: the longest output (the KV cache's capacity).
        shapes: a frozen shape per input with dynamic dims, e.g. ``{"input_ids": (1, 128)}``, or
            a range per dim, ``{"input_ids": ((1, 8), (1, 128))}`` or ``{"input_ids": "1..8x1..128"}``
            (inputs sharing a dim in the model share it).
        target: ``host``, ``avx512``, ``avx2``, ``cuda``, ``cuda-sm80|89|90``, TVM target JSON or
            a tag, or a ``tvm.target.Target``.
        db: database URL (default ``$AUTOTUNE_DB``, else ``sqlite:///tuning_logs/autotune.db``).
        trials, time_budget_s: the budget; at least one is required.
        reuse: take tasks that another job tuned on this target from the database.
        config: evolutionary search settings (``autotune.search.driver.SearchConfig``).
        fusion: ``full`` (operators fused, attention blocks one task) or ``none``.
        manual: hand-schedule modules (``autotune.manual``), measured before the search.
        progress: called with a dict after every search round.
        rpc, rpc_key: an RPC tracker ``HOST:PORT`` and key whose servers time the candidates.
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8`` (``bf16``/``int8``: native dot products).
        confirm: re-time each task's finalists side by side at the end.
        trust_runners: reuse only records these runners timed (``local``, ``rpc:KEY``).
        measure: builders, timeouts and repeats (``autotune.measure.config.MeasureConfig``).
        tune_shapes: for a range, the shapes to tune (of the first ranged input), e.g.
            ``"1x32,8x128"``; default: each ranged dim near the middle and at the top of its range.

    Returns:
        The job's ``TuneSummary`` (readable by key too, e.g. ``summary["job_id"]``).

    Raises:
        AutotuneError: a bad model, shape, target, budget or database, in one line.
    """
    from .jobs.tune import TuneOptions
    from .jobs.tune import tune as run
    from .measure.config import MeasureConfig
    from .search.driver import SearchConfig

    options = TuneOptions(shapes, target, db, trials, time_budget_s, reuse, config or SearchConfig(), fusion,
                          tuple(manual), rpc, rpc_key, precision, confirm,
                          tuple(trust_runners) if trust_runners is not None else None,
                          measure or MeasureConfig(), tune_shapes)
    if task == "seq2seq":
        from .jobs.generator_parts import source_of
        from .jobs.seq2seq_tune import tune_seq2seq

        return tune_seq2seq(model, source_of(_source_dims(shapes)), max_new_tokens, options, progress)
    return run(model, options, progress)


def _source_dims(shapes: dict | None) -> dict:
    from .frontend.buckets import as_dims

    return {name: as_dims(shape, f"shapes[{name!r}]") for name, shape in (shapes or {}).items()}


def compile(model: str | Path, output: str | Path,  # noqa: A001 - the verb users know
            shapes: dict[str, tuple[int, ...]] | None = None, target="host", db: str | None = None,
            validate: bool = True, rtol: float | None = None, atol: float | None = None,
            fusion: str = "full", pins: Sequence[str] = (), precision: str = "fp32",
            max_rel_err: float | None = None, min_cosine: float | None = None,
            inputs: str | Path | None = None, trust_runners: Sequence[str] | None = None,
            min_sentence_cosine: float | None = None, task: str = "model",
            max_new_tokens: int = 32) -> CompileResult | Seq2SeqCompileResult:
    """Build the model with the database's chosen records, validate it against ONNX Runtime, and
    only then put it at ``output`` with its manifest (``output.json``).

    Args:
        model, shapes, target, db, fusion, precision, task, max_new_tokens: as for ``tune``.
        output: the ``.so`` to write; with ``task="seq2seq"``, the generator manifest ``NAME.json``
            (its parts go to ``NAME.parts/``), which ``load`` takes.
        validate: compare with ONNX Runtime before deploying (skip only where it cannot run).
        rtol, atol: fp32 tolerances (default ``autotune.common.tolerances``).
        pins: manual schedule names to use wherever they have a record, even when slower.
        max_rel_err, min_cosine: reduced-precision limits (defaults per precision).
        min_sentence_cosine: reduced precision, the lowest cosine of a real sentence's mean-pooled
            embedding to fp32's (checked where the shipped sentences fit the model; default per
            precision, ``autotune.common.tolerances.MIN_SENTENCE_COSINE``).
        inputs: an ``.npz`` of validation inputs (default: random inputs the model accepts).
        trust_runners: build only from records these runners timed (default: all, or only local
            ones where servers of more than one RPC key timed records of this target).

    Returns:
        The ``CompileResult``: paths, sha256, the records built from, the validation.

    Raises:
        ValidationFailed: the outputs do not match; ``output`` is untouched and the rejected build
            is kept as ``NAME.rejected.so``.
        AutotuneError: a bad model, shape, target, inputs file or database, in one line.
    """
    from .common.tolerances import ATOL, RTOL
    from .jobs.compile import CompileOptions
    from .jobs.compile import compile as run

    options = CompileOptions(shapes, target, db, validate, RTOL if rtol is None else rtol,
                             ATOL if atol is None else atol, fusion, tuple(pins), precision, max_rel_err,
                             min_cosine, inputs, tuple(trust_runners) if trust_runners is not None else None,
                             min_sentence_cosine)
    if task == "seq2seq":
        from dataclasses import replace

        from .jobs.generator_parts import source_of
        from .jobs.seq2seq import compile_seq2seq

        return compile_seq2seq(model, output, source_of(_source_dims(shapes)), max_new_tokens,
                               replace(options, shapes=None))
    return run(model, output, options)


def bench(artifact: str | Path, count: int = 100, duration_s: float | None = None, warmup: int = 10,
          threads: int | None = None, model: str | Path | None = None,
          peers: Sequence[str] = ("onnxruntime", "untuned"), others: dict[str, Path] | None = None,
          inputs: str | Path | None = None, untuned_runs: int = 5) -> BenchResult:
    """Time an artifact side by side with its peers (ONNX Runtime, untuned TVM) on the same inputs.

    Args:
        artifact: the ``.so`` (its manifest beside it).
        count, duration_s, warmup: ``count`` runs (or for ``duration_s``) after ``warmup`` runs.
        threads: threads for every system (default: the cores this process may use).
        model: the ONNX model the peers run (default: the one the manifest names).
        peers: which of ``onnxruntime`` and ``untuned`` to run.
        others: more builds of the same model and shapes, by name, taking turns with the rest.
        inputs: an ``.npz`` of inputs (default: random inputs the model accepts).
        untuned_runs: runs of untuned TVM, timed after the turns.

    Returns:
        The ``BenchResult``: per system p50/p90/p95/p99, mean and throughput, and ratios to ONNX Runtime.
    """
    from .bench.bench import bench as run
    from .bench.timing import BenchConfig

    config = BenchConfig(count=count, duration_s=duration_s, warmup=warmup, threads=threads,
                         untuned_runs=untuned_runs)
    return run(artifact, config, model, tuple(peers), others, inputs)


def bench_generate(generator: str | Path, batches: Sequence[int] = (1, 4, 8),
                   source_lengths: Sequence[int] = (16, 32, 64, 128), new_tokens: int = 32, beams: int = 1,
                   count: int = 20, duration_s: float | None = None, threads: int | None = None,
                   model: str | Path | None = None, peers: bool = True,
                   plot_dir: str | Path | None = None) -> GenerationBenchResult:
    """Time whole ``generate`` calls of a translation generator (``compile(task="seq2seq")``) per
    batch size × source length, beside ONNX Runtime running the same loop over the model's files.

    Args:
        generator: the generator manifest ``NAME.json``.
        batches, source_lengths: the grid; every sentence generates exactly ``new_tokens`` tokens.
        beams: beam search with this many beams (1: greedy).
        count, duration_s: ``count`` calls per system and point (or for ``duration_s``).
        threads: ONNX Runtime's threads (default: the cores this process may use).
        model: the model's folder for ONNX Runtime (default: the one the manifest names).
        peers: time ONNX Runtime's loop beside it.
        plot_dir: write the latency-vs-batch and throughput-vs-length PNGs here.

    Returns:
        The ``GenerationBenchResult``: per point and system p50/p90/p95/p99, sentences/s and tokens/s,
        and at batch 1 a cached step's time outside its compiled function.
    """
    from .bench.generation import GenerationGrid, bench_generation
    from .bench.timing import BenchConfig

    grid = GenerationGrid(tuple(batches), tuple(source_lengths), new_tokens, beams, peers)
    return bench_generation(generator, grid, BenchConfig(count=count, duration_s=duration_s, warmup=2,
                                                         threads=threads), model, plot_dir)
