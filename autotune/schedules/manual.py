"""Hand-written schedules: the expert's hook into the search.

A schedule module (named by a search space) registers functions with ``@manual.schedule``::

    from autotune import manual

    @manual.schedule("dense-4x32", match="fused_matmul*_add*")
    def dense(sch):                      # a tvm.s_tir.Schedule on the task's PrimFunc
        ...

autotune applies each to the tasks it matches (task-name glob or workload hash), measures it with the
same builder and runner as the search (``search.fixed.measure_manual``), and commits it with
provenance ``manual`` and its source
(name, file, sha256). Compile then takes whichever of manual and searched is fastest, unless the
space pins the manual one. A schedule that fails to apply or build is reported and skipped.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..common.files import sha256_of
from ..errors import AutotuneError

ScheduleFn = Callable[[object], None]


@dataclass(frozen=True)
class ManualSchedule:
    """A registered hand schedule and where it came from."""

    name: str
    func: ScheduleFn
    match: str | None
    workload_hash: str | None
    source_file: str
    source_sha256: str

    def applies_to(self, task) -> bool:
        """Whether this schedule is for ``task`` (a ``frontend.tasks.Task``), by hash or name glob."""
        if self.workload_hash is not None:
            return task.structural_hash == self.workload_hash
        return fnmatch.fnmatchcase(task.name, self.match or "")

    def source(self) -> dict:
        return {"name": self.name, "file": self.source_file, "sha256": self.source_sha256}


_registered: list[ManualSchedule] = []


def schedule(name: str, match: str | None = None, workload_hash: str | None = None
             ) -> Callable[[ScheduleFn], ScheduleFn]:
    """Register the decorated function as the hand schedule ``name`` for matching tasks."""
    if (match is None) == (workload_hash is None):
        raise AutotuneError(f"manual schedule {name!r}: give exactly one of match= or workload_hash=")

    def register(func: ScheduleFn) -> ScheduleFn:
        path = Path(inspect.getfile(func)).resolve()
        _registered.append(ManualSchedule(name, func, match, workload_hash, str(path), sha256_of(path)))
        return func
    return register


def load_schedules(path: str | Path) -> list[ManualSchedule]:
    """Import a schedule module from ``path`` and return the schedules it registers."""
    path = Path(path)
    if not path.is_file():
        raise AutotuneError(f"manual schedule module not found: {path}")
    spec = importlib.util.spec_from_file_location(f"autotune_manual_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    before = len(_registered)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise AutotuneError(f"cannot import manual schedule module {path}: "
                            f"{type(err).__name__}: {err}") from None
    found = _registered[before:]
    del _registered[before:]
    if not found:
        raise AutotuneError(f"{path} registers no schedule: decorate functions with "
                            "@autotune.manual.schedule(name, match=...)")
    return found
