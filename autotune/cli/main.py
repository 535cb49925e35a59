"""autotune: tune Transformer inference on Apache TVM, compile deployable artifacts, benchmark them.

Commands: tasks, tune, compile, study (tuning); run, bench, example, demo (artifacts); profile,
manual (the expert's hooks); keygen, sign, verify (signed artifacts); history, report, db (the
database); rpc (measuring elsewhere); config, completion (the command line itself).

Exit codes: 0 ok, 2 bad input or usage, 3 an artifact failed validation, 4 the database or the
environment failed (the job stays resumable), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import sys

from ..common import stopping
from ..common.results import plain
from ..common.text import one_line
from ..common.threads import default_tvm_threads, set_tvm_threads
from ..errors import AutotuneError, EnvironmentFault, Interrupted
from .completion import add_completion
from .config import add_config, apply_defaults, find_config
from .expert import add_manual, add_profile
from .records import add_db, add_history, add_report
from .rpc import add_rpc
from .running import add_run
from .serving import add_bench, add_demo, add_example
from .signing import add_keygen, add_sign, add_verify
from .tuning import add_compile, add_study, add_tasks, add_tune

COMMANDS = (add_tasks, add_tune, add_compile, add_study, add_run, add_bench, add_profile, add_manual,
            add_example, add_keygen, add_sign, add_verify, add_history, add_report, add_db, add_rpc,
            add_demo, add_config, add_completion)


def _verbosity(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress lines, errors only")
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more detail on stderr (-vv: debugging)")


class _Commands(argparse._SubParsersAction):
    """Subcommands that also take the global ``-q``/``-v`` after their name."""

    def add_parser(self, name, **kwargs):
        parser = super().add_parser(name, **kwargs)
        _verbosity(parser, argparse.SUPPRESS)  # unset here: the global value stands
        return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="autotune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"autotune {version()}")
    _verbosity(parser, None)
    parser.register("action", "commands", _Commands)
    sub = parser.add_subparsers(dest="command", required=True, action="commands")
    for add in COMMANDS:
        add(sub)
    return parser


def version() -> str:
    """autotune's version and the TVM it runs on, read without importing TVM."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    from ..common.version import __version__

    try:
        return f"{__version__} (apache-tvm {installed('apache-tvm')}, Python {sys.version.split()[0]})"
    except PackageNotFoundError:
        return __version__


def _configure_logging(args) -> None:
    """``-q``: errors only; default: warnings; ``-v``: progress detail; ``-vv``: debugging."""
    level = (logging.ERROR if args.quiet else logging.DEBUG if (args.verbose or 0) > 1
             else logging.INFO if args.verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("autotune: %(levelname)s: %(message)s"))
    root = logging.getLogger("autotune")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _set_threads(threads: int | None) -> None:
    """TVM's runtime threads for this process: ``--threads``, else ``$TVM_NUM_THREADS``, else every
    core this process may use."""
    from ..targets.host import usable_cores

    if threads:
        set_tvm_threads(threads)
    else:
        default_tvm_threads(usable_cores())


def _enable_faulthandler() -> None:
    """A crash in native code (TVM, XGBoost) still leaves the Python stack on the process's stderr."""
    try:
        faulthandler.enable(file=sys.__stderr__)
    except (AttributeError, ValueError, OSError):  # no stderr with a file descriptor: nothing to write to
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``autotune`` console script."""
    _enable_faulthandler()
    parser = build_parser()
    try:
        apply_defaults(parser, find_config())
    except AutotuneError as err:
        print(f"autotune: error: {err}", file=sys.stderr)
        return err.exit_code
    args = parser.parse_args(argv)
    args.parser = parser  # ``completion`` describes it
    _configure_logging(args)
    _set_threads(getattr(args, "threads", None))
    previous = stopping.install()
    try:
        result = args.func(args)
    except AutotuneError as err:
        print(f"autotune: error: {err}", file=sys.stderr)
        return err.exit_code
    except ModuleNotFoundError as err:  # a loader-only install asked to tune or compile
        print(f"autotune: error: this command needs the tuner's packages (missing {err.name}): "
              "pip install 'autotune[tuner]'", file=sys.stderr)
        return EnvironmentFault.exit_code
    except OSError as err:  # the environment: a full disk, a file that vanished, a permission
        print(f"autotune: error: {one_line(err)}", file=sys.stderr)
        return EnvironmentFault.exit_code
    except BaseException:  # Ctrl-C or SIGTERM, possibly rewrapped by TVM: the job stays resumable
        if not stopping.requested() and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
            raise
        print("autotune: interrupted; rerun the same command to resume", file=sys.stderr)
        return stopping.exit_code()
    finally:
        stopping.restore(previous)
    if args.json:
        print(json.dumps(plain(result), indent=2, default=str))
    return 0
