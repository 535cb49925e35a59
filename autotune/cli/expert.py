"""The expert's commands: ``profile`` (where the headroom is) and ``manual init`` (a schedule to edit)."""

from __future__ import annotations

from .args import add_output_options, positive_int, table

PROFILE_COLUMNS = ["kernel", "calls", "us", "share_of_latency", "bound", "gflops", "gbs",
                   "share_of_compute_peak", "share_of_bandwidth", "floor_us", "headroom_us", "headroom_share"]
OVERSTATED = 1.1  # kernels summing to more than this × the plain p50 get a note on the instrument's cost


def run_profile(args):
    from .. import report
    from ..jobs.profile import profile

    result = profile(args.artifact, args.rounds, args.inferences, args.threads, args.remeasure_peaks)
    plots = report.plot_profile(result, args.plots) if args.plots else []
    if not args.json:
        peaks = result.peaks
        print(f"{result.artifact}: wall p50 {result.wall_p50_ms:.3f} ms ({result.instrumented_p50_ms:.3f} ms with "
              f"every call timed), kernels {result.kernel_sum_ms:.3f} ms; roofs {peaks.fma_gflops:.0f} GFLOP/s "
              f"fp32 FMA{_dot_roofs(peaks)} and {peaks.bandwidth_gbs:.0f} GB/s on {peaks.threads} threads (measured {peaks.measured_at})")
        rows = [{**k.as_dict(), "share_of_latency": f"{k.share_of_latency:.1%}",
                 "share_of_compute_peak": f"{k.share_of_compute_peak:.1%}",
                 "share_of_bandwidth": f"{k.share_of_bandwidth:.1%}", "headroom_share": f"{k.headroom_share:.1%}"}
                for k in result.kernels[:args.top]]
        print(table(rows, PROFILE_COLUMNS))
        if result.kernel_sum_ms > OVERSTATED * result.wall_p50_ms:
            print(f"note: the kernels sum to {result.kernel_sum_ms / result.wall_p50_ms:.2f}× the plain p50: timing "
                  f"{result.calls} calls an inference costs {result.instrument_us_per_call:.1f} µs each, part of "
                  f"it inside each kernel's time; the ranking holds, the times of short kernels overstate, and "
                  f"shares are of the instrumented inference")
        for path in plots:
            print(f"wrote {path}")
    return {**result.as_dict(), "plots": [str(p) for p in plots]}


def add_profile(sub) -> None:
    p = sub.add_parser("profile", help="every kernel timed in place against this host's roofs, most headroom first")
    p.add_argument("artifact", help="compiled .so (with its manifest beside it)")
    p.add_argument("--rounds", type=positive_int, default=10, help="rounds of timing (default 10)")
    p.add_argument("--inferences", type=positive_int, default=5, help="inferences per round (default 5)")
    p.add_argument("--threads", type=positive_int, help="threads (default: those it was tuned for)")
    p.add_argument("--top", type=positive_int, default=25, help="rows in the table (default 25)")
    p.add_argument("--plots", metavar="PREFIX", help="write PREFIX_roofline.png and PREFIX_headroom.png")
    p.add_argument("--remeasure-peaks", action="store_true",
                   help="measure this host's peaks again instead of the cached ones")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_profile)


def run_manual(args) -> dict:
    from ..jobs.manual_init import write_manual_schedule
    from ..store.engine import Store

    written = write_manual_schedule(Store(args.db), args.task, args.output, args.name)
    if not args.json:
        print(f"wrote {written.path}: {written.task} from record {written.record_id} "
              f"({written.provenance}, {written.latency_ms:.4f} ms)")
    return written


def add_manual(sub) -> None:
    p = sub.add_parser("manual", help="hand schedules: init writes a task's best schedule as a module to edit")
    p.add_argument("action", choices=["init"])
    p.add_argument("task", help="task name (as `autotune tasks` prints it) or workload hash")
    p.add_argument("-o", "--output", required=True, help="the module to write, e.g. search_spaces/manual/NAME.py")
    p.add_argument("--name", help="the schedule's name (default: from the task)")
    add_output_options(p)
    p.set_defaults(func=run_manual)


def _dot_roofs(peaks) -> str:
    """The dot-product roofs measured beside the FMA's (bf16 artifacts are judged by bf16's)."""
    roofs = [f"{value:.0f} G{unit} {name}" for value, unit, name in
             ((peaks.bf16_gflops, "FLOP/s", "bf16 vdpbf16ps"), (peaks.int8_gops, "OP/s", "int8 vpdpbusd"))
             if value]
    return f" ({', '.join(roofs)})" if roofs else ""
