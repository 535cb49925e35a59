"""Systems timed in turns: who goes first changes every turn."""

from __future__ import annotations


def turn_order(items: list, turn: int) -> list:
    """``items`` rotated by ``turn``, so no system always follows the same neighbour."""
    shift = turn % len(items) if items else 0
    return items[shift:] + items[:shift]
