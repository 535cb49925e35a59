"""autotune: tune Transformer inference on Apache TVM, compile deployable artifacts, benchmark them.

Commands: tasks, tune, compile, study (tuning); bench, example, demo (artifacts); keygen, sign,
verify (signed artifacts); history, report, db (the database); rpc (measuring elsewhere). Exit codes: 0 ok, 2 bad input or usage, 3 an
artifact failed validation, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..common.results import plain
from ..common.threads import default_tvm_threads, set_tvm_threads
from ..errors import AutotuneError
from .records import add_db, add_history, add_report
from .rpc import add_rpc
from .serving import add_bench, add_demo, add_example
from .signing import add_keygen, add_sign, add_verify
from .tuning import add_compile, add_study, add_tasks, add_tune

COMMANDS = (add_tasks, add_tune, add_compile, add_study, add_bench, add_example, add_keygen, add_sign,
            add_verify, add_history, add_report, add_db, add_rpc, add_demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="autotune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _set_threads(threads: int | None) -> None:
    """TVM's runtime threads for this process: ``--threads``, else ``$TVM_NUM_THREADS``, else every
    core this process may use."""
    from ..targets.host import usable_cores

    if threads:
        set_tvm_threads(threads)
    else:
        default_tvm_threads(usable_cores())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``autotune`` console script."""
    args = build_parser().parse_args(argv)
    _set_threads(getattr(args, "threads", None))
    try:
        result = args.func(args)
    except AutotuneError as err:
        print(f"autotune: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("autotune: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(plain(result), indent=2, default=str))
    return 0
