"""``autotune`` command line: tasks, tune, compile, bench, example, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import AutotuneError

DEMO_DIR = Path("tuning_logs/demo")
EXAMPLE_NAMES = ("translation", "encoder", "bert")  # autotune.models.EXAMPLES, without importing onnx
# The demo's timing window: its 50-run count took 35 ms, too short on a 2-core VM where a fresh
# process's threads ran slow at first (0.68 ms p50 in 50 runs, 0.35 ms over 15 s, same artifact).
DEMO_BENCH_S = 10.0


def duration_arg(text: str) -> float:
    """A duration flag (``90s``, ``10m``, ``1h``) in seconds."""
    from .space import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return int(text)


def named_path(text: str) -> tuple[str, Path]:
    """A ``NAME=PATH`` flag: a name to report under and a file."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def _shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    from .frontend import parse_shape

    return dict(parse_shape(v) for v in values or [])


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain text table of ``rows``."""
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
              for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _print_progress(event: dict) -> None:
    if "confirming" in event:
        print(f"re-timing finalists: {event['confirming']}", file=sys.stderr, flush=True)
        return
    est = event["estimated_latency_ms"]
    best = event["task_best_ms"]
    print(f"[{event['seconds']:6.1f}s] tasks {event['tasks_done']}/{event['tasks_total']}  "
          f"trials {event['trials']} (failed {event['failures']})  "
          f"{event['task']}: best {'-' if best is None else f'{best:.4f} ms'}  "
          f"estimated total {'-' if est is None else f'{est:.3f} ms'}", file=sys.stderr, flush=True)


def cmd_tasks(args) -> dict:
    from .jobs import prepare

    prepared = prepare(args.model, _shapes(args.shape), _target(args, None))
    rows = [t.as_dict() for t in prepared.tasks]
    if not args.json:
        print(table(rows, ["name", "weight", "flops", "workload_hash"]))
    return {"model": args.model, "tasks": rows}


def _space(args):
    """The ``--space`` file parsed, or None."""
    from .space import load_space

    return load_space(args.space) if getattr(args, "space", None) else None


def _target(args, space) -> str:
    return args.target or (space.target if space else "host")


def cmd_tune(args) -> dict:
    from .jobs import tune
    from .search import SearchConfig

    space = _space(args)
    trials = args.trials or (space.trials if space and not args.time_budget else None)
    time_budget = args.time_budget or (space.time_s if space and not args.trials else None)
    manual = [*(space.manual_modules if space else []), *(args.manual or [])]
    summary = tune(args.model, _shapes(args.shape), _target(args, space), args.db, trials=trials,
                   time_budget_s=time_budget, reuse=not args.no_reuse, fusion=args.fusion,
                   confirm=not args.no_confirm, config=SearchConfig(trials_per_round=args.trials_per_round),
                   manual=manual,
                   progress=None if args.quiet else _print_progress, rpc=args.rpc, rpc_key=args.rpc_key,
                   precision=args.precision)
    if not args.json:
        if summary["manual_schedules"]:
            print(table(summary["manual_schedules"], ["schedule", "task", "latency_ms", "error"]) + "\n")
        print(table([summary], ["job_id", "tasks", "tasks_from_database", "trials_measured",
                                "failures", "tuning_seconds", "estimated_latency_ms"]))
    return summary


def cmd_study(args) -> dict:
    from .graph_search import target_for, best_configuration, run_study
    from .jobs import compile as compile_model

    space = _space(args)
    shapes = _shapes(args.shape)
    study = run_study(args.model, shapes, space, args.db, args.trials,
                      progress=None if args.quiet else lambda e: print(
                          f"trial {e['trial']}: {e['knobs']} → p50 {e['p50_ms']:.3f} ms", file=sys.stderr))
    best = best_configuration(study)
    knobs = best["knobs"]
    built = compile_model(args.model, args.output, shapes, target_for(space, knobs.get("threads")),
                          args.db, rtol=space.rtol, atol=space.atol,
                          fusion=knobs.get("fusion", "full"), pins=space.pin,
                          precision=knobs.get("precision", "fp32"))
    rows = [{"trial": t.number, "state": t.state.name, "p50_ms": t.value, **t.params} for t in study.trials]
    if not args.json:
        print(table(rows, ["trial", "state", "p50_ms", *space.graph]))
        print(f"best: trial {best['trial']} {knobs} p50 {best['p50_ms']:.3f} ms → {built['artifact']}")
    return {"study": study.study_name, "trials": rows, "best": best, "compile": built}


def cmd_compile(args) -> dict:
    from .jobs import compile as compile_model

    space = _space(args)
    summary = compile_model(args.model, args.output, _shapes(args.shape), _target(args, space), args.db,
                            validate=not args.no_validate,
                            rtol=args.rtol if args.rtol is not None else (space.rtol if space else 1e-4),
                            atol=args.atol if args.atol is not None else (space.atol if space else 1e-4),
                            fusion=args.fusion, pins=space.pin if space else (),
                            precision=args.precision, max_rel_err=args.max_rel_err,
                            min_cosine=args.min_cosine, inputs=args.inputs)
    if not args.json:
        valid = summary["validation"]
        print(f"wrote {summary['artifact']} (sha256 {summary['sha256'][:16]}…), "
              f"{summary['tasks_tuned']}/{summary['tasks']} tasks from tuning records")
        if valid:
            print(f"matches ONNX Runtime: max abs error {valid['max_abs_err']:.3g}, "
                  f"max rel error {valid['max_rel_err']:.3g}, min cosine {valid['min_cosine']:.6f}")
    return summary


def cmd_bench(args) -> dict:
    from .bench import BenchConfig, bench

    config = BenchConfig(count=args.count, duration_s=args.duration, warmup=args.warmup,
                         threads=args.threads, untuned_runs=args.untuned_runs)
    peers = () if args.no_peers else ("onnxruntime", "untuned")
    others = dict(args.other)
    if len(others) < len(args.other):
        raise AutotuneError(f"--other names must be unique: {', '.join(name for name, _ in args.other)}")
    result = bench(args.artifact, config, args.model, peers, others, args.inputs)
    if not args.json:
        _print_bench(result)
    return result


def _print_bench(result: dict) -> None:
    rows = [{"system": name, **stats, "per_turn_vs_onnxruntime": _turn_range(stats.get("turns_vs_onnxruntime"))}
            for name, stats in result["systems"].items()]
    print(table(rows, ["system", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "throughput_per_s",
                       "p50_vs_onnxruntime", "per_turn_vs_onnxruntime"]))


def _turn_range(ratios: dict | None) -> str:
    """``median (lowest-highest)`` of the per-turn ratios, or empty."""
    return f"{ratios['median']:.3f} ({ratios['lowest']:.3f}-{ratios['highest']:.3f})" if ratios else ""


def cmd_example(args) -> dict:
    from .models import TINY, ModelConfig, write_example

    path = write_example(args.name, args.output, TINY if args.tiny else ModelConfig())
    if not args.json:
        print(f"wrote {path}")
    return {"model": str(path)}


def cmd_demo(args) -> dict:
    """The quickstart: bundled translation model → tune → compile → bench."""
    from .bench import BenchConfig, bench
    from .jobs import compile as compile_model
    from .jobs import tune
    from .models import write_example

    model = write_example("translation", DEMO_DIR / "translation.onnx")
    shapes = {"input_ids": (1, 32), "decoder_input_ids": (1, 8)}
    target = _target(args, None)
    print(f"tuning {model} on --target {target} for {args.time_budget:.0f} s", file=sys.stderr)
    summary = tune(model, shapes, target, args.db, time_budget_s=args.time_budget,
                   progress=_print_progress)
    so_path = DEMO_DIR / "translation.so"
    built = compile_model(model, so_path, shapes, target, args.db)
    result = bench(so_path, BenchConfig(duration_s=DEMO_BENCH_S, warmup=5))
    if not args.json:
        _print_bench(result)
        print(f"\njob {summary['job_id']}: {summary['trials_measured']} trials in "
              f"{summary['tuning_seconds']:.0f} s; artifact: {so_path.resolve()}")
    return {"tune": summary, "compile": built, "bench": result}


HISTORY_COLUMNS = {
    "jobs": ["job_id", "model", "target", "status", "trials", "failures", "tuning_seconds", "started_at"],
    "best": ["task", "target", "latency_ms", "provenance", "record_id", "job_id", "records_measured"],
    "curve": ["trial", "seconds", "estimated_latency_ms"],
    "compare": ["job_id", "target", "status", "trials", "tuning_seconds", "estimated_latency_ms"],
    "artifacts": ["artifact_id", "path", "model", "target", "job_ids", "record_ids"],
}


def cmd_history(args) -> dict:
    from . import history
    from .database import Store

    store = Store(args.db)
    if args.query in ("curve",) and args.job is None:
        raise AutotuneError("history curve needs --job ID")
    if args.query == "compare" and not args.model:
        raise AutotuneError("history compare needs --model NAME")
    rows = {
        "jobs": lambda: history.jobs(store, args.model, args.target, args.since),
        "best": lambda: history.best(store, args.model, args.target, args.job),
        "curve": lambda: history.curve(store, args.job),
        "compare": lambda: history.compare(store, args.model),
        "artifacts": lambda: history.artifacts(store, args.model, args.artifact),
    }[args.query]()
    if not args.json:
        print(table(rows, HISTORY_COLUMNS[args.query]))
    return {"query": args.query, "rows": rows}


def cmd_report(args) -> dict:
    from . import report
    from .database import Store
    from .history import breakdown, curve

    store = Store(args.db)
    points = curve(store, args.job)
    if args.output.endswith(".html"):
        study = _study(store.url, args.study) if args.study else None
        path = report.write_html(args.output, args.job, points, breakdown(store, args.job), study)
    else:
        path = report.plot_curve(points, args.job, args.output)
    if not args.json:
        print(f"wrote {path}")
    return {"job_id": args.job, "report": str(path)}


def _study(url: str, name: str):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        raise AutotuneError(f"no study {name!r} in --db {url}") from None


def cmd_rpc(args) -> dict:
    """Run an RPC tracker or server in the foreground until Ctrl-C."""
    from .rpc import serve_forever, start_server, start_tracker

    if args.role == "tracker":
        service, what = start_tracker(args.host, args.port, args.allow_remote), "RPC tracker"
    else:
        service = start_server(args.key, args.tracker, args.host, args.port, args.allow_remote)
        what = f"RPC server for key {args.key!r} at tracker {args.tracker},"
    serve_forever(service, what)
    return {"role": args.role, "host": service.host, "port": service.port}


def _rpc_parser(sub) -> None:
    p = sub.add_parser("rpc", help="run a TVM RPC tracker, or a server measuring on this machine")
    p.set_defaults(func=cmd_rpc, json=False)
    roles = p.add_subparsers(dest="role", required=True)
    tracker = roles.add_parser("tracker", help="where servers register and tuning jobs find them")
    tracker.add_argument("--port", type=int, default=9190, help="port to listen on (default 9190)")
    server = roles.add_parser("server", help="measure candidates on this machine's devices")
    server.add_argument("--key", required=True, help="device kind to register under, e.g. h100")
    server.add_argument("--tracker", default="127.0.0.1:9190", metavar="HOST:PORT",
                        help="the tracker to register with (default 127.0.0.1:9190)")
    server.add_argument("--port", type=int, default=9090, help="first port to try (default 9090)")
    for role in (tracker, server):
        role.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        role.add_argument("--allow-remote", action="store_true",
                          help="allow a non-loopback --host; TVM RPC is plaintext and unauthenticated")


def cmd_db_upgrade(args) -> dict:
    from .database import Store

    before, after = Store(args.db, check_schema=False).upgrade()
    if not args.json:
        print(f"database schema: revision {before or '(empty)'} → {after}")
    return {"before": before, "after": after}


def parse_since(text: str):
    """An ISO date or date-time, read as UTC when no zone is given."""
    import datetime as dt

    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --since {text!r}: use an ISO date, e.g. 2026-11-28") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _common(parser: argparse.ArgumentParser, model: bool = True, target: bool = True) -> None:
    if model:
        parser.add_argument("model", help="ONNX model file")
        parser.add_argument("--shape", action="append", metavar="NAME=DIMxDIM",
                            help="freeze an input's shape, e.g. input_ids=1x128 (repeatable)")
    if target:
        parser.add_argument("--target",
                            help="host (default), avx512, avx2, cuda, cuda-sm80/89/90, or a TVM target "
                                 "as JSON/tag")
    parser.add_argument("--db", help="database URL (default: $AUTOTUNE_DB or "
                                     "sqlite:///tuning_logs/autotune.db)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                        help="arithmetic precision (inputs and outputs stay fp32; default fp32)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="autotune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tasks", help="list the operator tasks of a model")
    _common(p)
    p.set_defaults(func=cmd_tasks)
    p = sub.add_parser("tune", help="search schedules for every task; records go to the database")
    _common(p)
    p.add_argument("--trials", type=positive_int, help="stop after N measured trials")
    p.add_argument("--time-budget", type=duration_arg, help="stop after this long (90s, 10m, 1h)")
    p.add_argument("--no-reuse", action="store_true",
                   help="search tasks even when the database has records from other jobs")
    p.add_argument("--no-confirm", action="store_true",
                   help="skip re-timing each task's finalists inside the model at the end")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--space", help="search space YAML: budget, manual schedules (flags win)")
    p.add_argument("--manual", action="append", help="a manual schedule module (repeatable)")
    p.add_argument("--fusion", choices=["full", "none"], default="full", help="operator fusion")
    p.add_argument("--trials-per-round", type=positive_int, help="search round size (default: from budget)")
    p.add_argument("--rpc", metavar="HOST:PORT", help="time candidates on RPC servers at this tracker")
    p.add_argument("--rpc-key", metavar="KEY", help="the key the RPC servers registered under")
    _precision(p)
    p.set_defaults(func=cmd_tune)
    p = sub.add_parser("compile", help="build the best schedules into a .so with a manifest")
    _common(p)
    p.add_argument("-o", "--output", required=True, help="path of the .so to write")
    p.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime comparison")
    p.add_argument("--inputs", metavar="X.npz", help="validate on these inputs (one array per input "
                   "name; default: random inputs the model accepts)")
    p.add_argument("--rtol", type=float, help="relative tolerance vs ONNX Runtime (default 1e-4)")
    p.add_argument("--atol", type=float, help="absolute tolerance vs ONNX Runtime (default 1e-4)")
    p.add_argument("--space", help="search space YAML: pinned manual schedules, tolerances")
    p.add_argument("--fusion", choices=["full", "none"], default="full", help="operator fusion")
    _precision(p)
    p.add_argument("--max-rel-err", type=float, help="largest relative error allowed vs ONNX Runtime "
                   "fp32 (default: fp16 2e-2, bf16 1e-1; fp32 uses --rtol/--atol)")
    p.add_argument("--min-cosine", type=float, help="lowest cosine similarity allowed per output "
                   "(default: fp16 0.999, bf16 0.99)")
    p.set_defaults(func=cmd_compile)
    p = sub.add_parser("study", help="Optuna study over a search space's graph-level knobs")
    _common(p, target=False)
    p.add_argument("--space", required=True, help="search space YAML with 'graph' knobs")
    p.add_argument("--trials", type=positive_int, help="finished trials wanted (default: the space's)")
    p.add_argument("-o", "--output", required=True, help="where to compile the best configuration")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_study)
    p = sub.add_parser("bench", help="latency percentiles and throughput vs ONNX Runtime and untuned TVM")
    p.add_argument("artifact", help="compiled .so (with its manifest beside it)")
    p.add_argument("--count", type=positive_int, default=100)
    p.add_argument("--duration", type=duration_arg, help="measure for this long instead of --count")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=positive_int, help="threads for every system (default: cores)")
    p.add_argument("--model", help="the ONNX model for the peers (default: from the manifest)")
    p.add_argument("--no-peers", action="store_true", help="measure the artifact alone")
    p.add_argument("--inputs", metavar="X.npz", help="run every system on these inputs (one array "
                   "per input name; default: random inputs the model accepts)")
    p.add_argument("--untuned-runs", type=positive_int, default=5,
                   help="runs of untuned TVM, timed after the rest (it is tens of times slower)")
    p.add_argument("--other", action="append", type=named_path, default=[], metavar="NAME=PATH",
                   help="another build of the same model and shapes (say, the one in production) "
                        "taking turns with the rest; repeatable")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("example", help="write a bundled example Transformer as ONNX")
    p.add_argument("name", choices=sorted(EXAMPLE_NAMES))
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--tiny", action="store_true", help="the tiny test-sized configuration")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_example)
    p = sub.add_parser("history", help="query tuning history: jobs, best, curve, compare, artifacts")
    p.add_argument("query", choices=list(HISTORY_COLUMNS))
    p.add_argument("--model", help="model name (the ONNX file's stem)")
    p.add_argument("--target", help="only targets whose canonical JSON contains this text")
    p.add_argument("--job", type=positive_int, help="job id")
    p.add_argument("--artifact", type=positive_int, help="artifact id")
    p.add_argument("--since", type=parse_since, help="only jobs started at or after (ISO date)")
    _common(p, model=False, target=False)
    p.set_defaults(func=cmd_history)
    p = sub.add_parser("report", help="a job's tuning curve as PNG, or a full HTML report")
    p.add_argument("--job", type=positive_int, required=True)
    p.add_argument("-o", "--output", required=True, help="report.html (full report) or curve.png")
    p.add_argument("--study", help="include this Optuna study (name as `autotune study` printed)")
    _common(p, model=False, target=False)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("db", help="database maintenance")
    p.add_argument("action", choices=["upgrade"], help="upgrade: migrate the schema in place")
    _common(p, model=False, target=False)
    p.set_defaults(func=cmd_db_upgrade)
    _rpc_parser(sub)
    p = sub.add_parser("demo", help="tune, compile and benchmark the bundled translation model")
    _common(p, model=False)
    p.add_argument("--time-budget", type=duration_arg, default=240.0)
    p.set_defaults(func=cmd_demo)
    return parser


def _set_tvm_threads(threads: int | None) -> None:
    """TVM's runtime threads for this process: ``--threads``, else ``$TVM_NUM_THREADS``, else every core.

    Must run before TVM loads. Left unset, TVM 0.27 starts one thread on this AMD VM, so a .so
    scheduled for two cores ran 3× slower than it was measured (4.1 ms vs 1.4 ms).
    """
    from .targets import physical_cores

    if threads:
        os.environ["TVM_NUM_THREADS"] = str(threads)
    else:
        os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``autotune`` console script."""
    args = build_parser().parse_args(argv)
    _set_tvm_threads(getattr(args, "threads", None))
    try:
        result = args.func(args)
    except AutotuneError as err:
        print(f"autotune: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("autotune: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
