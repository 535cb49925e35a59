"""Helpers of the fault-injection tests: tuning jobs in subprocesses, their workers, their records,
file systems that fill up or turn read-only, and the counts ``scripts/chaos.py`` adds up."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import run_env

REPORT_ENV = "AUTOTUNE_CHAOS_REPORT"  # scripts/chaos.py: a JSON-lines file each fault adds a line to


def chaos_record(fault: str, injected: int = 1, completed: int = 0, records_lost: int = 0,
                 artifacts_broken: int = 0) -> None:
    """Count a fault for ``scripts/chaos.py`` (nothing when it does not run the tests)."""
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"fault": fault, "injected": injected, "completed": completed,
                                  "records_lost": records_lost, "artifacts_broken": artifacts_broken}) + "\n")


def cli(*args: str) -> list[str]:
    """The command line of ``autotune ARGS`` with this interpreter."""
    return [sys.executable, "-m", "autotune.cli", *args]


def tune_command(model, db_url: str, trials: int, shape_flags: list[str], *extra: str) -> list[str]:
    return cli("tune", str(model), *shape_flags, "--trials", str(trials), "--db", db_url, "--json",
               "--quiet", *extra)


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(db_path) -> list[tuple[int, int]]:
    """(id, job id) of every trial record (confirmations excluded), in order; none before the
    database exists."""
    if not Path(db_path).exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT id, job_id FROM tuning_records WHERE provenance != 'confirm' "
                            "ORDER BY id").fetchall()


def job_status(db_path, job_id: int) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


def wait_for_records(db_path, count: int, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(records(db_path)) >= count:
                return
        except sqlite3.OperationalError:
            pass  # not created yet
        time.sleep(0.2)
    out, err = proc.communicate() if proc.poll() is not None else ("", "")
    pytest.fail(f"tuner never reached {count} records (exit code {proc.poll()}): {err[-1500:]}")


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def workers_of(pid: int) -> list[int]:
    """The measurement workers a tuning process started."""
    return [child for child in children(pid) if "autotune.measure.workers" in _cmdline(child)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def scratch_folders(pid: int) -> list[str]:
    """The candidate-build folders of process ``pid`` left in the temporary folder."""
    return [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(f"autotune-measure-{pid}-")]


@contextlib.contextmanager
def mounted(folder: Path, options: list[str], source: str = "tmpfs", kind: list[str] = ("-t", "tmpfs")):
    """A file system mounted at ``folder`` for the block (skips the test where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", *kind, "-o", ",".join(options), source, str(folder)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a file system here: {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount(folder: Path, options: list[str]) -> None:
    subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(folder)], check=True,
                   capture_output=True)
