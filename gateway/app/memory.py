"""Handing memory the daemon no longer uses back to the system.

Applying a large snapshot builds and frees tens of megabytes (decoded
chunks, row tuples, SQLite's statement buffers) across several threads.
glibc keeps what is freed in its arenas for reuse, so the process would stay
at its peak size for good; on a 512 MB Pi that is memory other services
need.  ``malloc_trim`` returns the free pages of every arena.

Python's cycle collector is the other way memory costs time: a full
collection walks every tracked object, tens of thousands of them once the
daemon's modules, config and services exist, and takes tens of milliseconds
on the event loop's thread, where a tap waiting for its relay would wait
too.  What exists once the gateway is up lives as long as the process, so
:func:`freeze_startup` moves it out of the collector's sight.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc


def _trimmer() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # glibc only; musl has none
    except (OSError, AttributeError):
        return None


_TRIM = _trimmer()


async def give_back() -> None:
    """Return freed heap pages to the system (on glibc; elsewhere nothing).

    It runs on a worker thread: walking the arenas of a large heap takes a few
    milliseconds, and the event loop drives the doors meanwhile.
    """
    if _TRIM is not None:
        await asyncio.to_thread(_TRIM, 0)


def freeze_startup() -> int:
    """Collect once, then exempt every object alive now from later collections.

    Returns how many objects were frozen.  Objects frozen are still freed by
    reference counting when their last reference goes; only a cycle among them
    would stay, and the start-up objects (modules, config, services) are kept
    for the process's life anyway.  :func:`thaw` undoes it.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw() -> None:
    """Hand the frozen objects back to the collector (a gateway stopped in a
    longer-lived process, such as the tests)."""
    gc.unfreeze()
