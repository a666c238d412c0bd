"""Preflight: everything ``doorgw run`` needs from a config, checked at once.

:func:`preflight` loads a config file and looks at what the daemon will
open: the sections it refuses to start without, every file the config
names (there, readable, a usable key set), the modes of secrets (no access
for others) and of the data directory (the service's alone), and whether
``doorgw.toml`` is still the provisioning link (a file edited in place with
``sed -i`` stops following enrolments).  It lists every problem, not the
first; ``doorgw check-config`` prints them and exits 2 on any.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config.models import Config, OsdpReaderConfig, load_config
from gateway.core.credentials import load_pin_key
from gateway.core.jws import KeySet
from gateway.errors import ConfigError


@dataclass
class Preflight:
    """What a preflight found: the config (when it loads), problems and warnings."""

    config: Config | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def preflight(path: Path) -> Preflight:
    """Check the config at ``path`` as the daemon would use it."""
    found = Preflight()
    _check_link(path, found)
    try:
        config = load_config(path)
    except ConfigError as exc:
        found.problems.extend(exc.problems)
        return found
    found.config = config
    if config.mqtt is None:
        found.problems.append(
            "mqtt: the daemon needs an [mqtt] section (`doorgw provision enroll` writes it)"
        )
    else:
        for name in ("ca_file", "cert_file"):
            _check_file(getattr(config.mqtt, name), f"mqtt.{name}", found)
        _check_file(config.mqtt.key_file, "mqtt.key_file", found, secret=True)
        if any(u.startswith("mqtts://") for u in config.mqtt.urls) and config.mqtt.ca_file is None:
            found.warnings.append(
                "mqtt.ca_file: not set; the broker is checked against the system's CAs"
            )
    if config.sync is None:
        found.problems.append("sync: the daemon needs a [sync] section with keys_file")
    elif _check_file(config.sync.keys_file, "sync.keys_file", found):
        try:
            KeySet.from_jwks(json.loads(config.sync.keys_file.read_bytes()))
        except (OSError, ValueError, TypeError) as exc:
            found.problems.append(
                f"sync.keys_file: {config.sync.keys_file}: not a usable key set: {exc}"
            )
    if config.sync is not None and config.sync.pin_key_file is not None:
        if _check_file(config.sync.pin_key_file, "sync.pin_key_file", found, secret=True):
            try:
                load_pin_key(config.sync.pin_key_file.read_text(encoding="ascii"))
            except (OSError, ValueError) as exc:
                found.problems.append(f"sync.pin_key_file: {config.sync.pin_key_file}: {exc}")
    elif config.sync is not None and any(
        r.kind == "wiegand" and getattr(r, "keypad", True) for r in config.readers
    ):
        found.warnings.append(
            "sync.pin_key_file: not set; PIN digests are unkeyed, so a copied cache file "
            "reveals every PIN (docs/model.md)"
        )
    if config.api is not None:
        _check_file(config.api.tls_cert_file, "api.tls_cert_file", found)
        _check_file(config.api.tls_key_file, "api.tls_key_file", found, secret=True)
        if config.tokens_path.exists():
            _check_file(config.tokens_path, "api.tokens_file", found, secret=True)
    for i, reader in enumerate(config.readers):
        # A missing OSDP key file is made by the daemon at the first secure start.
        if isinstance(reader, OsdpReaderConfig) and reader.key_file and reader.key_file.exists():
            _check_file(reader.key_file, f"readers[{i}].key_file", found, secret=True)
    _check_data_dir(config.gateway.data_dir, found)
    return found


def _check_link(path: Path, found: Preflight) -> None:
    releases = path.parent / "releases"
    if releases.is_dir() and not path.is_symlink():
        found.warnings.append(
            f"{path} is no longer the link to current/{path.name}: it was replaced (an edit "
            "in place?), so later enrolments and `doorgw config set` will not change what the "
            "daemon reads; change settings with `doorgw config set` and restore the link with "
            f"`ln -sfn current/{path.name} {path}`"
        )


def _check_file(path: Path | None, key: str, found: Preflight, *, secret: bool = False) -> bool:
    """True if ``path`` (when set) is a readable file with safe modes; else say why."""
    if path is None:
        return False
    try:
        st = path.stat()
        with path.open("rb"):
            pass
    except FileNotFoundError:
        found.problems.append(f"{key}: {path}: no such file")
        return False
    except OSError as exc:
        found.problems.append(f"{key}: {path}: cannot read: {exc.strerror}")
        return False
    if not stat.S_ISREG(st.st_mode):
        found.problems.append(f"{key}: {path}: not a regular file")
        return False
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o002 or (secret and mode & 0o007):
        found.problems.append(
            f"{key}: {path}: mode {mode:04o} lets others {'read' if mode & 0o004 else 'change'} it"
            f" (chmod {'0600' if secret else '0640'} {path})"
        )
        return False
    return True


def _check_data_dir(path: Path, found: Preflight) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return  # made, 0700, when the daemon starts
    except OSError as exc:
        found.problems.append(f"gateway.data_dir: {path}: cannot use: {exc.strerror}")
        return
    if not stat.S_ISDIR(st.st_mode):
        found.problems.append(f"gateway.data_dir: {path}: not a directory")
    elif stat.S_IMODE(st.st_mode) & 0o077:
        found.problems.append(
            f"gateway.data_dir: {path}: mode {stat.S_IMODE(st.st_mode):04o}: events and keys "
            f"there are for the service alone (chmod 0700 {path})"
        )
