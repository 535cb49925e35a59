"""The command line: one module per group of commands, each an ``add_<command>`` (its flags) and a
``run_<command>`` that calls the public API and prints a table or ``--json``."""

from __future__ import annotations

from .main import build_parser, main

__all__ = ["build_parser", "main"]
