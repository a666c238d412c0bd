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
    Path(__file__).resolve().parents[2] / "firmware-config",
)

#: Keys that name a board pin: the field they fill, and whether it is an output.
_DOOR_PINS = {
    "lock": ("lock_pin", True),
    "green_led": ("green_led_pin", True),
    "red_led": ("red_led_pin", True),
    "buzzer": ("buzzer_pin", True),
    "contact": ("contact_pin", False),
    "rex": ("rex_pin", False),
}
_READER_PINS = {"data0": ("data0_pin", False), "data1": ("data1_pin", False)}


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

    def name_pins(table: dict[str, Any], names: dict[str, tuple[str, bool]], where: str) -> None:
        """Replace each board pin name in ``table`` by its GPIO (and the lock's polarity)."""
        for key, (field, output) in names.items():
            if key not in table:
                continue
            name = table.pop(key)
            if field in table:
                raise ConfigError("config", f"set {key} or {field}, not both", f"{where}.{key}")
            table[field] = _board_pin(board, board_name, name, output, f"{where}.{key}")
            if output and board is not None:
                active_high = board.outputs[str(name)].active_high
                if field == "lock_pin":
                    table.setdefault("relay_active_high", active_high)
                elif not active_high:
                    # LEDs and buzzers are driven active-high; saying nothing would
                    # light them when they should be dark.
                    raise ConfigError(
                        "config",
                        f"board output {name!r} is active-low; only a lock relay may be",
                        f"{where}.{key}",
                    )

    doors = []
    for i, door in enumerate(data.get("doors") or []):
        if isinstance(door, dict):
            door = dict(door)
            name_pins(door, _DOOR_PINS, f"doors[{i}]")
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
        name_pins(reader, _READER_PINS, f"readers[{i}]")
        readers.append(reader)
    if "readers" in data:
        data["readers"] = readers
    return data, board


def _board_pin(
    board: BoardProfile | None, board_name: object, name: object, output: bool, where: str
) -> int:
    """The GPIO of a board's named output or input; ConfigError saying what exists."""
    if board is None:
        raise ConfigError(
            "config", f"{name!r} names a board pin, but [gateway] sets no board", where
        )
    pins = {n: o.pin for n, o in board.outputs.items()} if output else board.inputs
    if name in pins:
        return pins[str(name)]
    kind, other = ("output", board.inputs) if output else ("input", board.outputs)
    hint = f" (that is an {'input' if output else 'output'})" if name in other else ""
    raise ConfigError(
        "config",
        f"board {board_name!r} has no {kind} {name!r}{hint}; {kind}s: {', '.join(pins)}",
        where,
    )


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
