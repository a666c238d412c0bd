"""The ``doorgw`` command.

Every subcommand returns an exit status instead of calling :func:`sys.exit`:
0 for success (for ``explain``: the door would open), 1 for ``explain``
when the door would stay shut, 2 for bad input of any kind.  Errors the
gateway raises on purpose are printed as one line; anything else is a bug
and shows its traceback.

The commands are the modules listed in :data:`COMMANDS`, each with
``register(sub, groups)`` and imported only when needed; other installed
distributions add theirs through the ``doorgw.commands`` entry point group
(the simulator adds ``sim``, ``bench sync`` and ``bench drain``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.clock import Clock, SystemClock
from gateway.commands.common import Groups
from gateway.errors import DoorgwError

#: The gateway's own commands, in the order ``doorgw --help`` lists them: the
#: name each registers, and its module in this package. A module is imported
#: only when its command is parsed or listed, so ``doorgw run`` (what systemd
#: starts, and restarts) loads the daemon and nothing of ``provision``,
#: ``bench`` or the other commands.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("check-config", "check_config"),
    ("explain", "explain"),
    ("access", "access"),
    ("demo", "demo"),
    ("schemas", "schemas"),
    ("run", "run"),
    ("pass", "passes"),
    ("provision", "provision"),
    ("config", "config"),
    ("token", "tokens"),
    ("platform", "platform"),
    ("bench", "bench"),
)
#: The entry point group through which other distributions add commands.
PLUGIN_GROUP = "doorgw.commands"


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``doorgw`` for ``argv``.

    When ``argv`` starts with the name of one of the gateway's own commands
    that no add-on extends, the parser holds that command alone; otherwise
    (no command yet, ``--help``, a group such as ``bench``, an add-on's
    command, a typo) it holds them all.  Either way ``argv`` parses the same.
    """
    parser = argparse.ArgumentParser(
        prog="doorgw",
        description="Edge access-control gateway for coworking spaces.",
    )
    parser.add_argument("--version", action="version", version=f"doorgw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: Groups = {}
    first = argv[0] if argv else None
    chosen = [module for name, module in COMMANDS if name == first]
    for module in chosen or [module for _, module in COMMANDS]:
        importlib.import_module(f"{__package__}.{module}").register(sub, groups)
    # Add-ons may add commands of their own or extend a group (``groups``,
    # such as ``bench``): they are loaded unless one command was chosen that
    # opened no group.
    if not chosen or groups:
        _add_plugins(sub, groups)
    return parser


def _add_plugins(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    from importlib.metadata import entry_points

    for plugin in entry_points(group=PLUGIN_GROUP):
        try:
            register = plugin.load()
        except Exception as exc:  # noqa: BLE001 - a broken add-on must not take the gateway's commands down
            print(f"doorgw: warning: commands of {plugin.value} not loaded: {exc}", file=sys.stderr)
            continue
        register(sub, groups)


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run ``doorgw`` with ``argv``; return the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser(argv).parse_args(argv)
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
