"""``doorgw demo``: the decision core alone, on the bundled example site."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.clock import Clock
from gateway.commands.common import Groups, make_dir
from gateway.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``demo``."""
    p = sub.add_parser("demo", help="load the bundled example site and answer example taps")
    p.add_argument(
        "--dir", type=Path, help="keep the demo's config and cache here (default: a temp dir)"
    )

    p.set_defaults(handler=demo)


def demo(args: argparse.Namespace, clock: Clock) -> int:
    """Build the example site's cache and decide example taps and scans."""
    from gateway.tools.demo import run_demo

    if args.dir is None:
        return run_demo(None)
    try:
        return run_demo(make_dir(args.dir, "--dir"))
    except OSError as exc:  # the directory is there, its files cannot be written
        raise UsageError(f"--dir {args.dir}: {exc.strerror or exc} ({exc.filename})") from None
