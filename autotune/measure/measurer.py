"""MetaSchedule builder and runner on warm worker processes.

Stock ``LocalBuilder`` starts fresh processes for every batch, each paying for the import of
``tvm.s_tir.tensor_intrin`` (tens of seconds); here workers stay warm across batches, builds run in parallel, and
measurements run one at a time in a separate worker so they do not disturb each other. A candidate
that crashes, hangs or segfaults fails alone with its reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import TYPE_CHECKING

from ..backends import backend_for
from ..common.processes import process_alive
from ..common.threads import thread_env
from ..errors import AutotuneError
from ..targets.host import usable_cores
from .config import MeasureConfig, default_memory_limit_mb
from .workers import MEMORY_ENV, ROLE_ENV, WorkerPool

if TYPE_CHECKING:
    from .rpc import RpcTarget


def make_builder(pool: WorkerPool, timeout_s: float):
    """A MetaSchedule ``Builder`` that compiles candidates on ``pool``."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder

    @derived_object
    class WarmBuilder(PyBuilder):
        """Builds candidates in parallel on warm workers."""

        def build(self, build_inputs):
            jobs = [(tvm.ir.save_json(inp.mod), str(inp.target)) for inp in build_inputs]
            results = pool.map("build", jobs, timeout_s)
            return [BuilderResult(r.value, None) if r.error is None
                    else BuilderResult(None, f"build failed: {r.error}") for r in results]

    return WarmBuilder()


def make_runner(pool: WorkerPool, config: MeasureConfig):
    """A MetaSchedule ``Runner`` that times candidates one after another on ``pool``."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    @derived_object
    class MedianRunner(PyRunner):
        """Times each candidate as the median of short repeats."""

        def run(self, runner_inputs):
            jobs = [(inp.artifact_path, [a.as_json() for a in inp.args_info], inp.device_type,
                     config.number, config.repeat, config.min_repeat_ms) for inp in runner_inputs]
            results = pool.map("run", jobs, config.run_timeout_s)
            return [LocalRunnerFuture(res=r.value, error_message=None) if r.error is None
                    else LocalRunnerFuture(res=None, error_message=f"run failed: {r.error}")
                    for r in results]

    return MedianRunner()


class Measurer:
    """Owns the worker pools; use as a context manager so workers always stop.

    With ``rpc``, candidates still build here but are timed on the servers registered under its key.
    """

    def __init__(self, config: MeasureConfig = MeasureConfig(), rpc: RpcTarget | None = None):
        self.config = config
        self.rpc = rpc
        self.scratch = scratch_folder()
        env = {"TMPDIR": self.scratch, MEMORY_ENV: str(config.memory_limit_mb or default_memory_limit_mb())}
        if rpc is None:
            self._run_side = WorkerPool(1, {**env, ROLE_ENV: "runner", **thread_env(config.threads or usable_cores())})
            self.runner = make_runner(self._run_side, config)
        else:
            from .rpc import make_rpc_runner

            self.runner = self._run_side = make_rpc_runner(rpc, config)
        self._build_pool = WorkerPool(config.build_workers, {**env, ROLE_ENV: "builder"})
        self.builder = make_builder(self._build_pool, config.build_timeout_s)
        self.runner_id = (f"rpc:{rpc.key}@{rpc.host}:{rpc.port}" if rpc is not None
                          else f"local:{socket.gethostname()}")  # who timed what this measurer records

    def run_built(self, artifact_path: str, target, args_info):
        """Time one built candidate of ``target`` on the runner; its ``RunnerResult``."""
        from tvm.s_tir.meta_schedule.runner import RunnerInput

        device = backend_for(target).device_type
        return self.runner.run([RunnerInput(artifact_path, device, args_info)])[0].result()

    def profile(self, paths: list[str], inputs_path: str, rounds: int, inferences: int,
                timeout_s: float) -> list[dict]:
        """Time the kernels of compiled models in place, on the run worker (``worker_jobs.profile``)."""
        if self.rpc is not None:
            raise AutotuneError("in-place kernel timing needs a local runner, not an RPC tracker")
        result = self._run_side.map("profile", [(paths, inputs_path, rounds, inferences)], timeout_s)[0]
        if result.error is not None:
            raise AutotuneError(f"timing kernels in place failed: {result.error}")
        return result.value

    @property
    def fault(self):
        """Why the workers could not go on (an ``EnvironmentFault``), if that happened."""
        return self._build_pool.fault or getattr(self._run_side, "fault", None)

    def seconds(self) -> dict[str, float]:
        """Wall time spent building and running candidates so far."""
        return {"build": self._build_pool.busy_seconds, "run": self._run_side.busy_seconds}

    def __enter__(self) -> Measurer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers and remove what they built."""
        self._build_pool.close()
        self._run_side.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


SCRATCH_PREFIX = "autotune-measure-"


def scratch_folder() -> str:
    """A new folder for this process's candidate builds (``autotune-measure-PID-…``), after removing
    those of processes that died without removing theirs."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if name.startswith(SCRATCH_PREFIX):
            owner = name[len(SCRATCH_PREFIX):].split("-", 1)[0]
            if owner.isdigit() and not process_alive(int(owner)):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")

