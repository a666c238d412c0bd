"""Staff API tokens, stored only as hashes.

A token is shown once, when it is made (``doorgw token add NAME``, or by
provisioning for the first one); the gateway keeps its SHA-256 and a name
for the audit trail.  Tokens are 256 random bits, so a plain hash is enough:
there is nothing to guess, unlike a password.  The file is written
atomically with mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import DoorgwError
from gateway.store.files import write_private

#: Every token starts with this, so a leaked one is easy to recognise (and to scan for).
PREFIX = "dgw_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class TokenFileError(DoorgwError):
    """The token file is unreadable or malformed, or a token name is unusable."""


def digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StaffToken:
    """One token's name, hash and when it was made (Unix seconds)."""

    name: str
    sha256: str
    created: int


class TokenStore:
    """The token file: add, remove, list, and check a presented token."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: The file's identity when it was last read, and the tokens it held.
        self._read: tuple[tuple[int, ...], list[StaffToken]] | None = None

    def tokens(self) -> list[StaffToken]:
        """Every stored token (none when the file does not exist yet).

        Every request checks its token here, so the file is read again only
        when it is not the one read last (another device, inode, size, or
        change time): one ``stat`` per request, not a read and a parse.  A
        token made or revoked by ``doorgw token`` in another process
        replaces the file, so it counts from the next request on.  (Only a
        rewrite in place, at the same size, within one tick of the kernel's
        file clock, a few milliseconds, would go unseen until the next change.)
        """
        try:
            st = os.stat(self.path)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if self._read is not None and self._read[0] == key:
                return list(self._read[1])
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._read = None
            return []
        except OSError as exc:
            raise TokenFileError(f"{self.path}: cannot read: {exc.strerror}") from None
        try:
            entries = json.loads(raw)["tokens"]
            tokens = [StaffToken(e["name"], e["sha256"], int(e["created"])) for e in entries]
        except (ValueError, KeyError, TypeError):
            raise TokenFileError(f"{self.path}: not a doorgw token file") from None
        # Read after the stat: a file replaced in between is read again next time.
        self._read = (key, tokens)
        return list(tokens)

    def _write(self, tokens: list[StaffToken]) -> None:
        doc = {
            "tokens": [{"name": t.name, "sha256": t.sha256, "created": t.created} for t in tokens]
        }
        write_private(self.path, (json.dumps(doc, indent=1) + "\n").encode())

    def add(self, name: str, now: int) -> str:
        """Make a token called ``name``; return it (the only time it is seen)."""
        if not _NAME.match(name):
            raise TokenFileError(
                f"token name {name!r}: 1-64 letters, digits and . _ @ -, "
                "starting with a letter or digit"
            )
        tokens = self.tokens()
        if any(t.name == name for t in tokens):
            raise TokenFileError(f"a token named {name!r} exists; remove it first")
        token = PREFIX + secrets.token_urlsafe(32)
        self._write([*tokens, StaffToken(name, digest(token), now)])
        return token

    def remove(self, name: str) -> None:
        """Revoke the token called ``name``."""
        tokens = self.tokens()
        kept = [t for t in tokens if t.name != name]
        if len(kept) == len(tokens):
            raise TokenFileError(f"no token named {name!r}")
        self._write(kept)

    def check(self, token: str) -> str | None:
        """The name of the token presented, or None when it is not one of ours."""
        presented = digest(token)
        found = None
        # Compare with every entry, in constant time, whatever matches.
        for entry in self.tokens():
            if hmac.compare_digest(entry.sha256, presented):
                found = entry.name
        return found
