"""The two plots benchmark users look for (matplotlib's Agg backend, PNG files): latency against
batch size, and throughput against sequence length, one line per system."""

from __future__ import annotations

from pathlib import Path


def latency_and_throughput(name: str, rows: list[dict], out_dir: Path,
                           throughput: tuple[str, str] = ("throughput_per_s", "throughput (sequences/s)"),
                           length_label: str = "seq") -> list[str]:
    """p50 latency against batch size at the longest sequence, and ``throughput`` (a key of each
    system's stats and its axis label) against sequence length at the smallest batch. ``rows``
    hold ``batch``, ``seq`` and ``systems`` (name → stats as a dict); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = sorted({s for r in rows for s in r["systems"]})
    written = []
    for x_key, fixed_key, metric, label, file_name in (
            ("batch", "seq", "p50_ms", "p50 latency (ms)", "latency_vs_batch.png"),
            ("seq", "batch", throughput[0], throughput[1], "throughput_vs_seq.png")):
        fixed = max(r[fixed_key] for r in rows) if x_key == "batch" else min(r[fixed_key] for r in rows)
        chosen = sorted((r for r in rows if r[fixed_key] == fixed), key=lambda r: r[x_key])
        fig, ax = plt.subplots(figsize=(6, 4))
        for system in systems:
            points = [(r[x_key], r["systems"][system][metric]) for r in chosen if system in r["systems"]]
            if points:
                ax.plot(*zip(*points), marker="o", label=system)
        ax.set_xlabel(length_label if x_key == "seq" else "batch")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.set_title(f"{name}, {length_label if fixed_key == 'seq' else 'batch'}={fixed}")
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}_{file_name}"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    return written
