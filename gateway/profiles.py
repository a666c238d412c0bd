"""Board and reader profiles from ``firmware-config/``, resolved into a config.

A *board* profile names the GPIOs of a wiring (``relay1`` is BCM 26, driven
active-low) and lists the pins the board itself uses.  A *reader* profile
gives a reader's kind and its usual settings.  A gateway config refers to
them by name::

    [gateway]
    board = "rpi4-relay-hat-2ch"

    [[doors]]
    id = "front"
    lock = "relay1"          # becomes lock_pin = 26, relay_active_high = false
    contact = "in1"

    [[readers]]
    id = "nfc-front"
    door = "front"
    profile = "pn532-hsu"    # kind, baudrate and port, unless the reader sets them

Names are resolved on the raw TOML before validation, so every later check
(pin conflicts included) sees plain GPIO numbers; the board's reserved pins
are checked afterwards by :func:`check_reserved`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import ConfigError

#: Where profiles are looked for, in order, when the config does not say.
SEARCH_PATH = (
    Path("/etc/doorgw/firmware-config"),
    Path("/usr/share/doorgw/firmware-config"),
    Path(__file__).resolve().parent.parent / "firmware-config",
)

#: Door keys that name a board output or input, and the fields they fill.
_DOOR_OUTPUTS = {"lock": "lock_pin", "green_led": "green_led_pin", "red_led": "red_led_pin",
                 "buzzer": "buzzer_pin"}  # fmt: skip
_DOOR_INPUTS = {"contact": "contact_pin", "rex": "rex_pin"}
_READER_INPUTS = {"data0": "data0_pin", "data1": "data1_pin"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BoardOutput(_Strict):
    """An output of a board: its GPIO and how the board drives it."""

    pin: int = Field(ge=0, le=27)
    active_high: bool = True


class BoardProfile(_Strict):
    """A board and its wiring."""

    name: str
    outputs: dict[str, BoardOutput] = {}
    inputs: dict[str, int] = {}
    reserved: dict[int, str] = {}


class ReaderProfile(_Strict):
    """A reader model's kind and usual settings."""

    description: str
    kind: str
    baudrate: int | None = None
    port: str | None = None
    address: int | None = None
    data0: str | None = None
    data1: str | None = None


def _find(kind: str, name: str, dirs: tuple[Path, ...], key: str) -> dict[str, Any]:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError("config", f"{name!r} is not a profile name", key)
    for base in dirs:
        path = base / kind / f"{name}.toml"
        if path.is_file():
            try:
                return tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(str(path), f"unreadable profile: {exc}") from None
    known = sorted({p.stem for base in dirs for p in (base / kind).glob("*.toml")})
    raise ConfigError(
        "config",
        f"unknown {kind[:-1]} profile {name!r} (known: {', '.join(known) or 'none'})",
        key,
    )


def load_board(name: str, dirs: tuple[Path, ...] = SEARCH_PATH) -> BoardProfile:
    """The board profile ``name``; ConfigError if unknown or malformed."""
    raw = _find("boards", name, dirs, "gateway.board")
    try:
        return BoardProfile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"board profile {name!r}", str(exc.errors()[0]["msg"])) from None


def load_reader_profile(name: str, dirs: tuple[Path, ...], key: str) -> ReaderProfile:
    """The reader profile ``name``; ConfigError if unknown or malformed."""
    raw = _find("readers", name, dirs, key)
    try:
        return ReaderProfile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"reader profile {name!r}", str(exc.errors()[0]["msg"])) from None


def resolve(data: dict[str, Any], base: Path) -> tuple[dict[str, Any], BoardProfile | None]:
    """``data`` (raw TOML) with board names and reader profiles replaced by settings."""
    gateway = data.get("gateway")
    if not isinstance(gateway, dict):
        return data, None
    dirs: tuple[Path, ...] = SEARCH_PATH
    if "profiles_dir" in gateway:
        dirs = ((base / str(gateway["profiles_dir"])).resolve(),)
    board_name = gateway.get("board")
    board = load_board(str(board_name), dirs) if board_name is not None else None
    data = dict(data)
    data["gateway"] = {k: v for k, v in gateway.items() if k not in ("board", "profiles_dir")}

    def pin_of(table: dict[str, Any], key: str, name: object, where: str, output: bool) -> None:
        if board is None:
            raise ConfigError(
                "config", f"{name!r} names a board pin, but [gateway] sets no board", where
            )
        if output:
            if name not in board.outputs:
                hint = " (that is an input)" if name in board.inputs else ""
                known = ", ".join(board.outputs)
                raise ConfigError(
                    "config",
                    f"board {board_name!r} has no output {name!r}{hint}; outputs: {known}",
                    where,
                )
            out = board.outputs[str(name)]
            table[key] = out.pin
            if key == "lock_pin":
                table.setdefault("relay_active_high", out.active_high)
        else:
            if name not in board.inputs:
                hint = " (that is an output)" if name in board.outputs else ""
                known = ", ".join(board.inputs)
                raise ConfigError(
                    "config",
                    f"board {board_name!r} has no input {name!r}{hint}; inputs: {known}",
                    where,
                )
            table[key] = board.inputs[str(name)]

    doors = []
    for i, door in enumerate(data.get("doors") or []):
        if not isinstance(door, dict):
            doors.append(door)
            continue
        door = dict(door)
        for names, output in ((_DOOR_OUTPUTS, True), (_DOOR_INPUTS, False)):
            for key, field in names.items():
                if key in door:
                    if field in door:
                        raise ConfigError(
                            "config", f"set {key} or {field}, not both", f"doors[{i}].{key}"
                        )
                    pin_of(door, field, door.pop(key), f"doors[{i}].{key}", output)
        doors.append(door)
    if "doors" in data:
        data["doors"] = doors

    readers = []
    for i, reader in enumerate(data.get("readers") or []):
        if not isinstance(reader, dict):
            readers.append(reader)
            continue
        reader = dict(reader)
        if "profile" in reader:
            where = f"readers[{i}].profile"
            profile = load_reader_profile(str(reader.pop("profile")), dirs, where)
            for field in ("kind", "baudrate", "port", "address"):
                value = getattr(profile, field)
                if value is not None:
                    reader.setdefault(field, value)
            for field in ("data0", "data1"):
                value = getattr(profile, field)
                if value is not None and f"{field}_pin" not in reader:
                    reader.setdefault(field, value)
        for key, field in _READER_INPUTS.items():
            if key in reader:
                pin_of(reader, field, reader.pop(key), f"readers[{i}].{key}", False)
        readers.append(reader)
    if "readers" in data:
        data["readers"] = readers
    return data, board


def check_reserved(board: BoardProfile, used: list[tuple[str, list[int]]]) -> None:
    """Refuse a pin the board itself uses; ``used`` is (who, pins) pairs."""
    for who, pins in used:
        for pin in pins:
            if pin in board.reserved:
                raise ConfigError(
                    "config",
                    f"GPIO {pin} is used by {who}, but board {board.name!r} reserves it: "
                    f"{board.reserved[pin]}",
                )
