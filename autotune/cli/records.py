"""Commands over the database: ``history``, ``report``, ``db``."""

from __future__ import annotations

from ..errors import AutotuneError
from .args import add_output_options, parse_since, positive_int, table

HISTORY_COLUMNS = {
    "jobs": ["job_id", "model", "target", "status", "trials", "failures", "tuning_seconds", "started_at"],
    "best": ["task", "target", "latency_ms", "provenance", "origin", "record_id", "job_id", "records_measured"],
    "curve": ["trial", "seconds", "estimated_latency_ms"],
    "compare": ["job_id", "target", "status", "trials", "tuning_seconds", "estimated_latency_ms"],
    "artifacts": ["artifact_id", "path", "sha256", "model", "target", "job_ids", "record_ids"],
}


def run_history(args) -> dict:
    from ..store import history
    from ..store.engine import Store

    store = Store(args.db)
    if args.query == "curve" and args.job is None:
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


def add_history(sub) -> None:
    p = sub.add_parser("history", help="query tuning history: jobs, best, curve, compare, artifacts")
    p.add_argument("query", choices=list(HISTORY_COLUMNS))
    p.add_argument("--model", help="model name (the ONNX file's stem)")
    p.add_argument("--target", help="only targets whose canonical JSON contains this text")
    p.add_argument("--job", type=positive_int, help="job id")
    p.add_argument("--artifact", type=positive_int, help="artifact id")
    p.add_argument("--since", type=parse_since, help="only jobs started at or after (ISO date)")
    add_output_options(p)
    p.set_defaults(func=run_history)


def run_report(args) -> dict:
    from .. import report
    from ..store.engine import Store
    from ..store.history import breakdown, curve

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


def add_report(sub) -> None:
    p = sub.add_parser("report", help="a job's tuning curve as PNG, or a full HTML report")
    p.add_argument("--job", type=positive_int, required=True)
    p.add_argument("-o", "--output", required=True, help="report.html (full report) or curve.png")
    p.add_argument("--study", help="include this Optuna study (name as `autotune study` printed)")
    add_output_options(p)
    p.set_defaults(func=run_report)


def run_db(args) -> dict:
    from pathlib import Path

    from ..store.engine import Store
    from ..store.interchange import export_records, import_records

    if args.action == "upgrade":
        before, after = Store(args.db, check_schema=False).upgrade()
        if not args.json:
            print(f"database schema: revision {before or '(empty)'} → {after}")
        return {"before": before, "after": after}
    if not args.folder:
        raise AutotuneError(f"db {args.action} needs the folder of the MetaSchedule database: "
                            f"autotune db {args.action} DIR")
    verb = export_records if args.action == "export" else import_records
    done = verb(Store(args.db), Path(args.folder), *([args.target] if args.action == "export" else []))
    if not args.json:
        moved = "wrote" if args.action == "export" else "imported"
        print(f"{moved} {done.records} records of {done.workloads} workloads ({args.folder})"
              + (f"; {done.skipped} already held" if done.skipped else ""))
    return done


def add_db(sub) -> None:
    p = sub.add_parser("db", help="database maintenance: upgrade the schema, records to or from stock MetaSchedule")
    p.add_argument("action", choices=["upgrade", "export", "import"],
                   help="upgrade: migrate the schema in place; export/import: a stock MetaSchedule "
                        "JSON database (database_workload.json + database_tuning_record.json) in DIR")
    p.add_argument("folder", nargs="?", metavar="DIR")
    p.add_argument("--format", choices=["metaschedule"], default="metaschedule",
                   help="the interchange format (MetaSchedule's JSONDatabase)")
    p.add_argument("--target", help="export: only targets whose canonical JSON contains this text")
    add_output_options(p)
    p.set_defaults(func=run_db)
