"""What the commands share: argument types, the ``--config`` option, work directories.

Every command module has ``register(sub, groups)``: it adds its parser to
``sub`` and sets ``handler``, a function ``(args, clock) -> exit status``.
``groups`` holds the sub-parsers of commands that others may extend (``bench``).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Callable, Iterator, MutableMapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.config.models import DEFAULT_CONFIG_PATH
from gateway.errors import UsageError

#: ``add_subparsers()`` results, by the command they belong to.
Groups = MutableMapping[str, Any]

CONFIG_HELP = f"configuration file (default: {DEFAULT_CONFIG_PATH})"


def add_config(p: argparse.ArgumentParser) -> None:
    """The ``--config FILE`` option of staff commands."""
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=CONFIG_HELP)


def positive_int(limit: int) -> Callable[[str], int]:
    """An argument type: a whole number from 1 to ``limit``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if not 1 <= number <= limit:
            raise argparse.ArgumentTypeError(f"{number} is not between 1 and {limit}")
        return number

    return parse


def positive_float(limit: float) -> Callable[[str], float]:
    """An argument type: a number above 0 and at most ``limit``."""
    return _number(limit, zero=False)


def non_negative_float(limit: float) -> Callable[[str], float]:
    """An argument type: a number from 0 to ``limit``."""
    return _number(limit, zero=True)


def _number(limit: float, *, zero: bool) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        low_ok = number >= 0 if zero else number > 0
        if not (low_ok and number <= limit):
            span = f"from 0 to {limit:g}" if zero else f"above 0 and at most {limit:g}"
            raise argparse.ArgumentTypeError(f"{value} is not {span}")
        return number

    return parse


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: str) -> timedelta:
    """An argument type: ``90s``, ``45m``, ``8h`` or ``2d``."""
    number, unit = value[:-1], value[-1:]
    if unit not in _DURATION_UNITS or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a whole number and s, m, h or d, e.g. 8h")
    return timedelta(seconds=int(number) * _DURATION_UNITS[unit])


def local_start(value: str) -> datetime:
    """An argument type: an ISO time (site-local when it has no offset)."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO time") from None


def make_dir(directory: Path, option: str) -> Path:
    """``directory``, made with its parents if missing; a UsageError naming
    ``option``, not a traceback, for a file in the way or a place it cannot be."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{option} {directory}: not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {directory}: cannot be made ({exc.strerror or exc})") from None
    return directory


@contextlib.contextmanager
def workdir(directory: Path | None, prefix: str = "doorgw-") -> Iterator[Path]:
    """``--dir`` (made if missing, kept), or a temporary directory removed afterwards."""
    if directory is not None:
        yield make_dir(directory, "--dir")
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
