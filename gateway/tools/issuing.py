"""The issuing side of QR credentials, for sites, the simulator and platform developers.

``doorgw pass keygen`` makes an Ed25519 key (a PEM file of mode 0600, as
``openssl genpkey -algorithm ed25519`` would); ``doorgw pass issue`` signs a
pass with the platform's key and ``doorgw pass app-code`` makes the code a
member app would show.  Both print the token and can write a QR image.
The Python API is :class:`gateway.core.qr.PassIssuer` and :func:`gateway.core.qr.app_code`
with :func:`load_signing_key`.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import DoorgwError
from gateway.store.files import read_private


class SigningKeyError(DoorgwError):
    """A signing key file is missing, unreadable, not an Ed25519 key or too open."""


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path`` (which must be mode 0600)."""
    data = read_private(path, SigningKeyError)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(
            f"{path}: not an unencrypted PEM private key "
            "(make one with: doorgw pass keygen --out FILE)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 key")
    return key


def write_signing_key(path: Path) -> Ed25519PrivateKey:
    """Make a new key and write it to ``path`` as PEM, mode 0600; never overwrite a file."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"{path}: already exists; keys are never overwritten") from None
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key
