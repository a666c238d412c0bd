"""``doorgw schemas --out DIR``: write the sync protocol's JSON Schema files."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.clock import Clock
from gateway.commands.common import Groups, make_dir
from gateway.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``schemas``."""
    p = sub.add_parser("schemas", help="write the sync protocol's JSON Schema files")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")

    p.set_defaults(handler=schemas)


def schemas(args: argparse.Namespace, clock: Clock) -> int:
    """Write the files, one path a line."""
    from gateway.wire.schemas import write_schemas

    try:
        written = write_schemas(make_dir(args.out, "--out"))
    except OSError as exc:
        raise UsageError(f"--out {args.out}: {exc.strerror or exc} ({exc.filename})") from None
    for path in written:
        print(path)
    return 0
