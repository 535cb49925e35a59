"""Records in and out of stock MetaSchedule's JSON database (``ms.database.JSONDatabase``).

Export writes ``database_workload.json`` (one workload per line, as ``Workload.as_json`` gives it)
and ``database_tuning_record.json`` (``[workload line, record]`` per line): the successful records
of a target, which stock ``JSONDatabase`` loads and ``ms.relax_integration.compile_relax`` builds
from. Import reads such a pair: each record's target and workload are matched against the store's
(created where new), records already held are skipped, the rest kept with provenance ``imported``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from ..common.records import Provenance
from ..common.results import Result
from ..errors import AutotuneError
from .engine import Store
from .schema import TargetRow, TuningRecordRow, WorkloadRow

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"


@dataclass
class Interchange(Result):
    """What an export wrote or an import took."""

    folder: str
    workloads: int
    records: int
    skipped: int = 0


def export_records(store: Store, folder: Path, target: str | None = None) -> Interchange:
    """Write the successful records of the targets whose canonical JSON contains ``target`` (all
    when None) as a stock MetaSchedule JSON database in ``folder``."""
    def work(session) -> list:
        query = (select(TuningRecordRow.workload_id, TuningRecordRow.record_json, WorkloadRow.workload_json)
                 .join(WorkloadRow, WorkloadRow.id == TuningRecordRow.workload_id)
                 .join(TargetRow, TargetRow.id == TuningRecordRow.target_id)
                 .where(TuningRecordRow.latency_s.is_not(None)).order_by(TuningRecordRow.id))
        if target:
            query = query.where(TargetRow.canonical.contains(target))
        return session.execute(query).all()
    rows = store.read(work)
    if not rows:
        raise AutotuneError(f"no successful records{f' for targets matching {target!r}' if target else ''} "
                            f"in --db {store.url}")
    folder.mkdir(parents=True, exist_ok=True)
    lines: dict[int, int] = {}
    with open(folder / WORKLOADS, "w", encoding="utf-8") as workloads, \
            open(folder / RECORDS, "w", encoding="utf-8") as records:
        for workload_id, record_json, workload_json in rows:
            if workload_id not in lines:
                lines[workload_id] = len(lines)
                workloads.write(json.dumps(json.loads(workload_json)) + "\n")
            records.write(json.dumps([lines[workload_id], json.loads(record_json)]) + "\n")
    return Interchange(str(folder), len(lines), len(rows))


def _read_lines(path: Path) -> list:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise AutotuneError(f"cannot read the MetaSchedule database file {path}: {err}") from None


def import_records(store: Store, folder: Path) -> Interchange:
    """Bring in a stock MetaSchedule JSON database from ``folder`` (see the module docstring)."""
    from tvm.s_tir import meta_schedule as ms

    from ..measure.outcome import Outcome
    from ..targets.names import canonical
    from .metaschedule import SqlDatabase
    from .tvm_json import workload_from_json

    workload_lines = _read_lines(folder / WORKLOADS)
    record_lines = _read_lines(folder / RECORDS)
    workloads = [workload_from_json(line) for line in workload_lines]
    databases: dict[str, SqlDatabase] = {}
    taken = skipped = 0
    for index, record_json in record_lines:
        record = ms.database.TuningRecord.from_json(record_json, workloads[index])
        key = canonical(record.target)
        database = databases.setdefault(key, SqlDatabase(store, key, provenance=Provenance.IMPORTED))
        if _held(database, record):
            skipped += 1
            continue
        run_secs = None if record.run_secs is None else [float(s) for s in record.run_secs]
        database.commit_record(record, Outcome(run_secs=run_secs), source={"imported_from": str(folder)})
        taken += 1
    return Interchange(str(folder), len(workloads), taken, skipped)


def _held(database, record) -> bool:
    """Whether ``database`` already holds ``record``'s trace for its workload and target."""
    from .tvm_json import record_json

    trace = json.loads(record_json(record))[0]
    return any(json.loads(row.record_json)[0] == trace
               for row in database.best_rows(record.workload.mod, 1 << 20))
