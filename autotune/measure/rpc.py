"""Measure on other machines through TVM RPC: a tracker, servers that register with it, a runner.

TVM RPC is plaintext and unauthenticated: anyone who reaches a server can upload code and run it
there. So the tracker and servers bind 127.0.0.1 unless another address is asked for explicitly,
with ``allow_remote``, and then a warning is printed. Builds stay on this machine (warm workers);
the runner uploads each built artifact to a free server under the key, which links and times it.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
import time
from dataclasses import dataclass

from ..common.text import last_line
from ..errors import AutotuneError
from .config import MeasureConfig

LOOPBACK = "127.0.0.1"
SERVER_PORT_SEARCH = 100  # a server takes the first free port from --port on; the tracker tells clients


@dataclass(frozen=True)
class RpcTarget:
    """The devices registered under ``key`` at the tracker ``host:port``."""

    host: str
    port: int
    key: str

    def __str__(self) -> str:
        return f"key {self.key!r} at the RPC tracker {self.host}:{self.port}"


def parse_address(text: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` as a (host, port) pair."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AutotuneError(f"bad {flag} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def rpc_target(address: str | None, key: str | None) -> RpcTarget:
    """The ``--rpc HOST:PORT --rpc-key KEY`` pair, checked to have servers registered."""
    if not address or not key:
        raise AutotuneError("measuring over RPC needs both --rpc HOST:PORT and --rpc-key KEY")
    target = RpcTarget(*parse_address(address, "--rpc"), key)
    count_servers(target)
    return target


def count_servers(target: RpcTarget, timeout_s: float = 10.0) -> int:
    """How many servers are registered under the target's key; raises if none or no tracker."""
    from tvm import rpc

    _probe_tracker(target.host, target.port, timeout_s)
    try:
        tracker = rpc.connect_tracker(target.host, target.port)
        summary = tracker.summary()
        tracker.close()
    except (OSError, RuntimeError) as err:
        raise AutotuneError(f"no RPC tracker answers at {target.host}:{target.port} "
                            f"({last_line(err)})") from None
    count = sum(1 for info in summary["server_info"] if info["key"] == f"server:{target.key}")
    if count == 0:
        raise AutotuneError(f"no RPC server is registered under {target}; start one with "
                            f"`autotune rpc server --key {target.key} --tracker "
                            f"{target.host}:{target.port}` on the measuring machine")
    return count


def _probe_tracker(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Fail fast where TVM's own connect would retry a refused connection for a minute."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise AutotuneError(f"cannot reach the RPC tracker at {host}:{port} ({err.strerror or err}); "
                            "start one with `autotune rpc tracker`") from None


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback ``host`` unless ``allow_remote``; warn when it is allowed."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return
    if not allow_remote:
        raise AutotuneError(f"--host {host} would accept connections from other machines, and TVM "
                            "RPC runs whatever code its peers send: add --allow-remote on a "
                            "trusted network")
    print(f"autotune: warning: listening on {host}: TVM RPC is plaintext and trusts its peers; "
          "anyone who can reach this port can run code on this machine", file=sys.stderr)


def start_tracker(host: str = LOOPBACK, port: int = 9190, allow_remote: bool = False):
    """A ``tvm.rpc.tracker.Tracker`` in a child process, listening on exactly ``host:port``."""
    check_bind(host, allow_remote)
    try:
        from tvm.rpc.tracker import Tracker
    except ImportError:
        raise AutotuneError("the RPC tracker needs the tornado package: pip install tornado") from None
    _check_can_listen(host, port)
    return Tracker(host, port, port_end=port + 1, silent=True)


def _check_can_listen(host: str, port: int) -> None:
    """Fail cleanly here: a ``Tracker`` that fails to bind leaves its child process behind."""
    from tvm.rpc.base import get_addr_family

    try:
        with socket.socket(get_addr_family((host, port)), socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        raise AutotuneError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None


def start_server(key: str, tracker: str = f"{LOOPBACK}:9190", host: str = LOOPBACK, port: int = 9090,
                 allow_remote: bool = False):
    """A ``tvm.rpc.Server`` in a child process, registered under ``key`` at ``tracker``.

    It takes the first free port from ``port`` on; clients find it through the tracker.
    """
    from tvm import rpc

    check_bind(host, allow_remote)
    tracker_addr = parse_address(tracker, "--tracker")
    _probe_tracker(*tracker_addr)
    try:
        return rpc.Server(host, port, port_end=port + SERVER_PORT_SEARCH, tracker_addr=tracker_addr,
                          key=key)
    except (OSError, ValueError) as err:
        raise AutotuneError(f"cannot listen on {host}:{port} ({last_line(err)})") from None


def serve_forever(service, what: str) -> None:
    """Print where a started tracker or server listens, and keep it until Ctrl-C or SIGTERM."""
    def interrupt(*_) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    print(f"{what} listening on {service.host}:{service.port} (Ctrl-C to stop)", flush=True)
    try:
        service.proc.join()
    except KeyboardInterrupt:
        pass
    finally:
        service.proc.kill()


def alloc_arguments(session, device, args_info: list, alloc_repeat: int) -> list[list]:
    """``RPCRunner`` arguments as local measuring makes them: random floats, zero integers.

    TVM's default fills integers with random bits, so ``take`` would read far out of bounds.
    """
    from .worker_jobs import candidate_argument

    return [[candidate_argument(info, device) for info in args_info] for _ in range(alloc_repeat)]


def make_rpc_runner(target: RpcTarget, config: MeasureConfig):
    """A MetaSchedule ``Runner`` timing candidates on every server registered under the key.

    It waits for its batch (as the local runner does), so ``busy_seconds`` is the time spent
    measuring; ``close`` stops the connection workers.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    rpc_runner = ms.runner.RPCRunner(
        rpc_config=ms.runner.RPCConfig(target.host, target.port, target.key,
                                       session_timeout_sec=config.run_timeout_s),
        evaluator_config=ms.runner.EvaluatorConfig(number=config.number, repeat=config.repeat,
                                                   min_repeat_ms=config.min_repeat_ms),
        f_alloc_argument=alloc_arguments, max_workers=count_servers(target))

    @derived_object
    class RemoteRunner(ms.runner.PyRunner):
        """``RPCRunner`` timed, its results handed back complete, each error as one line."""

        def __init__(self) -> None:
            super().__init__()
            self.busy_seconds = 0.0

        def run(self, runner_inputs):
            started = time.monotonic()
            results = [future.result() for future in rpc_runner.run(runner_inputs)]
            self.busy_seconds += time.monotonic() - started
            return [LocalRunnerFuture(res=r.run_secs) if r.error_msg is None
                    else LocalRunnerFuture(error_message=f"run failed over RPC: {last_line(r.error_msg)}")
                    for r in results]

        def close(self) -> None:
            rpc_runner.pool.shutdown()

    return RemoteRunner()
