"""Systems benchmarked side by side take turns fairly: the order rotates, each turn warms up once."""

from __future__ import annotations

from autotune.bench import INTERLEAVE_SLICES, BenchConfig, time_interleaved


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
