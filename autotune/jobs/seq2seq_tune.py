"""``tune --task seq2seq``: one tuning job over a translation model's three parts.

The encoder, the first decoder step and the decoder step with past (``jobs.generator_parts``) are
tuned one after the other into the same database, each as a range job of its own, so that a rerun
of the same command resumes every part where it stopped, and a part whose kernels another part
already tuned (the same workload) takes that part's records. The budget is split by where
generation spends its time: a part's share follows its roofline time per call (each task's
``max(FLOPs ÷ FMA peak, bytes ÷ bandwidth)`` at this host's measured peaks) times how often
generating ``max_new_tokens`` tokens calls it, so at long outputs the cached step gets most of it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..common.results import Result
from ..errors import AutotuneError
from ..frontend.seq2seq import read_seq2seq
from ..runtime.generator import PART_NAMES
from .generator_parts import calls_per_generation, check_new_tokens, part_models, part_shapes, source_range
from .prepare import Prepared, prepare
from .tune import ProgressFn, TuneOptions, check_budget, tune_prepared

MIN_SHARE = 0.1  # every part gets at least this share of the budget: each runs at least once a call


@dataclass
class Seq2SeqTuneSummary(Result):
    """The parts' tuning jobs, the budget share each got, and the totals."""

    folder: str
    budget_shares: dict[str, float]
    parts: dict[str, dict]  # each part's ``TuneSummary``
    trials_measured: int
    failures: int
    tuning_seconds: float


def tune_seq2seq(folder: str | Path, source: str, max_new_tokens: int, options: TuneOptions,
                 progress: ProgressFn | None = None) -> Seq2SeqTuneSummary:
    """Tune the seq2seq export in ``folder`` for sources ``source`` (``input_ids``' range, e.g.
    ``1..8x1..64``: rows, counting beams, × tokens) and up to ``max_new_tokens`` tokens, within
    ``options``' budget over all three parts."""
    check_budget(options)
    if options.tune_shapes:
        raise AutotuneError("--tune-shapes names shapes of one model's inputs; --task seq2seq tunes each "
                            "part at a spread over its ranges")
    layout = read_seq2seq(folder)
    rows, length = source_range(source)
    check_new_tokens(max_new_tokens)
    with tempfile.TemporaryDirectory(prefix="autotune-seq2seq-") as work:
        paths = part_models(layout, Path(work))
        shapes = {name: part_shapes(name, layout, rows, length, max_new_tokens) for name in PART_NAMES}
        prepared = {name: prepare(paths[name], shapes[name], options.target, options.fusion, options.precision,
                                  for_tuning=True) for name in PART_NAMES}
        shares = budget_shares(prepared, max_new_tokens)
        summaries = {}
        for name in PART_NAMES:
            if progress:
                progress({"part": name, "share": shares[name]})
            part_options = replace(options, shapes=shapes[name], **_part_budget(options, shares[name]))
            summaries[name] = tune_prepared(paths[name], prepared[name], part_options, progress)
    return Seq2SeqTuneSummary(
        folder=str(folder), budget_shares=shares, parts={n: s.as_dict() for n, s in summaries.items()},
        trials_measured=sum(s.trials_measured for s in summaries.values()),
        failures=sum(s.failures for s in summaries.values()),
        tuning_seconds=round(sum(s.tuning_seconds for s in summaries.values()), 2))


def budget_shares(prepared: dict[str, Prepared], max_new_tokens: int) -> dict[str, float]:
    """Each part's share of the budget: its roofline time per generation, at least ``MIN_SHARE``,
    rounded (the shares are part of each part's resume key)."""
    from ..bench.peaks import host_peaks
    from ..targets.names import target_cores
    from .profile import buffer_bytes

    target = next(iter(prepared.values())).target
    peaks = host_peaks(target_cores(target))

    seconds = {name: calls_per_generation(name, max_new_tokens)
               * sum(t.weight * peaks.floor_s(t.flops, buffer_bytes(t.mod["main"])) for t in p.tasks)
               for name, p in prepared.items()}
    total = sum(seconds.values()) or 1.0
    floored = {name: max(s / total, MIN_SHARE) for name, s in seconds.items()}
    scale = sum(floored.values())
    return {name: round(share / scale, 2) for name, share in floored.items()}


def _part_budget(options: TuneOptions, share: float) -> dict:
    """A part's trials and seconds: its share of each budget given (at least one trial)."""
    budget = {}
    if options.trials is not None:
        budget["trials"] = max(1, round(options.trials * share))
    if options.time_budget_s is not None:
        budget["time_budget_s"] = options.time_budget_s * share
    return budget
