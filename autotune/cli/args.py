"""Argument types and shared options of the command line, and its plain-text tables."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

SHAPE_HELP = ("an input's shape, e.g. input_ids=1x128, or a range per dim for one artifact serving "
              "them all, e.g. input_ids=1..8x1..128 (repeatable; inputs sharing a dim share it)")
TARGET_HELP = "host (default), avx512, avx2, cuda, cuda-sm80/89/90, or a TVM target as JSON/tag"
DB_HELP = ("database URL, or a path to a SQLite file (default: $AUTOTUNE_DB or "
           "sqlite:///tuning_logs/autotune.db)")


def duration_arg(text: str) -> float:
    """A duration flag (``90s``, ``10m``, ``1h``) in seconds."""
    from ..space import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return int(text)


def named_path(text: str) -> tuple[str, Path]:
    """A ``NAME=PATH`` flag: a name to report under and a file."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def parse_since(text: str) -> dt.datetime:
    """An ISO date or date-time, read as UTC when no zone is given."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --since {text!r}: use an ISO date, e.g. 2026-11-28") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def shapes(values: list[str] | None) -> dict[str, tuple]:
    """The ``--shape`` flags as ``{input: (DimRange, ...)}``."""
    from ..frontend.importer import parse_shape

    return dict(parse_shape(v) for v in values or [])


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("--shape", action="append", metavar="NAME=DIMxDIM", help=SHAPE_HELP)


def add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help=TARGET_HELP)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--db`` and ``--json``, which every command that reads the database or prints a table has."""
    parser.add_argument("--db", help=DB_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], default="fp32",
                        help="arithmetic precision (inputs and outputs stay fp32; default fp32)")


def runner_list(text: str) -> list[str]:
    """``--trust-runners local,rpc:h100``: the runners whose records count."""
    runners = [r.strip() for r in text.split(",") if r.strip()]
    if not runners or not all(r == "local" or r.startswith(("local:", "rpc:")) for r in runners):
        raise argparse.ArgumentTypeError(f"expected local, rpc:KEY or rpc:KEY@HOST:PORT, comma-separated; "
                                         f"got {text!r}")
    return runners


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain text table of ``rows``."""
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
              for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def space_of(args):
    """The ``--space`` file parsed, or None."""
    from ..space import load_space

    return load_space(args.space) if getattr(args, "space", None) else None


def target_of(args, space) -> str:
    """``--target``, else the search space's, else ``host``."""
    return args.target or (space.target if space else "host")
