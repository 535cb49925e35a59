"""Measuring over TVM RPC on loopback: a tracker and two servers, one killed in the middle of a job."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

import autotune
from autotune.cli import main
from autotune.errors import AutotuneError
from autotune.measure.rpc import RpcTarget, check_bind, count_servers, start_tracker
from autotune.search.driver import SearchConfig

from .conftest import TINY_SHAPE_FLAGS, TINY_SHAPES, run_env

KEY = "test-cpu"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """``autotune rpc ...`` in its own process group, so a kill takes its session processes too."""

    def __init__(self, log: Path, *args: str):
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "autotune.cli", "rpc", *args],
                                            stdout=out, stderr=subprocess.STDOUT, env=run_env(),
                                            start_new_session=True)

    def wait_listening(self, timeout_s: float = 60.0) -> int:
        """The port it printed it listens on."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            for line in self.log.read_text().splitlines():
                if " listening on 127.0.0.1:" in line:
                    return int(line.split(" listening on 127.0.0.1:")[1].split()[0])
            time.sleep(0.1)
        raise AssertionError(f"no 'listening on' from {self.log.name}: {self.log.read_text()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A tracker (in a child process) and two ``autotune rpc server``s under ``KEY``, all on loopback.

    Yields the tracker address, the ports listening, and the servers.
    """
    folder = tmp_path_factory.mktemp("rpc")
    tracker = start_tracker(port=free_port())
    servers: list[Service] = []
    try:
        address = f"{tracker.host}:{tracker.port}"
        servers += [Service(folder / f"server{i}.log", "server", "--key", KEY, "--tracker", address,
                            "--port", str(free_port())) for i in range(2)]
        ports = [tracker.port, *(server.wait_listening() for server in servers)]
        target = RpcTarget(tracker.host, tracker.port, KEY)
        deadline = time.monotonic() + 30
        while _registered(target) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _registered(target) == 2
        yield address, ports, servers
    finally:
        for server in servers:
            server.kill()
        tracker.proc.kill()


def _registered(target: RpcTarget) -> int:
    try:
        return count_servers(target)
    except AutotuneError:
        return 0


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) listening on ``port``."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    local = [row[1].split(":") for row in rows if row[3] == "0A"]  # 0A: LISTEN
    return {address for address, hex_port in local if int(hex_port, 16) == port}


def test_tracker_and_servers_bind_loopback_by_default(cluster, capsys):
    _, ports, _ = cluster
    assert all(_listening_addresses(port) == {"0100007F"} for port in ports)
    with pytest.raises(AutotuneError, match="--allow-remote"):
        start_tracker(host="0.0.0.0")
    check_bind("0.0.0.0", allow_remote=True)
    assert "plaintext" in capsys.readouterr().err


def test_tune_over_rpc_survives_a_server_killed_mid_job(cluster, tmp_path, tiny_translation):
    tracker, _, servers = cluster
    db = tmp_path / "rpc.db"
    killed_at: list[int] = []  # the last record id before the kill
    stop = threading.Event()

    def kill_in_second_session() -> None:
        """SIGKILL server 0 while it loads its second candidate (the tracker alternates servers)."""
        while not stop.is_set():
            if servers[0].log.read_text().count("load_module") >= 2:
                servers[0].kill()
                killed_at.append(_last_record_id(db))
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_in_second_session)
    killer.start()
    try:
        summary = autotune.tune(tiny_translation, TINY_SHAPES, "host", f"sqlite:///{db}", trials=36,
                                config=SearchConfig(trials_per_round=4), rpc=tracker, rpc_key=KEY)
    finally:
        stop.set()
        killer.join()
    assert killed_at, "server 0 never loaded a second candidate"
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT id, latency_s, error_msg FROM tuning_records "
                            "WHERE provenance != 'confirm'").fetchall()
        runners = {r for (r,) in conn.execute("SELECT DISTINCT runner FROM tuning_records")}
    assert summary["trials_measured"] == len(rows) == 36
    assert runners == {f"rpc:{KEY}@{tracker}"}  # every record names who timed it
    failed = [error for _, latency, error in rows if latency is None]
    assert all(error.startswith("run failed over RPC") for error in failed)
    assert sum(1 for row_id, latency, _ in rows if row_id > killed_at[0] and latency is not None) >= 10
    print(f"RPC: {summary['time_split_s']} for {len(rows)} candidates; failed: {failed}")


def _last_record_id(db: Path) -> int:
    with closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute("SELECT COALESCE(MAX(id), 0) FROM tuning_records").fetchone()[0]


def test_rpc_without_a_tracker_is_a_one_line_error(tmp_path, tiny_translation, capsys):
    port = free_port()
    code = main(["tune", str(tiny_translation), *TINY_SHAPE_FLAGS, "--db", f"sqlite:///{tmp_path}/x.db",
                 "--trials", "4", "--rpc", f"127.0.0.1:{port}", "--rpc-key", KEY])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f"127.0.0.1:{port}" in err
