"""Reports of tuning history: PNG plots and a self-contained HTML page (matplotlib's Agg backend)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from .errors import AutotuneError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, output: Path | io.BytesIO) -> None:
    fig.tight_layout()
    fig.savefig(output, dpi=110, format="png")
    _pyplot().close(fig)


def curve_figure(points: list[dict], job_id: int):
    """Estimated model latency against trials and against tuning time, side by side."""
    known = [p for p in points if p["estimated_latency_ms"] is not None]
    if not known:
        raise AutotuneError(f"job {job_id} has no complete estimate yet: every task needs a measurement")
    fig, (by_trial, by_time) = _pyplot().subplots(1, 2, figsize=(11, 4), sharey=True)
    by_trial.step([p["trial"] for p in known], [p["estimated_latency_ms"] for p in known], where="post")
    by_trial.set(xlabel="measured trials", ylabel="estimated latency (ms)", title=f"job {job_id}")
    timed = [p for p in known if p["seconds"] is not None]
    by_time.step([p["seconds"] for p in timed], [p["estimated_latency_ms"] for p in timed], where="post")
    by_time.set(xlabel="tuning time (s)", title="best so far against wall time")
    for axis in (by_trial, by_time):
        axis.grid(alpha=0.3)
    return fig


def breakdown_figure(rows: list[dict], job_id: int, top: int = 15):
    """Horizontal bars: each task's weighted latency untuned vs tuned, heaviest first."""
    rows = [r for r in rows if r["tuned_ms"] is not None][:top][::-1]
    fig, axis = _pyplot().subplots(figsize=(11, 0.35 * len(rows) + 1.5))
    positions = range(len(rows))
    axis.barh([p + 0.2 for p in positions], [r["untuned_ms"] or 0 for r in rows], 0.4, label="untuned")
    axis.barh([p - 0.2 for p in positions], [r["tuned_ms"] for r in rows], 0.4, label="tuned")
    axis.set_yticks(list(positions), [r["task"][:60] for r in rows], fontsize=7)
    axis.set(xscale="log", xlabel="weighted latency (ms, log)", title=f"job {job_id}: where the time goes")
    axis.legend()
    return fig


def study_figures(study) -> list:
    """The Optuna study as Optuna users know it (``optuna.visualization.matplotlib``): the
    optimization history, and with two or more distinct finished trials the parameter
    importances, slice and parallel-coordinate plots."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    _pyplot()
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    plots = [optuna_plots.plot_optimization_history]
    if len(done) >= 2 and len({tuple(sorted(t.params.items())) for t in done}) >= 2:
        plots += [optuna_plots.plot_param_importances, optuna_plots.plot_slice,
                  optuna_plots.plot_parallel_coordinate]
    figures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for plot in plots:
            axes = plot(study)
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            figures.append(first.figure)
    return figures


ROOFLINE_NAMED = 6  # kernels with most headroom, numbered on the roofline and named in its legend


def roofline_figure(profile):
    """Each kernel as a point (arithmetic intensity, GFLOP/s) under this host's two roofs."""
    import numpy as np

    peaks = profile.peaks
    kernels = [k for k in profile.kernels if k.bound != "runtime" and k.mflop > 0 and k.kbytes > 0]
    fig, axis = _pyplot().subplots(figsize=(9, 5.5))
    lowest = min([k.mflop * 1e3 / k.kbytes for k in kernels] + [peaks.ridge / 100])
    intensity = np.logspace(np.log10(lowest / 2), np.log10(max(peaks.ridge * 20, 1.0)), 200)
    axis.plot(intensity, np.minimum(peaks.fma_gflops, intensity * peaks.bandwidth_gbs), color="black",
              label=f"roofs: {peaks.fma_gflops:.0f} GFLOP/s fp32 FMA, {peaks.bandwidth_gbs:.0f} GB/s")
    for rank, kernel in enumerate(kernels, 1):  # most headroom first: the first few are numbered
        x = kernel.mflop * 1e3 / kernel.kbytes
        named = rank <= ROOFLINE_NAMED
        axis.scatter(x, kernel.gflops, s=20 + 400 * kernel.share_of_latency, alpha=0.6,
                     label=f"{rank}. {kernel.kernel[:48]}" if named else None)
        if named:
            axis.annotate(str(rank), (x, kernel.gflops), fontsize=8, xytext=(4, 4 * rank), textcoords="offset points")
    axis.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP / byte)", ylabel="GFLOP/s",
             title=f"{Path(profile.artifact).name}: kernels in place (size: share of latency)")
    axis.legend(fontsize=7, loc="lower right")
    axis.grid(alpha=0.3, which="both")
    return fig


def headroom_figure(profile, top: int = 20):
    """Horizontal bars: each kernel's headroom (its time above the nearer roof), most first."""
    rows = [k for k in profile.kernels if k.bound != "runtime"][:top][::-1]
    fig, axis = _pyplot().subplots(figsize=(10, 0.32 * len(rows) + 1.6))
    axis.barh(range(len(rows)), [k.headroom_us for k in rows], color=["tab:red" if k.bound == "compute"
                                                                      else "tab:blue" for k in rows])
    axis.set_yticks(range(len(rows)), [f"{k.kernel[:40]} ({k.bound})" for k in rows], fontsize=7)
    axis.set(xlabel="headroom per inference (µs): time above the nearer roof",
             title=f"where an expert's day goes furthest (wall p50 {profile.wall_p50_ms:.3f} ms)")
    return fig


def plot_profile(profile, prefix: str | Path) -> list[Path]:
    """``PREFIX_roofline.png`` and ``PREFIX_headroom.png`` of a profile."""
    paths = [Path(f"{prefix}_roofline.png"), Path(f"{prefix}_headroom.png")]
    for path, figure in zip(paths, (roofline_figure(profile), headroom_figure(profile))):
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(figure, path)
    return paths


def plot_curve(points: list[dict], job_id: int, output: str | Path) -> Path:
    """Write the curve figure as PNG."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    _save(curve_figure(points, job_id), output)
    return output


def _embedded(fig) -> str:
    buffer = io.BytesIO()
    _save(fig, buffer)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r.values()) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


def write_html(output: str | Path, job_id: int, points: list[dict], rows: list[dict], study=None) -> Path:
    """A self-contained HTML report: curve, per-task breakdown, and the Optuna study if any."""
    parts = [f"<h1>autotune job {job_id}</h1>", "<h2>Tuning curve</h2>", _embedded(curve_figure(points, job_id)),
             "<h2>Where the time goes</h2>", _embedded(breakdown_figure(rows, job_id)), _table(rows)]
    if study is not None:
        parts += ["<h2>Graph-level study</h2>", *(_embedded(f) for f in study_figures(study)),
                  _table([{"trial": t.number, "state": t.state.name, "p50_ms": t.value, **t.params}
                          for t in study.trials])]
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}img{max-width:100%}"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(f"<!doctype html><meta charset='utf-8'><title>autotune job {job_id}</title>"
                      f"<style>{style}</style>{''.join(parts)}")
    return output
