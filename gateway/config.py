"""The gateway's TOML configuration: typed, frozen, validated once.

Errors name the file, the exact key and what is wrong, e.g.::

    /etc/doorgw/doorgw.toml: doors[1].id: duplicate door id 'front'
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from gateway.dataset import Id, first_problem
from gateway.errors import ConfigError
from gateway.localtime import check_timezone

#: Where the daemon and staff commands look when ``--config`` is not given.
DEFAULT_CONFIG_PATH = Path("/etc/doorgw/doorgw.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    """``[gateway]``: who this gateway is and where it keeps its state."""

    id: Id
    site_id: Id
    data_dir: Path = Path("/var/lib/doorgw")


class TimeSection(_Section):
    """``[time]``: the site's zone as installed (the synced site's zone is authoritative)."""

    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)


class DoorConfig(_Section):
    """``[[doors]]``: one door this gateway drives, by its id in the site's data."""

    id: Id
    name: str | None = None
    unlock_seconds: float = Field(default=5.0, gt=0, le=300)
    extended_unlock_seconds: float = Field(default=15.0, gt=0, le=600)


class Config(_Section):
    """The whole configuration file."""

    gateway: GatewaySection
    time: TimeSection = TimeSection()
    doors: tuple[DoorConfig, ...] = Field(default=(), max_length=64)

    @field_validator("doors")
    @classmethod
    def _unique_doors(cls, doors: tuple[DoorConfig, ...]) -> tuple[DoorConfig, ...]:
        seen: set[str] = set()
        for door in doors:
            if door.id in seen:
                raise ValueError(f"duplicate door id {door.id!r}")
            if door.extended_unlock_seconds < door.unlock_seconds:
                raise ValueError(
                    f"door {door.id!r}: extended_unlock_seconds ({door.extended_unlock_seconds}) "
                    f"is shorter than unlock_seconds ({door.unlock_seconds})"
                )
            seen.add(door.id)
        return doors

    @property
    def cache_path(self) -> Path:
        """The SQLite file of the local cache."""
        return self.gateway.data_dir / "cache.sqlite3"

    def door(self, door_id: str) -> DoorConfig | None:
        """The configured door with this id, if any."""
        return next((d for d in self.doors if d.id == door_id), None)


def load_config(path: Path | str) -> Config:
    """Read and validate a config file; raise ConfigError naming file and key.

    A relative ``data_dir`` is taken relative to the file's directory.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(path), "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        key, message = first_problem(exc)
        more = exc.error_count() - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(str(path), message, key=key or None) from None
    if not config.gateway.data_dir.is_absolute():
        gateway = config.gateway.model_copy(
            update={"data_dir": (path.parent / config.gateway.data_dir).resolve()}
        )
        config = config.model_copy(update={"gateway": gateway})
    return config
