"""The ``doorgw`` command.

Every subcommand returns an exit status instead of calling :func:`sys.exit`:
0 for success (for ``explain``: the door would open), 1 for ``explain``
when the door would stay shut, 2 for bad input of any kind.  Errors the
gateway raises on purpose are printed as one line; anything else is a bug
and shows its traceback.

The commands are the modules listed in :data:`COMMANDS`, each with
``register(sub, groups)``; other installed distributions add theirs through
the ``doorgw.commands`` entry point group (the simulator adds ``sim``,
``bench sync`` and ``bench drain``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from types import ModuleType

from gateway import __version__
from gateway.clock import Clock, SystemClock
from gateway.commands import (
    access,
    bench,
    check_config,
    config,
    demo,
    explain,
    passes,
    platform,
    provision,
    run,
    schemas,
    tokens,
)
from gateway.commands.common import Groups
from gateway.errors import DoorgwError

#: The gateway's own commands, in the order ``doorgw --help`` lists them.
COMMANDS: tuple[ModuleType, ...] = (
    check_config,
    explain,
    access,
    demo,
    schemas,
    run,
    passes,
    provision,
    config,
    tokens,
    platform,
    bench,
)
#: The entry point group through which other distributions add commands.
PLUGIN_GROUP = "doorgw.commands"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``doorgw`` and all its subcommands."""
    parser = argparse.ArgumentParser(
        prog="doorgw",
        description="Edge access-control gateway for coworking spaces.",
    )
    parser.add_argument("--version", action="version", version=f"doorgw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: Groups = {}
    for module in COMMANDS:
        module.register(sub, groups)
    for plugin in entry_points(group=PLUGIN_GROUP):
        try:
            register = plugin.load()
        except Exception as exc:  # noqa: BLE001 - a broken add-on must not take the gateway's commands down
            print(f"doorgw: warning: commands of {plugin.value} not loaded: {exc}", file=sys.stderr)
            continue
        register(sub, groups)
    return parser


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run ``doorgw`` with ``argv``; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args, clock or SystemClock()))
    except DoorgwError as exc:
        print(f"doorgw: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run_cli() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run_cli()
