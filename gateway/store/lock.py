"""One gateway per data directory: a lock held for the daemon's whole life.

Two daemons on one data directory fight over the MQTT client id, the outbox
sequence and the cache; nothing good comes of it.  The daemon takes an
exclusive ``flock`` on ``<data_dir>/doorgw.lock`` before it opens anything
else, and writes its pid into the file.  The kernel drops the lock when the
process ends, however it ends (``kill -9`` included), so a stale file never
keeps a gateway from starting.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from gateway.errors import CacheError, DoorgwError

#: The lock file's name in the data directory.
LOCK_NAME = "doorgw.lock"


class InstanceError(DoorgwError):
    """Another doorgw process is using this data directory."""


class DataDirLock:
    """``with DataDirLock(data_dir):`` holds the directory for this process."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; InstanceError naming the holder's pid if another has it."""
        try:
            # The data directory is the service's own: 0700 when made here.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CacheError(
                f"{self.path.parent}: cannot use the data directory: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise InstanceError(
                f"another doorgw (pid {holder}) is using {self.path.parent}; stop it first "
                "(systemctl stop doorgw) or give this one its own [gateway] data_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the directory go (the pid stays in the file; only the lock counts)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
