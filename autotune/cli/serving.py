"""Commands around artifacts and examples: ``bench``, ``example``, ``demo``."""

from __future__ import annotations

import sys
from pathlib import Path

from ..bench.peers import PEERS_ALL
from ..bench.timing import REFERENCES
from ..errors import AutotuneError
from .args import add_output_options, add_target, duration_arg, named_path, positive_int, table, target_of
from .tuning import print_progress

DEMO_DIR = Path("tuning_logs/demo")
DEMO_SHAPES = {"input_ids": (1, 32), "decoder_input_ids": (1, 8)}
# One artifact for batches of 1-4 and 1-16 target tokens (the source has no attention mask, so its
# length stays fixed: padding it would change the encoder's outputs), timed at a few of its shapes.
DEMO_RANGE = {"input_ids": "1..4x32", "decoder_input_ids": "1..4x1..16"}
DEMO_RANGE_SHAPES = "decoder_input_ids=1x1,1x7,3x13,4x16"
DEMO_RANGE_BENCH_S = 3.0
# The demo times its systems for a while rather than for a count of runs: a fresh process's thread
# pool starts slowly, and a model this small finishes a count of runs before it is warm.
DEMO_BENCH_S = 10.0
EXAMPLE_NAMES = ("translation", "encoder", "bert")  # autotune.models.EXAMPLES, without importing onnx


def run_bench(args):
    from ..bench.bench import PEERS, bench, bench_shapes
    from ..bench.timing import BenchConfig
    from ..runtime.manifest import read_manifest

    if args.generate:
        return run_bench_generate(args)
    from ..runtime.generator import is_generator_manifest

    if is_generator_manifest(Path(args.artifact)):
        raise AutotuneError(f"{args.artifact} is a translation generator: time it with bench --generate")
    config = BenchConfig(count=args.count or 100, duration_s=args.duration, warmup=args.warmup,
                         threads=args.threads, untuned_runs=args.untuned_runs, streams=args.streams,
                         stream_seconds=args.stream_duration)
    others = dict(args.other)
    if len(others) < len(args.other):
        raise AutotuneError(f"--other names must be unique: {', '.join(name for name, _ in args.other)}")
    peers = () if args.no_peers else peer_list(args.peers) if args.peers else PEERS
    if args.shapes or (args.inputs is None and Path(args.artifact).is_file()
                        and read_manifest(Path(args.artifact)).shape_plan):
        over = bench_shapes(args.artifact, args.shapes, config, args.model, peers, others)
        if not args.json:
            for label, result in over.shapes.items():
                print(f"shape {label}:")
                print_bench(result)
                print()
        return over
    result = bench(args.artifact, config, args.model, peers, others, args.inputs)
    if not args.json:
        print_bench(result)
    return result


def print_bench(result) -> None:
    """The systems of a ``BenchResult`` as tables: latency (ms) and single-stream throughput, then
    the concurrent streams where they ran."""
    references = [r for r in REFERENCES if r in result.systems]
    rows = [{"system": name, **stats.as_dict(), "single_stream_per_s": stats.throughput_per_s,
             **{f"per_turn_vs_{r}": _turn_range(getattr(stats, f"turns_vs_{r}")) for r in references}}
            for name, stats in result.systems.items()]
    print(table(rows, ["system", "runs", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms",
                       "max_ms", "std_ms", "single_stream_per_s",
                       *[column for r in references for column in (f"p50_vs_{r}", f"per_turn_vs_{r}")]]))
    if result.streams:
        print()
        print(table([{"system": name, **s.as_dict()} for name, s in result.streams.items()],
                    ["system", "streams", "runs", "throughput_per_s", "p50_ms", "p90_ms", "p99_ms"]))
    print(f"\npeak RSS {result.peak_rss_mb:.0f} MB (the benchmark process, every system in it)")


def _turn_range(ratios: dict | None) -> str:
    """``median (lowest-highest)`` of the per-turn ratios, or empty."""
    return f"{ratios['median']:.3f} ({ratios['lowest']:.3f}-{ratios['highest']:.3f})" if ratios else ""


def peer_list(text: str) -> tuple[str, ...]:
    """``--peers``: comma-separated names of ``PEERS_ALL``."""
    peers = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in peers if p not in PEERS_ALL]
    if not peers or unknown:
        raise AutotuneError(f"--peers: unknown peer {', '.join(unknown) or repr(text)}: "
                            f"choose from {','.join(PEERS_ALL)}")
    return peers


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="latency percentiles and throughput vs ONNX Runtime and untuned TVM")
    p.add_argument("artifact", help="compiled .so (with its manifest beside it), or with --generate a "
                   "translation generator's NAME.json")
    p.add_argument("--count", type=positive_int, help="timed runs per system (default 100; --generate: "
                   "20 generate calls per point)")
    p.add_argument("--duration", type=duration_arg, help="measure for this long instead of --count")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=positive_int, help="threads for every system (default: cores)")
    p.add_argument("--model", help="the ONNX model for the peers (default: from the manifest)")
    p.add_argument("--no-peers", action="store_true", help="measure the artifact alone")
    p.add_argument("--peers", metavar="PEER,PEER",
                   help=f"the peers to time, of {','.join(PEERS_ALL)} (default: onnxruntime,untuned; "
                        "openvino is its CPU default precision, bf16 on AVX512-BF16 CPUs)")
    p.add_argument("--inputs", metavar="X.npz", help="run every system on these inputs (one array "
                   "per input name; default: random inputs the model accepts)")
    p.add_argument("--shapes", metavar="SHAPE,SHAPE",
                   help="a range artifact's shapes to time, of its first input, e.g. 1x77,4x128 "
                        "(default: a handful spread over its range)")
    p.add_argument("--untuned-runs", type=positive_int, default=5,
                   help="runs of untuned TVM, timed after the rest (it is tens of times slower)")
    p.add_argument("--other", action="append", type=named_path, default=[], metavar="NAME=PATH",
                   help="another build of the same model and shapes (say, the one in production) "
                        "taking turns with the rest; repeatable")
    p.add_argument("--streams", type=positive_int, default=1, metavar="N",
                   help="also time N concurrent requests (a VM each; benchmark_app's throughput mode)")
    p.add_argument("--stream-duration", type=duration_arg, default=10.0,
                   help="how long the streams run (default 10s)")
    add_generate_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_bench)


def add_generate_options(p) -> None:
    group = p.add_argument_group("translation generators (--generate)")
    group.add_argument("--generate", action="store_true", help="time whole generate calls of a generator "
                       "(compile --task seq2seq) beside ONNX Runtime in the same search loop")
    group.add_argument("--batches", type=positive_int, nargs="+", default=[1, 4, 8], metavar="N")
    group.add_argument("--src-lens", type=positive_int, nargs="+", default=[16, 32, 64, 128], metavar="N",
                       help="source lengths (tokens)")
    group.add_argument("--new-tokens", type=positive_int, default=32,
                       help="tokens every sentence generates (no end before them)")
    group.add_argument("--beams", type=positive_int, default=1, help="beam search with this many beams")
    group.add_argument("--plot", metavar="DIR", help="write latency-vs-batch and throughput-vs-length PNGs here")


def run_bench_generate(args):
    from ..bench.generation import GenerationGrid, bench_generation
    from ..bench.timing import BenchConfig

    if args.peers or args.other or args.shapes or args.inputs or args.streams > 1:
        raise AutotuneError("bench --generate times a generator beside ONNX Runtime's loop; --peers, --other, "
                            "--shapes, --inputs and --streams are for single artifacts")
    grid = GenerationGrid(tuple(args.batches), tuple(args.src_lens), args.new_tokens, args.beams,
                          peers=not args.no_peers)
    config = BenchConfig(count=args.count or 20, duration_s=args.duration, warmup=min(args.warmup, 2),
                         threads=args.threads)
    result = bench_generation(args.artifact, grid, config, args.model, args.plot)
    if not args.json:
        print_generation(result)
    return result


def print_generation(result) -> None:
    """A ``GenerationBenchResult`` as one table row per point and system, then the step overhead."""
    rows = [{"batch": p.batch, "src_len": p.source_length, "system": name, **stats.as_dict(),
             "per_turn_vs_onnxruntime": _turn_range(stats.turns_vs_onnxruntime),
             "same_tokens": "" if p.same_tokens is None or name == "onnxruntime" else f"{p.same_tokens:.0%}"}
            for p in result.points for name, stats in p.systems.items()]
    print(f"{result.new_tokens} new tokens a sentence, {result.beams} beam(s), {result.threads} threads")
    print(table(rows, ["batch", "src_len", "system", "runs", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                       "sentences_per_s", "tokens_per_s", "tokens_per_s_vs_onnxruntime", "per_turn_vs_onnxruntime",
                       "same_tokens"]))
    if result.overhead:
        o = result.overhead
        print(f"\nbatch 1, {o.source_length} source tokens: a cached step takes {o.step_ms:.3f} ms in the loop, "
              f"{o.kernels_ms:.3f} ms of it in its compiled function: {o.overhead_share:.1%} outside the kernels")
    for plot in result.plots:
        print(f"wrote {plot}")


def run_example(args) -> dict:
    from ..models import TINY, ModelConfig, write_example

    path = write_example(args.name, args.output, TINY if args.tiny else ModelConfig())
    if not args.json:
        print(f"wrote {path}")
    return {"model": str(path)}


def add_example(sub) -> None:
    p = sub.add_parser("example", help="write a bundled example Transformer as ONNX")
    p.add_argument("name", choices=EXAMPLE_NAMES)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--tiny", action="store_true", help="the tiny test-sized configuration")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_example)


def run_demo(args) -> dict:
    """The quickstart: bundled translation model → tune → compile → bench."""
    from ..bench.bench import bench, bench_shapes
    from ..bench.timing import BenchConfig
    from ..jobs.compile import CompileOptions, compile
    from ..jobs.tune import TuneOptions, tune
    from ..models import write_example

    model = write_example("translation", DEMO_DIR / "translation.onnx")
    target = target_of(args, None)
    print(f"tuning {model} on --target {target} for {args.time_budget:.0f} s", file=sys.stderr)
    summary = tune(model, TuneOptions(DEMO_SHAPES, target, args.db, time_budget_s=args.time_budget),
                   print_progress)
    so_path = DEMO_DIR / "translation.so"
    built = compile(model, so_path, CompileOptions(DEMO_SHAPES, target, args.db))
    result = bench(so_path, BenchConfig(duration_s=DEMO_BENCH_S, warmup=5))
    if not args.json:
        print_bench(result)
    range_path = DEMO_DIR / "translation_range.so"
    print(f"\ncompiling one artifact for {DEMO_RANGE} from the same records", file=sys.stderr)
    range_built = compile(model, range_path, CompileOptions(DEMO_RANGE, target, args.db))
    over = bench_shapes(range_path, DEMO_RANGE_SHAPES, BenchConfig(duration_s=DEMO_RANGE_BENCH_S, warmup=3),
                        peers=("onnxruntime",))
    if not args.json:
        print("\n" + table([{"shapes": label, "autotune_p50_ms": r.systems["autotune"].p50_ms,
                              "onnxruntime_p50_ms": r.systems["onnxruntime"].p50_ms,
                              "p50_vs_onnxruntime": r.systems["autotune"].p50_vs_onnxruntime}
                             for label, r in over.shapes.items()],
                            ["shapes", "autotune_p50_ms", "onnxruntime_p50_ms", "p50_vs_onnxruntime"]))
        print(f"\njob {summary.job_id}: {summary.trials_measured} trials in "
              f"{summary.tuning_seconds:.0f} s; artifact: {so_path.resolve()}; one artifact for every "
              f"shape in {DEMO_RANGE}: {range_path.resolve()}")
    return {"tune": summary, "compile": built, "bench": result, "range_compile": range_built,
            "range_bench": over}


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="tune, compile and benchmark the bundled translation model, then "
                                    "one artifact for a range of shapes")
    add_target(p)
    add_output_options(p)
    p.add_argument("--time-budget", type=duration_arg, default=240.0)
    p.set_defaults(func=run_demo)
