"""Provisioning: from a fresh Pi to an enrolled gateway, in steps that cannot half-apply.

Everything lives in one configuration directory (``/etc/doorgw``)::

    gateway.key            the gateway's private key, 0600; it never leaves the machine
    gateway.csr            the request the platform signs
    releases/0001/         one complete configuration: doorgw.toml, and once
                           enrolled ca.pem, gateway.pem, platform-keys.json
    current -> releases/N  switched with one atomic rename
    doorgw.toml -> current/doorgw.toml

``init`` makes the key, the CSR, a first release (a config written from a
board profile) and the first staff token.  ``enroll`` checks everything the
platform returned (the certificate is for this key and this gateway, signed
by the CA it names; the key set parses; the broker accepts the certificate)
*before* it writes a new release, and only then switches ``current``.  An
enroll that fails or is interrupted leaves the previous release in use.
``rotate-keys`` installs a new pinned key set only when a currently pinned
key signed it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config.models import BrokerUrl, Config, TopicPrefix, load_config
from gateway.config.profiles import load_board
from gateway.core.credentials import load_pin_key
from gateway.core.jws import KeySet, SignatureError
from gateway.errors import ConfigError, CredentialFormatError, DoorgwError
from gateway.net.staff_tokens import TokenStore
from gateway.store.files import read_private, write_private
from gateway.tools.pki import Issued, certify, issue, make_ca
from gateway.wire.dataset import Id, describe_validation_error

#: The name of the first staff token, made by ``init``.
FIRST_TOKEN = "installer"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


class ProvisionError(DoorgwError):
    """A provisioning step refused to run; nothing was changed."""


@dataclass(frozen=True)
class InitResult:
    """What ``init`` made; ``token`` is shown once and stored only as a hash."""

    key: Path
    csr: Path
    config: Path
    token: str


# The layout.


def _current(directory: Path) -> Path:
    return directory / "current"


def _releases(directory: Path) -> Path:
    return directory / "releases"


def _next_release(directory: Path) -> str:
    taken = [int(p.name) for p in _releases(directory).glob("[0-9]*") if p.name.isdigit()]
    return f"{max(taken, default=0) + 1:04d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def share(path: Path, mode: int) -> None:
    """Give ``path`` the configuration directory's group (its parent's), with ``mode``.

    The service runs as its own user in that group (``/etc/doorgw`` is
    ``root:doorgw 0750``, systemd/doorgw.tmpfiles): every release must be
    readable by it, or the first re-enrolment would lock the service out of
    its own keys.
    """
    os.chmod(path, mode)
    group = path.parent.stat().st_gid
    if path.stat().st_gid != group:
        # Not root and not in that group: the modes are all that can be set.
        with contextlib.suppress(PermissionError):
            os.chown(path, -1, group)


def write_release_file(path: Path, data: bytes) -> None:
    """Write a file of a release (or the CSR), synced, readable by the service's group."""
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    share(path, 0o640)


def _give_to_service(path: Path, data_dir: Path) -> None:
    """Make a private file (0600) the service account's: the owner of its data directory."""
    owner = data_dir.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.chown(path, owner.st_uid, owner.st_gid)


def publish_release(directory: Path, staged: Path) -> Path:
    """Give ``staged`` its release number and make it current, atomically."""
    release = _releases(directory) / _next_release(directory)
    _fsync_dir(staged)
    staged.rename(release)
    link = directory / f".current-{secrets.token_hex(4)}"
    link.symlink_to(Path("releases") / release.name)
    os.replace(link, _current(directory))  # the one step that switches configurations
    _fsync_dir(directory)
    return release


def stage(directory: Path) -> Path:
    """A new, empty release being put together (``releases/.staging-*``), the group's."""
    releases = _releases(directory)
    if not releases.is_dir():
        releases.mkdir(mode=0o750)
        share(releases, 0o750)
    staged = releases / f".staging-{secrets.token_hex(4)}"
    staged.mkdir(mode=0o750)
    share(staged, 0o750)
    return staged


def clean_stale(directory: Path) -> None:
    """Remove what an interrupted step left behind (never the current release)."""
    for leftover in _releases(directory).glob(".staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in directory.glob(".current-*"):
        leftover.unlink(missing_ok=True)


# init


def _door_table(board: str, door_id: str) -> dict[str, str]:
    """The one door's table: the board's first relay, its inputs and feedback outputs."""
    profile = load_board(board)
    door = {"id": door_id}
    relays = sorted(n for n in profile.outputs if n.startswith("relay"))
    if relays:
        door["lock"] = relays[0]
    for key, name in (
        ("contact", "in1"),
        ("rex", "in2"),
        ("green_led", "led_green"),
        ("red_led", "led_red"),
        ("buzzer", "buzzer"),
    ):
        if name in profile.outputs or name in profile.inputs:
            door[key] = name
    return door


def init(
    directory: Path,
    *,
    gateway_id: str,
    site_id: str,
    board: str,
    data_dir: Path,
    door: str = "front",
    now: int,
) -> InitResult:
    """Make the gateway's key and CSR, a first config from ``board``, and the first token."""
    for what, value in (("gateway id", gateway_id), ("site id", site_id), ("door id", door)):
        if not _ID.match(value):
            raise ProvisionError(f"{what} {value!r}: letters, digits and . _ : @ -, up to 128")
    key_path = directory / "gateway.key"
    if key_path.exists():
        raise ProvisionError(
            f"{directory} is already initialised ({key_path} exists); keys are never replaced"
        )
    try:
        doors = _door_table(board, door)
    except ConfigError as exc:
        raise ProvisionError(exc.message) from None
    if not directory.is_dir():
        directory.mkdir(parents=True)
        directory.chmod(0o750)  # the service's group reads it, whatever the umask
    clean_stale(directory)
    settings = {
        "gateway": {
            "id": gateway_id,
            "site_id": site_id,
            "data_dir": str(data_dir),
            "board": board,
        },
        "doors": [doors],
        "api": {"listen": "127.0.0.1", "port": 8080},
    }
    config_text = (
        "# Written by `doorgw provision init`; `doorgw provision enroll` adds [mqtt] and [sync].\n"
        + tomli_w.dumps(settings)
    )
    staged = stage(directory)
    write_release_file(staged / "doorgw.toml", config_text.encode())
    try:
        config = load_config(staged / "doorgw.toml")
    except ConfigError as exc:
        shutil.rmtree(staged)
        raise ProvisionError(f"the config for board {board!r} does not validate: {exc}") from None

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, gateway_id),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site_id),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    csr_path = directory / "gateway.csr"
    write_release_file(csr_path, csr.public_bytes(serialization.Encoding.PEM))
    publish_release(directory, staged)
    config_link = directory / "doorgw.toml"
    if not config_link.is_symlink():
        config_link.unlink(missing_ok=True)
        config_link.symlink_to(Path("current") / "doorgw.toml")
    config.gateway.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = TokenStore(config.tokens_path).add(FIRST_TOKEN, now)
    # Made by root, read by the service: the key and the tokens become its own.
    _give_to_service(key_path, config.gateway.data_dir)
    _give_to_service(config.tokens_path, config.gateway.data_dir)
    return InitResult(key_path, csr_path, config_link, token)


# enroll


class EnrollBundle(BaseModel):
    """What the platform returns for a gateway's CSR (docs/provisioning.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Checked against the same patterns as the config they end up in: nothing
    # in a bundle can add to the config more than these values.
    gateway_id: Id
    site_id: Id
    broker_urls: list[BrokerUrl] = Field(min_length=1, max_length=16)
    ca_pem: str = Field(max_length=1_000_000)
    certificate_pem: str = Field(max_length=1_000_000)
    signing_keys: dict[str, Any]
    topic_prefix: TopicPrefix = "doorgw/v1"
    #: The site's PIN key (docs/model.md), unpadded base64url of 32+ bytes; optional.
    pin_key: str | None = Field(default=None, max_length=200)


def _read_bundle(path: Path) -> EnrollBundle:
    try:
        return EnrollBundle.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ProvisionError(f"{path}: cannot read: {exc.strerror}") from None
    except ValidationError as exc:
        raise ProvisionError(
            f"{path}: not an enrolment bundle: {describe_validation_error(exc)}"
        ) from None


def check_bundle(directory: Path, bundle: EnrollBundle, config: Config, now: dt.datetime) -> None:
    """Refuse a bundle that is not for this gateway, this key, or signed by its CA."""
    if (bundle.gateway_id, bundle.site_id) != (config.gateway.id, config.gateway.site_id):
        raise ProvisionError(
            f"the bundle is for gateway {bundle.gateway_id!r} at site {bundle.site_id!r}; "
            f"this is {config.gateway.id!r} at {config.gateway.site_id!r}"
        )
    try:
        chain = x509.load_pem_x509_certificates(bundle.certificate_pem.encode())
        ca = x509.load_pem_x509_certificate(bundle.ca_pem.encode())
    except ValueError:
        raise ProvisionError("the bundle's certificates are not PEM") from None
    cert = chain[0]
    key = serialization.load_pem_private_key(
        read_private(directory / "gateway.key", ProvisionError), password=None
    )
    mine = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if mine != theirs:
        raise ProvisionError(
            "the certificate is not for this gateway's key (was it made from its CSR?)"
        )
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != config.gateway.id:
        raise ProvisionError(f"the certificate is not issued to {config.gateway.id!r}")
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise ProvisionError(
            f"the certificate is valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, not now (is this machine's clock right?)"
        )
    try:
        # Leaf first: each certificate signed by the next, the last by the CA.
        for child, parent in zip(chain, [*chain[1:], ca], strict=True):
            child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        raise ProvisionError("the certificate chain does not lead to the bundle's CA") from None
    try:
        KeySet.from_jwks(bundle.signing_keys)
    except ValueError as exc:
        raise ProvisionError(f"the bundle's signing keys: {exc}") from None


def _without_sections(text: str, names: tuple[str, ...]) -> str:
    """``text`` (TOML) without the tables ``names`` and their sub-tables."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        header = re.match(r"^\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?", line)
        if header:
            top = header.group(1).split(".")[0]
            skipping = top in names
        if not skipping:
            out.append(line)
    return "".join(out).rstrip() + "\n"


Verify = Callable[[Config], Awaitable[None]]


async def enroll(
    directory: Path, bundle_path: Path, *, verify: Verify | None, now: dt.datetime
) -> Path:
    """Install what the platform returned, all or nothing; return the new release."""
    clean_stale(directory)
    current_config = directory / "doorgw.toml"
    try:
        config = load_config(current_config)
    except ConfigError as exc:
        raise ProvisionError(f"run `doorgw provision init` first: {exc}") from None
    bundle = _read_bundle(bundle_path)
    check_bundle(directory, bundle, config, now)
    if bundle.pin_key is not None:
        try:
            load_pin_key(bundle.pin_key)
        except CredentialFormatError as exc:
            raise ProvisionError(f"the bundle's pin_key: {exc}") from None
    staged = stage(directory)
    try:
        release_dir = directory / "current"
        write_release_file(staged / "ca.pem", bundle.ca_pem.encode())
        write_release_file(staged / "gateway.pem", bundle.certificate_pem.encode())
        write_release_file(
            staged / "platform-keys.json",
            (json.dumps(bundle.signing_keys, indent=1) + "\n").encode(),
        )
        base = _without_sections(current_config.read_text(), ("mqtt", "sync"))
        # A secret, like the gateway's key: beside it, 0600, the service's own.
        pin_key_path = directory / "pin-key"
        if bundle.pin_key is not None:
            write_private(pin_key_path, (bundle.pin_key.strip() + "\n").encode())
            _give_to_service(pin_key_path, config.gateway.data_dir)
        # Written by the TOML library: a value can never become syntax.
        sections = tomli_w.dumps(
            {
                "mqtt": {
                    "urls": list(bundle.broker_urls),
                    "ca_file": str(release_dir / "ca.pem"),
                    "cert_file": str(release_dir / "gateway.pem"),
                    "key_file": str(directory / "gateway.key"),
                    "topic_prefix": bundle.topic_prefix,
                },
                "sync": {
                    "keys_file": str(release_dir / "platform-keys.json"),
                    **({"pin_key_file": str(pin_key_path)} if bundle.pin_key else {}),
                },
            }
        )
        text = f"{base}\n{sections}"
        write_release_file(staged / "doorgw.toml", text.encode())
        # Checked as it will be read once current: with the staged files in its place.
        check = load_config(staged / "doorgw.toml")
        staged_view = check.model_copy(
            update={
                "mqtt": check.mqtt.model_copy(  # type: ignore[union-attr]
                    update={
                        "ca_file": staged / "ca.pem",
                        "cert_file": staged / "gateway.pem",
                    }
                )
            }
        )
        if verify is not None:
            await verify(staged_view)
        return publish_release(directory, staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


async def verify_broker(config: Config) -> None:
    """Connect to each broker URL with the config's certificate; ProvisionError if none answers."""
    # MQTT loads only when a broker is really asked.
    from gateway.net.mqtt import LinkDownError
    from gateway.net.probe import probe_brokers

    try:
        await probe_brokers(config)
    except LinkDownError as exc:
        raise ProvisionError(str(exc)) from None


# Pinned key rotation.


def rotate_keys(directory: Path, rotation_path: Path) -> Path:
    """Install a new pinned key set, if a currently pinned key signed it; the new release."""
    clean_stale(directory)
    config = load_config(directory / "doorgw.toml")
    if config.sync is None:
        raise ProvisionError("this gateway is not enrolled yet: no pinned keys to rotate")
    current = KeySet.from_jwks(json.loads(config.sync.keys_file.read_bytes()))
    try:
        _, payload = current.verify(rotation_path.read_bytes())
        doc = json.loads(payload)
        if doc.get("type") != "key_rotation" or doc.get("site") != config.gateway.site_id:
            raise ProvisionError("not a key rotation for this site")
        new = KeySet.from_jwks(doc["keys"])
    except OSError as exc:
        raise ProvisionError(f"{rotation_path}: cannot read: {exc.strerror}") from None
    except SignatureError as exc:
        raise ProvisionError(f"the rotation is not signed by a pinned key: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ProvisionError(f"not a usable key rotation: {exc}") from None
    staged = stage(directory)
    try:
        for item in _current(directory).resolve().iterdir():
            shutil.copy2(item, staged / item.name)
            share(staged / item.name, 0o640)
        write_release_file(
            staged / "platform-keys.json", (json.dumps(new.to_jwks(), indent=1) + "\n").encode()
        )
        return publish_release(directory, staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


# A development CA: what a platform does, for tests and the simulator.


def dev_ca(out: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> dict[str, Path]:
    """A development CA with a broker (server) and a cloud (client) certificate."""
    if (out / "ca.key").exists():
        raise ProvisionError(f"{out} already holds a CA; keys are never replaced")
    ca = make_ca()
    files: dict[str, Path] = {}
    files["ca_key"], files["ca"] = ca.write(out, "ca")
    files["broker_key"], files["broker"] = issue(ca, hosts[0], server=True, hosts=hosts).write(
        out, "broker"
    )
    files["cloud_key"], files["cloud"] = issue(ca, "cloud").write(out, "cloud")
    return files


def load_ca(directory: Path) -> Issued:
    """The development CA written by :func:`dev_ca`."""
    key = serialization.load_pem_private_key(
        read_private(directory / "ca.key", ProvisionError), password=None
    )
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisionError(f"{directory / 'ca.key'}: not an EC key")
    cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    return Issued(key, cert)


def sign_csr(ca: Issued, csr_pem: bytes, *, days: int = 825) -> x509.Certificate:
    """A client certificate for the subject and key of ``csr_pem``, signed by ``ca``."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise ProvisionError("not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise ProvisionError("the CSR's signature does not verify")
    return certify(ca, csr.subject, csr.public_key(), days=days)


def dev_bundle(
    ca: Issued,
    csr_pem: bytes,
    *,
    site_id: str,
    broker_urls: list[str],
    signing_keys: dict[str, Any],
) -> dict[str, Any]:
    """The enrolment bundle a platform would return for ``csr_pem``."""
    cert = sign_csr(ca, csr_pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ProvisionError("the CSR names no gateway (no common name)")
    return EnrollBundle(
        gateway_id=str(names[0].value),
        site_id=site_id,
        broker_urls=broker_urls,
        ca_pem=ca.cert.public_bytes(serialization.Encoding.PEM).decode(),
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        signing_keys=signing_keys,
    ).model_dump()


# The command line.
