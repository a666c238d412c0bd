"""``doorgw config set | unset | edit``: change a provisioned gateway's settings safely."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.clock import Clock
from gateway.commands.common import Groups


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``config``."""
    p = sub.add_parser(
        "config",
        help="change a setting: a new release, checked whole before it is used",
        description="Changes /etc/doorgw/doorgw.toml the safe way: a copy of the current "
        "release is changed, checked as `doorgw check-config` would, and only then made "
        "current. Restart the service to use it. Exit status 2 (nothing switched) if the "
        "result has a problem.",
    )
    actions = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    etc = Path("/etc/doorgw")
    s = actions.add_parser(
        "set",
        help="set KEY to VALUE, e.g. `config set doors.front.unlock_seconds 8`",
        description="KEY is dotted (mqtt.heartbeat_seconds, doors.front.unlock_seconds or "
        'doors[0].unlock_seconds); VALUE is TOML (8, true, ["a"]) or else a string.',
    )
    s.add_argument("key", metavar="KEY")
    s.add_argument("value", metavar="VALUE")
    u = actions.add_parser("unset", help="remove KEY: back to its default")
    u.add_argument("key", metavar="KEY")
    e = actions.add_parser(
        "edit", help="edit a copy in $VISUAL/$EDITOR; it is checked before it is used"
    )
    e.add_argument(
        "--from",
        dest="start",
        type=Path,
        metavar="FILE",
        help="start from FILE (a rejected edit) instead of the current config",
    )
    for q in (s, u, e):
        q.add_argument("--dir", type=Path, default=etc, help=f"configuration directory ({etc})")
    p.set_defaults(handler=config)


def config(args: argparse.Namespace, clock: Clock) -> int:
    """Carry out one change; ProvisionError (exit 2) when nothing was switched."""
    from gateway.tools import settings

    directory = args.dir.absolute()
    if args.config_command == "set":
        release = settings.set_setting(directory, args.key, args.value)
    elif args.config_command == "unset":
        release = settings.unset_setting(directory, args.key)
    else:
        release = settings.edit_config(directory, settings.default_editor(), args.start)
    if release is None:
        print("no change: the config already says so")
        return 0
    print(
        f"{directory / 'current'} -> {release}; restart the service to use it: "
        "systemctl restart doorgw"
    )
    return 0
