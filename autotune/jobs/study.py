"""Graph-level search with Optuna: knobs from a search space, objective = measured model latency.

Each Optuna trial picks a graph configuration (threads, fusion, how the operator budget is split,
precision), tunes the operators under it (records shared through the workload database, so
configurations reuse each other's measurements), compiles, validates against ONNX Runtime (a
configuration past the space's tolerance is pruned as infeasible) and measures end-to-end p50.
The study lives in the same database (Optuna's RDB storage on the same URL): rerunning resumes
it, and several workers can share it on PostgreSQL (not SQLite: optuna#4034).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..backends import backend_named
from ..bench.timing import BenchConfig, summarize, time_runs
from ..common.threads import set_tvm_threads
from ..errors import AutotuneError
from ..space import SearchSpace
from ..store.engine import Store, resolve_db_url
from ..targets.names import named_targets, parse_target

P50_RUNS = 30  # runs that a trial's p50 latency is the median of


def _storage(db_url: str):
    """Optuna's RDB storage on the same URL, a dead worker's trial retried once (heartbeats)."""
    import warnings

    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5, and its only way
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(db_url, heartbeat_interval=60, grace_period=180,
                                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))


def study_name(model: Path, space: SearchSpace) -> str:
    """The study's name: one study per model and search space."""
    return f"{model.stem}:{space.name}"


def target_for(space: SearchSpace, threads: int | None):
    """The space's target with ``num-cores`` set to the configuration's thread count."""
    if threads is None:
        return parse_target(space.target)
    named = named_targets(threads)
    if space.target not in named or not backend_named(named[space.target]["kind"]).threaded:
        raise AutotuneError(f"{space.path}: graph.threads needs a named CPU target, got {space.target!r}")
    return parse_target(json.dumps(named[space.target]))


def _measure_p50_ms(so_path: Path, threads: int | None) -> float:
    from ..frontend.inputs import manifest_inputs
    from ..runtime.loader import load

    if threads:
        set_tvm_threads(threads)
    model = load(so_path)
    _, inputs = manifest_inputs(model.manifest)
    return summarize(time_runs(lambda: model(inputs), BenchConfig(count=P50_RUNS, warmup=5)), 1).p50_ms


def _objective(model: Path, shapes: dict, space: SearchSpace, db_url: str, folder: Path,
               progress: Callable[[dict], None] | None):
    import optuna

    from ..search.driver import SearchConfig
    from .compile import CompileOptions, compile
    from .tune import TuneOptions, tune

    def objective(trial: optuna.Trial) -> float:
        knobs = {name: trial.suggest_categorical(name, values) for name, values in space.graph.items()}
        target = target_for(space, knobs.get("threads"))
        config = SearchConfig(trials_per_round=knobs.get("trials_per_round"))
        fusion, precision = knobs.get("fusion", "full"), knobs.get("precision", "fp32")
        summary = tune(model, TuneOptions(shapes, target, db_url, trials=space.trials,
                                          time_budget_s=space.time_s, config=config, fusion=fusion,
                                          manual=space.manual_modules, precision=precision, confirm=False))
        so_path = folder / f"trial_{trial.number}.so"
        try:
            built = compile(model, so_path, CompileOptions(shapes, target, db_url, rtol=space.rtol,
                                                           atol=space.atol, fusion=fusion, pins=space.pin,
                                                           precision=precision))
        except AutotuneError as err:
            trial.set_user_attr("infeasible", str(err))
            raise optuna.TrialPruned(str(err)) from None
        latency = _measure_p50_ms(so_path, knobs.get("threads"))
        trial.set_user_attr("job_id", summary.job_id)
        trial.set_user_attr("validation", built.validation)
        if progress:
            progress({"trial": trial.number, "knobs": knobs, "p50_ms": latency})
        return latency
    return objective


def run_study(model: str | Path, shapes: dict, space: SearchSpace, db: str | None = None,
              trials: int | None = None, progress: Callable[[dict], None] | None = None):
    """Run (or resume) the study until ``trials`` configurations are explored; returns the study.

    Completed and pruned (infeasible) trials count; a trial interrupted or failed is run again.
    """
    import optuna

    if not space.graph:
        raise AutotuneError(f"{space.path}: no 'graph' knobs to search")
    model, db_url = Path(model), resolve_db_url(db)
    Store(db_url)  # creates or checks the autotune schema (and fails clearly on a bad URL)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name(model, space), storage=_storage(db_url),
                                direction="minimize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))
    explored = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished = sum(1 for t in study.trials if t.state in explored)  # failed/interrupted ones rerun
    remaining = max(0, (trials or space.study_trials) - finished)
    with tempfile.TemporaryDirectory(prefix="autotune-study-") as folder:
        study.optimize(_objective(model, shapes, space, db_url, Path(folder), progress),
                       n_trials=remaining, catch=())
    return study


def best_configuration(study) -> dict:
    """The best finished trial's knobs and latency."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise AutotuneError(f"study {study.study_name!r} has no completed trial yet")
    best = min(done, key=lambda t: t.value)
    return {"trial": best.number, "knobs": best.params, "p50_ms": best.value,
            "job_id": best.user_attrs.get("job_id")}
