"""Plots of tuning history (PNG, made with matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

from .errors import AutotuneError


def plot_curve(points: list[dict], job_id: int, output: str | Path) -> Path:
    """Estimated model latency against trials and against tuning time, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    known = [p for p in points if p["estimated_latency_ms"] is not None]
    if not known:
        raise AutotuneError(f"job {job_id} has no complete estimate yet: every task needs a measurement")
    fig, (by_trial, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    latency = [p["estimated_latency_ms"] for p in known]
    by_trial.step([p["trial"] for p in known], latency, where="post")
    by_trial.set(xlabel="measured trials", ylabel="estimated latency (ms)", title=f"job {job_id}")
    timed = [p for p in known if p["seconds"] is not None]
    by_time.step([p["seconds"] for p in timed], [p["estimated_latency_ms"] for p in timed], where="post")
    by_time.set(xlabel="tuning time (s)", title="best so far against wall time")
    for axis in (by_trial, by_time):
        axis.grid(alpha=0.3)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
