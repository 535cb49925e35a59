"""Defaults for the command line from a file: ``$AUTOTUNE_CONFIG``, else ``autotune.toml`` in the
working directory, else ``[tool.autotune]`` of its ``pyproject.toml``. Flags override the file;
``--db`` is looked up as flag, then ``$AUTOTUNE_DB``, then the file. ``autotune config`` prints the
effective value of every setting and where it came from."""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import AutotuneError
from .args import duration_arg, positive_int, runner_list

CONFIG_ENV = "AUTOTUNE_CONFIG"
DB_ENV = "AUTOTUNE_DB"


def _duration(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else duration_arg(str(value))


def _runners(value) -> list[str]:
    return runner_list(",".join(value) if isinstance(value, list) else str(value))


# The settings a file may hold: their flag's ``dest``, the parser of a value, the built-in default.
SETTINGS = {
    "db": (str, "sqlite:///tuning_logs/autotune.db"),
    "target": (str, "host"),
    "threads": (lambda v: positive_int(str(v)), None),
    "trials": (lambda v: positive_int(str(v)), None),
    "time_budget": (_duration, None),
    "precision": (str, "fp32"),
    "fusion": (str, "full"),
    "rpc": (str, None),
    "rpc_key": (str, None),
    "trust_runners": (_runners, None),
    "builders": (lambda v: positive_int(str(v)), 2),
    "build_timeout": (_duration, 60.0),
    "run_timeout": (_duration, 10.0),
    "number": (lambda v: positive_int(str(v)), 1),
    "repeat": (lambda v: positive_int(str(v)), 9),
    "min_repeat_ms": (lambda v: positive_int(str(v)), 1),
}


@dataclass
class ConfigFile:
    """The settings of the configuration file found (none when there is none)."""

    path: Path | None
    values: dict

    @property
    def label(self) -> str:
        return str(self.path) if self.path else "no configuration file"


def _read(path: Path, section: bool) -> dict:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise AutotuneError(f"cannot read the configuration {path}: {err}") from None
    return data.get("tool", {}).get("autotune", {}) if section else data


def find_config(folder: Path | None = None) -> ConfigFile:
    """The configuration in effect for a command run in ``folder`` (default: the working one)."""
    folder = folder or Path.cwd()
    if os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
        if not path.is_file():
            raise AutotuneError(f"${CONFIG_ENV} names {path}, which does not exist")
        raw = _read(path, section=path.name == "pyproject.toml")
    elif (folder / "autotune.toml").is_file():
        path, raw = folder / "autotune.toml", _read(folder / "autotune.toml", section=False)
    elif (folder / "pyproject.toml").is_file() and _read(folder / "pyproject.toml", section=True):
        path, raw = folder / "pyproject.toml", _read(folder / "pyproject.toml", section=True)
    else:
        return ConfigFile(None, {})
    return ConfigFile(path, _parsed(path, raw))


def _parsed(path: Path, raw: dict) -> dict:
    values = {}
    for key, value in raw.items():
        dest = key.replace("-", "_")
        if dest not in SETTINGS:
            raise AutotuneError(f"{path}: unknown setting {key!r} (known: {', '.join(sorted(SETTINGS))})")
        try:
            values[dest] = SETTINGS[dest][0](value)
        except (argparse.ArgumentTypeError, ValueError) as err:
            raise AutotuneError(f"{path}: setting {key!r}: {err}") from None
    return values


def apply_defaults(parser: argparse.ArgumentParser, config: ConfigFile) -> None:
    """Make the file's settings the defaults of every subcommand that has their flag."""
    values = dict(config.values)
    if os.environ.get(DB_ENV):  # the environment is closer to the command than the file
        values.pop("db", None)
    for action in parser._subparsers._group_actions:  # the subcommands
        for sub in action.choices.values():
            dests = {a.dest for a in sub._actions}
            sub.set_defaults(**{k: v for k, v in values.items() if k in dests})


def run_config(args) -> dict:
    """Every setting's effective value and its source."""
    from .args import table

    config = find_config()
    rows = []
    for key, (_, default) in SETTINGS.items():
        given = getattr(args, key, None)
        if given is not None and given != config.values.get(key):
            value, source = given, "flag"
        elif key == "db" and os.environ.get(DB_ENV):
            value, source = os.environ[DB_ENV], f"${DB_ENV}"
        elif key in config.values:
            value, source = config.values[key], config.label
        else:
            value, source = default, "default"
        rows.append({"setting": key, "value": value, "source": source})
    if not args.json:
        print(table(rows, ["setting", "value", "source"]))
    return {"config_file": str(config.path) if config.path else None, "settings": rows}


def add_config(sub) -> None:
    from .tuning import add_measure_options

    p = sub.add_parser("config", help="the effective settings and where each came from")
    p.add_argument("--db", help="as the other commands take it")
    p.add_argument("--target")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--trials", type=positive_int)
    p.add_argument("--time-budget", type=duration_arg)
    p.add_argument("--precision")
    p.add_argument("--fusion")
    p.add_argument("--rpc", "--rpc-tracker", dest="rpc")
    p.add_argument("--rpc-key")
    p.add_argument("--trust-runners", type=runner_list)
    add_measure_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_config)
