"""``doorgw check-config FILE``: validate a configuration file."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.clock import Clock
from gateway.commands.common import Groups
from gateway.config.models import load_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``check-config``."""
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file", type=Path, metavar="FILE")
    p.set_defaults(handler=check_config)


def check_config(args: argparse.Namespace, clock: Clock) -> int:
    """Load and validate ``args.file``; ConfigError names the file and key."""
    config = load_config(args.file)
    doors = ", ".join(d.id for d in config.doors) or "none"
    print(
        f"{args.file}: ok: gateway {config.gateway.id} at site {config.gateway.site_id}, "
        f"data in {config.gateway.data_dir}, doors: {doors}"
    )
    return 0
