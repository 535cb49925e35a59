"""Systems benchmarked side by side take turns fairly: the order rotates, each turn warms up once."""

from __future__ import annotations

import pytest

from autotune.bench.timing import INTERLEAVE_SLICES, BenchConfig, time_in_turns, time_interleaved, turn_ratios


def test_turns_rotate_and_start_with_an_untimed_run():
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    samples = time_interleaved(runners, BenchConfig(count=2 * INTERLEAVE_SLICES, warmup=0))
    assert {name: len(s) for name, s in samples.items()} == {"a": 20, "b": 20, "c": 20}
    turns = [calls[i:i + 3] for i in range(0, len(calls), 3)]  # each turn: one untimed + two timed
    assert all(len(set(turn)) == 1 for turn in turns)
    firsts = [turn[0] for turn in turns]
    slices = [firsts[i:i + 3] for i in range(0, len(firsts), 3)]
    assert slices[0] == ["a", "b", "c"] and slices[1] == ["b", "c", "a"] and slices[2] == ["c", "a", "b"]


def test_count_mode_stops_once_every_system_has_its_runs():
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("slow", "fast")}
    samples = time_interleaved(runners, BenchConfig(count=3, warmup=0))
    assert [len(s) for s in samples.values()] == [3, 3]
    assert len(calls) == 2 * (3 + 3)  # three turns each: one untimed run and one timed run


def test_a_single_runner_has_no_untimed_turn_starts():
    calls: list[str] = []
    samples = time_interleaved({"only": lambda: calls.append("only")}, BenchConfig(count=30, warmup=0))
    assert len(samples["only"]) == 30 and len(calls) == 30


def test_runs_are_kept_turn_by_turn():
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    turns = time_in_turns(runners, BenchConfig(count=25, warmup=0))
    assert [len(turn) for turn in turns["a"]] == [3, 3, 3, 3, 3, 3, 3, 3, 1, 0]
    assert sum(map(len, turns["b"])) == 25
    assert len(calls) == 2 * (25 + 9)  # an untimed run opens every turn that times a run


def test_turn_ratios_compare_each_turn_with_the_reference_in_the_same_turn():
    reference = [[10.0, 12.0, 11.0], [20.0, 21.0, 22.0], [], [30.0]]
    mine = [[8.0, 9.0, 8.5], [16.0, 17.0, 17.6], [5.0], [27.0]]
    ratios = turn_ratios(mine, reference)
    assert ratios["turns"] == 3  # the turn the reference did not time is left out
    assert ratios["lowest"] == pytest.approx(8.5 / 11.0)
    assert ratios["median"] == pytest.approx(17.0 / 21.0)
    assert ratios["highest"] == pytest.approx(27.0 / 30.0)
    assert turn_ratios([[1.0]], [[]]) is None
