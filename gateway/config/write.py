"""Configuration files written from the typed models, never pasted together as text.

:func:`dump_config` turns a :class:`~gateway.config.models.Config` into TOML
(through ``tomli_w``), writing only what differs from the defaults, so the
file reads like one a person wrote.  :func:`write_config` writes it
atomically.  Reading the file back with
:func:`~gateway.config.models.load_config` gives the same config.

:func:`config_with` makes a changed copy of a config, validated again, for
code that builds configs (tests, the simulator) instead of editing text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from gateway.config.models import Config
from gateway.errors import ConfigError
from gateway.wire.dataset import first_problem


def _plain(value: Any) -> Any:
    """The TOML form of a dumped value: paths as text, no None (TOML has no null)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dump_config(config: Config) -> str:
    """``config`` as TOML text: the settings that differ from their defaults."""
    data = config.model_dump(exclude_defaults=True)
    # The discriminator of each reader is always written: it says what the entry is.
    if config.readers:
        data["readers"] = [
            {"kind": reader.kind, **_plain(reader.model_dump(exclude_defaults=True))}
            for reader in config.readers
        ]
    return tomli_w.dumps(_plain(data))


def write_config(config: Config, path: Path) -> Path:
    """Write ``config`` to ``path`` (atomically: a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(dump_config(config))
    os.replace(tmp, path)
    return path


def config_with(config: Config, **sections: Any) -> Config:
    """A copy of ``config`` with whole ``sections`` replaced, validated again.

    Each value is a model or plain data (``doors=(DoorConfig(...),)``,
    ``mqtt={"urls": [...]}``); ConfigError names what does not validate.
    """
    data = config.model_dump()
    for name, value in sections.items():
        if name not in Config.model_fields:
            raise ConfigError("config", f"no section {name!r}", name)
        data[name] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        key, message = first_problem(exc)
        raise ConfigError("config", message, key or None) from None
