"""OSDP secure-channel base keys (SCBK): one per reader, in a file of mode 0600.

A key file holds 32 hex digits and nothing else.  Keys are made with
:mod:`secrets`; a file that others may read is refused rather than used, as
ssh does with private keys, because whoever holds a reader's key can read
its traffic and pose as it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.errors import DoorgwError
from gateway.store.files import read_private

#: The public install-mode key of the OSDP specification (SCBK-D): 0x30..0x3F.
SCBK_D = bytes(range(0x30, 0x40))


class KeyFileError(DoorgwError):
    """A reader's key file is missing, unreadable, malformed or too open."""


def load_key(path: Path) -> bytes:
    """The 16-byte key in ``path``; raise KeyFileError saying what is wrong."""
    data = read_private(path, KeyFileError)
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except ValueError:  # UnicodeDecodeError included
        key = b""
    if len(key) != 16:
        raise KeyFileError(f"{path}: not a key (32 hex digits)")
    if key == SCBK_D:
        raise KeyFileError(f"{path}: holds the public install-mode key, which secures nothing")
    return key


def create_key(path: Path) -> bytes:
    """Make a new random key and store it in ``path`` (mode 0600, never overwriting)."""
    key = secrets.token_bytes(16)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(key.hex() + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)  # fails if a key appeared meanwhile: never replace a key
    finally:
        tmp.unlink(missing_ok=True)
    return key


def load_or_create_key(path: Path, *, create: bool) -> tuple[bytes, bool]:
    """The reader's key, made first when missing and ``create`` is set; (key, created)."""
    if create and not path.exists():
        try:
            return create_key(path), True
        except FileExistsError:
            pass
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot create: {exc}") from None
    return load_key(path), False
