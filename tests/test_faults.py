"""Fault injection: a tuning job that meets a signal, a dead worker, a rival, a database turned
read-only or a full disk stops cleanly (one line, its exit code, no worker left), loses no
committed record, and resumes to its exact budget. Each run is a real ``autotune tune`` process;
the file systems are real mounts (skipped where this machine does not allow mounting).
``scripts/chaos.py`` runs these, the slow repetitions included, and adds up their counts."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import time

import pytest

from .conftest import TINY_SHAPE_FLAGS, run_env
from .faults import (alive, chaos_record, cli, job_status, mounted, records, remount, scratch_folders, start,
                     tune_command, wait_for_records, workers_of)

BUDGET = 60


def _finish(command: list[str]) -> dict:
    done = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _stopped(proc: subprocess.Popen, timeout_s: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout_s)
    lines = [line for line in err.splitlines() if line.startswith("autotune:")]
    return proc.returncode, "\n".join(lines)


def _resume_to_budget(command: list[str], db_path, survived: list, fault: str, injected: int = 1,
                      budget: int = BUDGET) -> dict:
    summary = _finish(command)
    final = records(db_path)
    lost = len(set(survived) - set(final))
    assert lost == 0 and summary["resumed"] is True
    assert len(final) == summary["trials_measured"] == budget  # nothing measured twice, nothing skipped
    chaos_record(fault, injected=injected, completed=1, records_lost=lost)
    return summary


def _sigterm_once(command: list[str], db_path, moments: random.Random) -> list:
    proc = start(command)
    wait_for_records(db_path, len(records(db_path)) + 6, proc)
    time.sleep(moments.uniform(0.0, 2.0))
    workers = workers_of(proc.pid)
    assert workers, "the tuning process has no measurement workers to check"
    proc.send_signal(signal.SIGTERM)
    code, err = _stopped(proc)
    assert code == 143 and "interrupted; rerun the same command to resume" in err, err
    time.sleep(0.5)
    assert not [pid for pid in workers if alive(pid)], "a worker outlived its parent"
    assert scratch_folders(proc.pid) == []
    return records(db_path)


@pytest.mark.parametrize("terms", [pytest.param(1, id="once"), pytest.param(5, marks=pytest.mark.slow, id="5x")])
def test_sigterm_stops_cleanly_and_the_rerun_resumes_to_the_exact_budget(tmp_path, tiny_translation, terms):
    db_path = tmp_path / "term.db"
    budget = BUDGET * terms  # each SIGTERM comes after a few more records: the job must not finish first
    command = tune_command(tiny_translation, f"sqlite:///{db_path}", budget, TINY_SHAPE_FLAGS)
    survived: list = []
    moments = random.Random(terms)
    for _ in range(terms):
        now = _sigterm_once(command, db_path, moments)
        assert set(survived) <= set(now)
        survived = now
    job = {job for _, job in survived}.pop()
    assert job_status(db_path, job) == "interrupted"
    _resume_to_budget(command, db_path, survived, "SIGTERM of tune", terms, budget)


def test_two_identical_tunes_at_once_one_refuses_naming_the_other(tmp_path, tiny_translation):
    db_path = tmp_path / "twice.db"
    command = tune_command(tiny_translation, f"sqlite:///{db_path}", BUDGET, TINY_SHAPE_FLAGS)
    first = start(command)
    wait_for_records(db_path, 4, first)
    second = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=300)
    lines = [line for line in second.stderr.splitlines() if line.startswith("autotune:")]
    assert second.returncode == 2 and len(lines) == 1, second.stderr[-1500:]
    assert f"pid {first.pid} on {socket.gethostname()}" in lines[0] and "is running" in lines[0]
    first.send_signal(signal.SIGTERM)
    assert _stopped(first)[0] == 143
    _resume_to_budget(command, db_path, records(db_path), "two identical tunes")


@pytest.mark.parametrize("role, kills", [pytest.param("any", 2, id="2x"),
                                         pytest.param("builder", 10, marks=pytest.mark.slow, id="builder-10x"),
                                         pytest.param("runner", 10, marks=pytest.mark.slow, id="runner-10x")])
def test_workers_killed_mid_candidate_fail_only_their_trials(tmp_path, tiny_translation, role, kills):
    """kill -9 of a builder or runner worker at random moments: the job replaces it and ends with
    its whole budget measured (the killed candidates recorded as failures)."""
    db_path = tmp_path / "workers.db"
    command = tune_command(tiny_translation, f"sqlite:///{db_path}", BUDGET + 40, TINY_SHAPE_FLAGS,
                           "--no-confirm")
    proc = start(command)
    moments = random.Random(kills)
    wait_for_records(db_path, 4, proc)
    killed = 0
    while killed < kills and proc.poll() is None:
        time.sleep(moments.uniform(0.3, 1.5))
        workers = workers_of(proc.pid)
        pool = [w for w in workers if role == "any" or f"AUTOTUNE_WORKER_ROLE={role}" in _environ(w)]
        if pool:
            subprocess.run(["kill", "-9", str(moments.choice(pool))])
            killed += 1
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    assert killed == kills, f"only {killed} of {kills} {role} workers were found to kill"
    summary = json.loads(out)
    assert len(records(db_path)) == summary["trials_measured"] == BUDGET + 40
    chaos_record(f"kill -9 of a worker ({role})", injected=killed, completed=1)


def _environ(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
    except OSError:
        return ""


def _stops_with_exit_4(proc: subprocess.Popen, advice: str) -> None:
    code, err = _stopped(proc, timeout_s=300)
    assert code == 4 and advice in err and "rerun the same command" in err, (code, err)


def test_read_only_commands_work_on_a_read_only_database(tmp_path, tiny_translation):
    """History on a database mounted read-only (the tuning job itself meets a read-only database in
    ``test_postgres``: a file system with a writer cannot be turned read-only under it)."""
    with mounted(tmp_path / "src", ["size=64m"]) as source:
        db_path = source / "tune.db"
        _finish(tune_command(tiny_translation, f"sqlite:///{db_path}", 8, TINY_SHAPE_FLAGS, "--no-confirm"))
        with mounted(tmp_path / "ro", ["bind"], source=str(source), kind=()) as view:
            remount(view, ["ro", "bind"])
            history = subprocess.run(cli("history", "jobs", "--db", f"sqlite:///{view / 'tune.db'}", "--json"), env=run_env(), capture_output=True, text=True, timeout=120)
            assert history.returncode == 0, history.stderr[-1500:]
            assert json.loads(history.stdout)["rows"][0]["trials"] == 8


def test_the_disk_filled_mid_job(tmp_path, tiny_translation):
    with mounted(tmp_path / "full", ["size=24m"]) as folder:
        db_path = folder / "tune.db"
        command = tune_command(tiny_translation, f"sqlite:///{db_path}", BUDGET, TINY_SHAPE_FLAGS)
        proc = start(command)
        wait_for_records(db_path, 8, proc)
        filler = folder / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
        _stops_with_exit_4(proc, "free space")
        survived = records(db_path)
        filler.unlink()
        _resume_to_budget(command, db_path, survived, "disk full mid-job")
