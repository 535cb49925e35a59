"""Declarative search spaces (YAML): budgets, manual schedules, accuracy, graph-level knobs.

Every problem names the file, the key and what was expected. See ``search_spaces/*.yaml``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .common.text import first_line
from .common.tolerances import ATOL, RTOL
from .errors import AutotuneError

# Graph-level knobs the Optuna study may search, with the values each accepts.
KNOBS: dict[str, tuple] = {
    "threads": (1, 2, 4, 8, 16, 32, 64),
    "fusion": ("full", "none"),
    "trials_per_round": (2, 4, 8, 16, 32),
    "precision": ("fp32", "fp16", "bf16", "int8"),
}
_TOP_LEVEL = {"family", "target", "budget", "manual", "accuracy", "graph", "study"}


@dataclass
class SearchSpace:
    """A parsed search space."""

    path: Path
    family: str
    target: str = "host"
    trials: int | None = None
    time_s: float | None = None
    manual_modules: list[Path] = field(default_factory=list)
    pin: list[str] = field(default_factory=list)
    rtol: float = RTOL
    atol: float = ATOL
    graph: dict[str, list] = field(default_factory=dict)
    study_trials: int = 4

    @property
    def name(self) -> str:
        return self.path.stem


class _Reader:
    """Typed access to one mapping of the file, with errors that name the file and key."""

    def __init__(self, path: Path, data: dict, prefix: str = ""):
        self.path, self.data, self.prefix = path, data, prefix

    def fail(self, key: str, expected: str):
        value = self.data.get(key)
        raise AutotuneError(f"{self.path}: key '{self.prefix}{key}' must be {expected}, got {value!r}")

    def get(self, key: str, kinds: tuple[type, ...], expected: str, default=None):
        value = self.data.get(key, default)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            self.fail(key, expected)
        return value

    def section(self, key: str) -> _Reader:
        value = self.data.get(key) or {}
        if not isinstance(value, dict):
            self.fail(key, "a mapping")
        return _Reader(self.path, value, f"{self.prefix}{key}.")

    def reject_unknown(self, known: set[str]) -> None:
        for key in self.data:
            if key not in known:
                raise AutotuneError(f"{self.path}: unknown key '{self.prefix}{key}' "
                                    f"(expected one of {', '.join(sorted(known))})")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h`` → seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"bad duration {text!r}: use e.g. 90s, 10m, 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _duration(reader: _Reader, key: str) -> float | None:
    value = reader.data.get(key)
    if value is None:
        return None
    try:
        return parse_duration(str(value))
    except ValueError:
        reader.fail(key, "a duration such as 90s, 10m or 1h")


def _graph(reader: _Reader) -> dict[str, list]:
    reader.reject_unknown(set(KNOBS))
    graph = {}
    for knob, allowed in KNOBS.items():
        values = reader.data.get(knob)
        if values is None:
            continue
        if not isinstance(values, list) or not values or any(v not in allowed for v in values):
            reader.fail(knob, f"a non-empty list drawn from {list(allowed)}")
        graph[knob] = values
    return graph


def _modules(reader: _Reader, base: Path) -> list[Path]:
    modules = reader.data.get("modules") or []
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        reader.fail("modules", "a list of paths to Python files (relative to the space file)")
    return [(base / m).resolve() for m in modules]


def load_space(path: str | Path) -> SearchSpace:
    """Parse and validate a search space file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise AutotuneError(f"cannot read search space {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise AutotuneError(f"{path} is not valid YAML: {first_line(err)}") from None
    if not isinstance(data, dict):
        raise AutotuneError(f"{path}: a search space must be a mapping of keys, got {type(data).__name__}")
    top = _Reader(path, data)
    top.reject_unknown(_TOP_LEVEL)
    family = top.get("family", (str,), "a string naming the model family")
    if not family:
        top.fail("family", "a string naming the model family")
    budget, manual, accuracy = top.section("budget"), top.section("manual"), top.section("accuracy")
    budget.reject_unknown({"trials", "time"})
    manual.reject_unknown({"modules", "pin"})
    accuracy.reject_unknown({"rtol", "atol"})
    study = top.section("study")
    study.reject_unknown({"trials"})
    pin = manual.get("pin", (list,), "a list of manual schedule names", [])
    return SearchSpace(
        path=path, family=family, target=top.get("target", (str,), "a target name", "host"),
        trials=budget.get("trials", (int,), "a whole number of trials"), time_s=_duration(budget, "time"),
        manual_modules=_modules(manual, path.parent), pin=pin,
        rtol=float(accuracy.get("rtol", (int, float), "a number", RTOL)),
        atol=float(accuracy.get("atol", (int, float), "a number", ATOL)),
        graph=_graph(top.section("graph")),
        study_trials=study.get("trials", (int,), "a whole number of Optuna trials", 4))
