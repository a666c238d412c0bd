"""``doorgw check-config FILE``: everything the daemon needs from a config, checked at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.clock import Clock
from gateway.commands.common import Groups
from gateway.tools.preflight import preflight


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``check-config``."""
    p = sub.add_parser(
        "check-config",
        help="check a config as the daemon will use it: every problem at once",
        description="Validates the file, then checks what `doorgw run` needs: the [mqtt] and "
        "[sync] sections, every file named (present, readable, safe modes), the key set, the "
        "data directory. Exit status 0 when the daemon can start on it, 2 on any problem.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.set_defaults(handler=check_config)


def check_config(args: argparse.Namespace, clock: Clock) -> int:
    """Print every problem (and warning) with ``args.file``; 2 if there is a problem."""
    found = preflight(args.file)
    for warning in found.warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    for problem in found.problems:
        print(f"{args.file}: {problem}", file=sys.stderr)
    if found.problems or found.config is None:
        n = len(found.problems)
        print(f"doorgw: error: {args.file}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return 2
    config = found.config
    doors = ", ".join(d.id for d in config.doors) or "none"
    print(
        f"{args.file}: ok: gateway {config.gateway.id} at site {config.gateway.site_id}, "
        f"data in {config.gateway.data_dir}, doors: {doors}"
    )
    return 0
