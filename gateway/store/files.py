"""Files the gateway keeps that are not databases: secret keys and the pinned platform keys.

Private files are written with mode 0600 from the moment they exist (never
chmod after the fact), and refused when they are readable by others.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

from gateway.config.models import Config
from gateway.core.credentials import load_pin_key
from gateway.core.jws import KeySet
from gateway.errors import ConfigError, CredentialFormatError, DoorgwError


def read_private(path: Path, error: type[DoorgwError]) -> bytes:
    """The bytes of the private key file ``path``.

    Raises ``error`` when it is missing or unreadable, and when its mode lets
    anyone but its owner read it: a key others could read is refused, as ssh
    refuses one, rather than used.
    """
    try:
        info = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such key file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(
            f"{path}: mode {stat.S_IMODE(info.st_mode):04o} lets others read the key; "
            "it must be 0600"
        )
    return data


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (0600), atomically.

    The data goes to a new file of a random name, made with O_EXCL and
    O_NOFOLLOW (a file or a symlink planted at a predictable name is never
    written through or kept), synced, then renamed over ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_platform_keys(config: Config) -> KeySet:
    """The platform's pinned signing keys, from ``[sync] keys_file`` (a JWKS)."""
    if config.sync is None:
        raise ConfigError("config", "the daemon needs a [sync] section with keys_file", "sync")
    path = config.sync.keys_file
    try:
        return KeySet.from_jwks(json.loads(path.read_bytes()))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(str(path), f"not a usable JWKS: {exc}") from None


def load_pin_key_file(config: Config) -> bytes | None:
    """The site's PIN key from ``[sync] pin_key_file`` (None when unset).

    A secret: the file must not be readable by group or others.
    """
    path = None if config.sync is None else config.sync.pin_key_file
    if path is None:
        return None
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "a PIN key file holds one line of base64url") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(
            str(path), f"mode {stat.S_IMODE(st.st_mode):04o}: a secret (chmod 0600 {path})"
        )
    try:
        return load_pin_key(text)
    except CredentialFormatError as exc:
        raise ConfigError(str(path), str(exc)) from None
