"""Handing memory the daemon no longer uses back to the system.

Applying a large snapshot builds and frees tens of megabytes (decoded
chunks, row tuples, SQLite's statement buffers) across several threads.
glibc keeps what is freed in its arenas for reuse, so the process would stay
at its peak size for good; on a 512 MB Pi that is memory other services
need.  ``malloc_trim`` returns the free pages of every arena.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util


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
