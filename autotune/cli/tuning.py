"""Commands of the tuning flow: ``tasks``, ``tune``, ``compile``, ``study``."""

from __future__ import annotations

import sys

from .args import (add_model, add_output_options, add_precision, add_target, duration_arg, positive_int,
                   runner_list, shapes, space_of, table, target_of)


def print_progress(event: dict) -> None:
    """One stderr line per search round, per step of the finalists' re-timing, or per compile stage."""
    if "stage" in event:
        print(f"[{event['seconds']:6.1f}s] {event['stage']}", file=sys.stderr, flush=True)
        return
    if "part" in event:
        print(f"part {event['part']}: {event['share']:.0%} of the budget", file=sys.stderr, flush=True)
        return
    if "confirming" in event:
        print(f"re-timing finalists: {event['confirming']}", file=sys.stderr, flush=True)
        return
    est = event["estimated_latency_ms"]
    best = event["task_best_ms"]
    print(f"[{event['seconds']:6.1f}s] tasks {event['tasks_done']}/{event['tasks_total']}  "
          f"trials {event['trials']} (failed {event['failures']})  "
          f"{event['task']}: best {'-' if best is None else f'{best:.4f} ms'}  "
          f"estimated total {'-' if est is None else f'{est:.3f} ms'}", file=sys.stderr, flush=True)


def run_tasks(args) -> dict:
    from ..jobs.prepare import prepare

    prepared = prepare(args.model, shapes(args.shape), target_of(args, None), precision=args.precision,
                       for_tuning=True, tune_shapes=args.tune_shapes)
    rows = [t.as_dict() for t in prepared.tasks]
    if not args.json:
        print(table(rows, ["name", "weight", "flops", "workload_hash"]))
    return {"model": args.model, "tasks": rows}


def add_tasks(sub) -> None:
    p = sub.add_parser("tasks", help="list the operator tasks of a model (for a range: those tune tunes)")
    add_model(p)
    add_target(p)
    add_output_options(p)
    add_tune_shapes(p)
    add_precision(p)
    p.set_defaults(func=run_tasks)


def add_tune_shapes(parser) -> None:
    parser.add_argument("--tune-shapes", metavar="SHAPE,SHAPE",
                        help="with a --shape range: the shapes to tune, of the first ranged input, e.g. "
                             "1x32,1x128,8x128 (default: each ranged dim mid-range and at its top)")


def add_task(parser, what: str) -> None:
    """``--task`` and ``--max-new-tokens``, which ``tune`` and ``compile`` share."""
    parser.add_argument("--task", choices=["model", "seq2seq"], default="model",
                        help="seq2seq: MODEL is a translation model's folder in Hugging Face Optimum's layout "
                             f"(encoder, decoder, decoder with past), {what}")
    parser.add_argument("--max-new-tokens", type=positive_int, default=32, help="--task seq2seq: the longest "
                        "output the generator serves (the KV cache's capacity)")


def measure_config(args):
    """The measuring settings of ``tune``'s flags (tvmc's names), defaults where not given."""
    from ..measure.config import MeasureConfig

    given = {"build_workers": args.builders, "build_timeout_s": args.build_timeout,
             "run_timeout_s": args.run_timeout, "number": args.number, "repeat": args.repeat,
             "min_repeat_ms": args.min_repeat_ms}
    return MeasureConfig(**{k: v for k, v in given.items() if v is not None})


def add_measure_options(p) -> None:
    p.add_argument("--builders", type=positive_int, help="build workers (default 2)")
    p.add_argument("--build-timeout", type=duration_arg, help="per candidate build (default 60s)")
    p.add_argument("--run-timeout", type=duration_arg, help="per candidate run (default 10s)")
    p.add_argument("--number", type=positive_int, help="runs per timed repeat (default 1)")
    p.add_argument("--repeat", type=positive_int, help="timed repeats; the median is kept (default 9)")
    p.add_argument("--min-repeat-ms", type=positive_int, help="shortest repeat in ms (default 1)")


def run_tune(args):
    from ..jobs.tune import TuneOptions, tune
    from ..search.driver import SearchConfig

    space = space_of(args)
    trials = args.trials or (space.trials if space and not args.time_budget else None)
    time_budget = args.time_budget or (space.time_s if space and not args.trials else None)
    manual = [*(space.manual_modules if space else []), *(args.manual or [])]
    options = TuneOptions(shapes(args.shape), target_of(args, space), args.db, trials, time_budget,
                          reuse=not args.no_reuse, config=SearchConfig(trials_per_round=args.trials_per_round),
                          fusion=args.fusion, manual=manual, rpc=args.rpc, rpc_key=args.rpc_key,
                          precision=args.precision, confirm=not args.no_confirm,
                          trust_runners=args.trust_runners, measure=measure_config(args),
                          tune_shapes=args.tune_shapes)
    if args.task == "seq2seq":
        return _tune_seq2seq(args, options)
    summary = tune(args.model, options, None if args.quiet else print_progress)
    if not args.json:
        if summary.manual_schedules:
            print(table(summary.manual_schedules, ["schedule", "task", "latency_ms", "error"]) + "\n")
        print(table([summary.as_dict()], ["job_id", "tasks", "tasks_from_database", "trials_measured",
                                          "failures", "tuning_seconds", "estimated_latency_ms"]))
    return summary


def _tune_seq2seq(args, options):
    """``tune DIR --task seq2seq``: the three parts of a translation model (``jobs.seq2seq_tune``)."""
    from ..jobs.generator_parts import source_of
    from ..jobs.seq2seq_tune import tune_seq2seq

    summary = tune_seq2seq(args.model, source_of(options.shapes or {}), args.max_new_tokens, options,
                           None if args.quiet else print_progress)
    if not args.json:
        rows = [{"part": name, "budget_share": summary.budget_shares[name], **part}
                for name, part in summary.parts.items()]
        print(table(rows, ["part", "budget_share", "job_id", "tasks", "tasks_from_database", "trials_measured",
                           "failures", "tuning_seconds"]))
    return summary


def add_tune(sub) -> None:
    p = sub.add_parser("tune", help="search schedules for every task; records go to the database")
    add_model(p)
    add_target(p)
    add_output_options(p)
    p.add_argument("--trials", type=positive_int, help="stop after N measured trials")
    p.add_argument("--time-budget", type=duration_arg, help="stop after this long (90s, 10m, 1h)")
    add_tune_shapes(p)
    p.add_argument("--no-reuse", action="store_true",
                   help="search tasks even when the database has records from other jobs")
    p.add_argument("--no-confirm", action="store_true",
                   help="skip re-timing each task's finalists inside the model at the end")
    p.add_argument("--space", help="search space YAML: budget, manual schedules (flags win)")
    p.add_argument("--manual", action="append", help="a manual schedule module (repeatable)")
    p.add_argument("--fusion", choices=["full", "none"], default="full", help="operator fusion")
    p.add_argument("--trials-per-round", type=positive_int, help="search round size (default: from budget)")
    p.add_argument("--rpc", "--rpc-tracker", dest="rpc", metavar="HOST:PORT",
                   help="time candidates on RPC servers at this tracker (tvmc's --rpc-tracker)")
    p.add_argument("--rpc-key", metavar="KEY", help="the key the RPC servers registered under")
    p.add_argument("--trust-runners", type=runner_list, metavar="LIST",
                   help="reuse only records these runners timed: local, rpc:KEY (comma-separated)")
    add_task(p, "tuned as one job")
    add_measure_options(p)
    add_precision(p)
    p.set_defaults(func=run_tune)


def run_compile(args):
    from ..common.tolerances import ATOL, RTOL
    from ..jobs.compile import CompileOptions, compile

    space = space_of(args)
    rtol = args.rtol if args.rtol is not None else (space.rtol if space else RTOL)
    atol = args.atol if args.atol is not None else (space.atol if space else ATOL)
    given = shapes(args.shape)
    options = CompileOptions(None if args.task == "seq2seq" else given, target_of(args, space), args.db,
                             not args.no_validate, rtol, atol, args.fusion, space.pin if space else (),
                             args.precision, args.max_rel_err, args.min_cosine, args.inputs, args.trust_runners,
                             args.min_sentence_cosine)
    if args.task == "seq2seq":
        return _compile_seq2seq(args, given, options)
    summary = compile(args.model, args.output, options, None if args.quiet else print_progress)
    if not args.json:
        valid = summary.validation
        print(f"wrote {summary.artifact} (sha256 {summary.sha256[:16]}…), "
              f"{summary.tasks_tuned}/{summary.tasks} tasks from tuning records")
        if summary.records_passed_over:
            print(f"{summary.records_passed_over} records passed over: they read a weight in another layout than "
                  "the other buckets pack it in (the artifact stores each weight once)")
        if valid:
            print(f"matches ONNX Runtime: max abs error {valid['max_abs_err']:.3g}, "
                  f"max rel error {valid['max_rel_err']:.3g}, min cosine {valid['min_cosine']:.6f}")
    return summary


def _compile_seq2seq(args, given: dict, options):
    """``compile DIR --task seq2seq``: the generator of a translation model (``jobs.seq2seq``)."""
    from ..jobs.generator_parts import source_of
    from ..jobs.seq2seq import compile_seq2seq

    summary = compile_seq2seq(args.model, args.output, source_of(given), args.max_new_tokens, options)
    if not args.json:
        check = summary.validation
        print(f"wrote {summary.manifest} ({len(summary.parts)} parts); greedy tokens match ONNX Runtime in "
              f"{check['same_tokens']} of {check['sentences']} sentences")
    return summary


def add_compile(sub) -> None:
    p = sub.add_parser("compile", help="build the best schedules into a .so with a manifest")
    add_model(p)
    add_target(p)
    add_output_options(p)
    p.add_argument("-o", "--output", required=True, help="path of the .so to write (--task seq2seq: of "
                   "the generator manifest NAME.json, its parts in NAME.parts/)")
    add_task(p, "compiled into one generator")
    p.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime comparison")
    p.add_argument("--inputs", metavar="X.npz", help="validate on these inputs (one array per input "
                   "name; default: random inputs the model accepts)")
    p.add_argument("--rtol", type=float, help="relative tolerance vs ONNX Runtime (default 1e-4)")
    p.add_argument("--atol", type=float, help="absolute tolerance vs ONNX Runtime (default 1e-4)")
    p.add_argument("--space", help="search space YAML: pinned manual schedules, tolerances")
    p.add_argument("--fusion", choices=["full", "none"], default="full", help="operator fusion")
    add_precision(p)
    p.add_argument("--max-rel-err", type=float, help="largest relative error allowed vs ONNX Runtime "
                   "fp32 (default: fp16 2e-2, bf16 1e-1, int8 2e-1; fp32 uses --rtol/--atol, but a --task seq2seq part 1e-3)")
    p.add_argument("--min-cosine", type=float, help="lowest cosine similarity allowed per output "
                   "(default: fp16 0.999, bf16 0.99, int8 0.99, a --task seq2seq part 0.9999)")
    p.add_argument("--min-sentence-cosine", type=float,
                   help="reduced precision: lowest cosine of a real sentence's mean-pooled embedding to "
                        "fp32's, on the shipped sentences where they fit the model (default 0.999; int8 0.99)")
    p.add_argument("--trust-runners", type=runner_list, metavar="LIST",
                   help="build only from records these runners timed: local, rpc:KEY (default: all, "
                        "or local only where servers of several RPC keys timed records)")
    p.set_defaults(func=run_compile)


def _print_trial(event: dict) -> None:
    print(f"trial {event['trial']}: {event['knobs']} → p50 {event['p50_ms']:.3f} ms", file=sys.stderr)


def run_study(args) -> dict:
    from ..jobs.compile import CompileOptions, compile
    from ..jobs.study import best_configuration, run_study, target_for

    space = space_of(args)
    frozen = shapes(args.shape)
    study = run_study(args.model, frozen, space, args.db, args.trials, None if args.quiet else _print_trial)
    best = best_configuration(study)
    knobs = best["knobs"]
    options = CompileOptions(frozen, target_for(space, knobs.get("threads")), args.db, rtol=space.rtol,
                             atol=space.atol, fusion=knobs.get("fusion", "full"), pins=space.pin,
                             precision=knobs.get("precision", "fp32"))
    built = compile(args.model, args.output, options)
    rows = [{"trial": t.number, "state": t.state.name, "p50_ms": t.value, **t.params} for t in study.trials]
    if not args.json:
        print(table(rows, ["trial", "state", "p50_ms", *space.graph]))
        print(f"best: trial {best['trial']} {knobs} p50 {best['p50_ms']:.3f} ms → {built.artifact}")
    return {"study": study.study_name, "trials": rows, "best": best, "compile": built}


def add_study(sub) -> None:
    p = sub.add_parser("study", help="Optuna study over a search space's graph-level knobs")
    add_model(p)
    add_output_options(p)
    p.add_argument("--space", required=True, help="search space YAML with 'graph' knobs")
    p.add_argument("--trials", type=positive_int, help="finished trials wanted (default: the space's)")
    p.add_argument("-o", "--output", required=True, help="where to compile the best configuration")
    p.set_defaults(func=run_study)
