"""The gateway's TOML configuration: typed, frozen, validated once.

Errors name the file, the exact key and what is wrong, e.g.::

    /etc/doorgw/doorgw.toml: doors[1].id: duplicate door id 'front'
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.config.profiles import check_reserved, resolve
from gateway.core.localtime import check_timezone
from gateway.core.schedule import WeeklySchedule
from gateway.errors import ConfigError
from gateway.wire.dataset import Id, all_problems, first_problem

#: Where the daemon and staff commands look when ``--config`` is not given.
DEFAULT_CONFIG_PATH = Path("/etc/doorgw/doorgw.toml")


#: A TOML integer: not text ("8080"), not true or false (which pydantic would
#: take as 1 and 0: `lock_pin = true` would drive GPIO 1), not 4.0.
Int = Annotated[int, Strict()]
#: A TOML integer or float: not text ("5"), not true or false.
Number = Annotated[float, Strict()]
#: A BCM GPIO number on a Raspberry Pi header.
Pin = Annotated[Int, Field(ge=0, le=27)]


_S = TypeVar("_S", bound="_Section")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    """``[gateway]``: who this gateway is and where it keeps its state."""

    id: Id
    site_id: Id
    data_dir: Path = Path("/var/lib/doorgw")


class TimeSection(_Section):
    """``[time]``: the site's zone as installed, and when the clock is trusted.

    The synced site's zone is authoritative.  Time-bound QR codes are only
    accepted while the clock is trusted: NTP-synchronised (``use_ntp``), or
    within ``max_skew_seconds`` of a platform-signed timestamp received in the
    last ``cloud_confirm_hours`` (docs/credentials.md).
    """

    timezone: str | None = None
    use_ntp: bool = True
    max_skew_seconds: Number = Field(default=60.0, ge=1, le=3600)
    cloud_confirm_hours: Number = Field(default=24.0, gt=0, le=24 * 30)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)


class DoorConfig(_Section):
    """``[[doors]]``: one door this gateway drives, by its id in the site's data."""

    id: Id
    name: str | None = None
    unlock_seconds: Number = Field(default=5.0, gt=0, le=300)
    extended_unlock_seconds: Number = Field(default=15.0, gt=0, le=600)
    #: The lock relay's GPIO (BCM number); without it the door is not driven.
    lock_pin: Pin | None = None
    lock_kind: Literal["fail_secure", "fail_safe"] = "fail_secure"
    relay_active_high: bool = True
    contact_pin: Pin | None = None
    rex_pin: Pin | None = None
    held_open_seconds: Number = Field(default=30.0, gt=0, le=3600)
    green_led_pin: Pin | None = None
    red_led_pin: Pin | None = None
    buzzer_pin: Pin | None = None
    #: Site-local hours the door stands unlocked (open-plan hours), e.g. "Mon-Fri 09:00-17:00".
    unlocked_schedule: tuple[str, ...] = ()
    #: ...but only once a staff member has badged in that day.
    unlock_after_first_staff: bool = False
    #: Card and PIN: a card that would open the door waits for its holder's PIN
    #: on this door's keypad (a Wiegand reader with keys) for pin_timeout_seconds.
    card_and_pin: bool = False
    pin_timeout_seconds: Number = Field(default=10.0, ge=2, le=120)

    @field_validator("unlocked_schedule")
    @classmethod
    def _schedule(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        WeeklySchedule.parse(list(entries))  # ScheduleFormatError is a ValueError
        return entries

    def pins(self) -> list[int]:
        """Every GPIO this door uses."""
        return [
            p
            for p in (
                self.lock_pin,
                self.contact_pin,
                self.rex_pin,
                self.green_led_pin,
                self.red_led_pin,
                self.buzzer_pin,
            )
            if p is not None
        ]


#: The settings each reader kind takes, beside ``id``, ``door`` and ``kind``.
_READER_FIELDS: dict[str, tuple[str, ...]] = {
    "pn532": ("port", "baudrate"),
    "wiegand": ("data0_pin", "data1_pin"),
    "osdp": ("port", "baudrate", "address", "key_file", "install_mode"),
    "scanner": ("port", "baudrate"),
}
_READER_REQUIRED: dict[str, tuple[str, ...]] = {
    "pn532": ("port",),
    "wiegand": ("data0_pin", "data1_pin"),
    "osdp": ("port",),
    "scanner": ("port",),
}

#: Serial speeds a reader may be set to.
Baudrate = Literal[9600, 19200, 38400, 57600, 115200]


class _ReaderBase(_Section):
    id: Id
    door: Id

    def pins(self) -> list[int]:
        """Every GPIO this reader uses."""
        return []


class _SerialReader(_ReaderBase):
    #: Serial port: a device path or any pyserial URL.
    port: Annotated[str, StringConstraints(min_length=1)]
    #: Serial speed; unset: the kind's usual speed.
    baudrate: Baudrate | None = None


class Pn532ReaderConfig(_SerialReader):
    """``kind = "pn532"``: an NXP PN532 NFC reader over UART (115200 baud unless set)."""

    kind: Literal["pn532"]


class ScannerReaderConfig(_SerialReader):
    """``kind = "scanner"``: a QR or barcode scanner writing lines (9600 baud unless set)."""

    kind: Literal["scanner"]


class OsdpReaderConfig(_SerialReader):
    """``kind = "osdp"``: an OSDP reader on RS-485, over its secure channel."""

    kind: Literal["osdp"]
    #: The reader's address on the bus.
    address: Int = Field(default=0, ge=0, le=126)
    #: The reader's secure-channel key (mode 0600); unset:
    #: ``<data_dir>/secrets/osdp-<id>.key``.
    key_file: Path | None = None
    #: Provisioning only. Accept a reader on the public install-mode key,
    #: give it its own key (made if key_file does not exist yet), and report it.
    install_mode: bool = False


class WiegandReaderConfig(_ReaderBase):
    """``kind = "wiegand"``: cards and keypads on two GPIOs (DATA0, DATA1)."""

    kind: Literal["wiegand"]
    data0_pin: Pin
    data1_pin: Pin

    def pins(self) -> list[int]:
        """Every GPIO this reader uses."""
        return [self.data0_pin, self.data1_pin]


def _reader_fields_of_kind(value: object) -> object:
    """Name a reader's missing or misplaced settings the way staff think of them.

    Runs before the union picks a class by ``kind``: pydantic alone would say
    "extra inputs are not permitted", not which kinds the setting is for.
    """
    if not isinstance(value, dict) or value.get("kind") not in _READER_FIELDS:
        return value
    kind, rid = value["kind"], value.get("id")
    for name in _READER_REQUIRED[kind]:
        if value.get(name) in (None, ""):
            needs = (
                f"'{name}'"
                if len(_READER_REQUIRED[kind]) == 1
                else " and ".join(_READER_REQUIRED[kind])
            )
            raise ValueError(f"reader {rid!r}: a {kind} reader needs {needs}")
    for name in sorted(value):
        kinds = [k for k, fields in _READER_FIELDS.items() if name in fields]
        if kinds and kind not in kinds:
            raise ValueError(
                f"reader {rid!r}: {name} is for {', '.join(kinds)} readers, not {kind}"
            )
    return value


#: ``[[readers]]``: a credential reader and the door it opens, one class per
#: ``kind``: ``pn532`` (NFC over UART), ``wiegand`` (two GPIOs, cards and
#: keypads), ``osdp`` (RS-485, secure channel) and ``scanner`` (a QR or
#: barcode scanner writing lines on a serial port).
ReaderConfig = Annotated[
    Pn532ReaderConfig | WiegandReaderConfig | OsdpReaderConfig | ScannerReaderConfig,
    Field(discriminator="kind"),
    BeforeValidator(_reader_fields_of_kind),
]


#: A broker: ``mqtts://host:port`` (or ``mqtt://`` for development on loopback).
BrokerUrl = Annotated[str, StringConstraints(pattern=r"^mqtts?://[^/:]+(:\d{1,5})?$")]
#: The MQTT topic prefix: path segments of letters, digits, ``_`` and ``-``.
TopicPrefix = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$")]


class MqttSection(_Section):
    """``[mqtt]``: the brokers, the gateway's TLS identity and the topic prefix."""

    #: Tried in order, failing over to the next: ``mqtts://host:port`` (or ``mqtt://``
    #: for development on loopback only).
    urls: tuple[BrokerUrl, ...] = Field(min_length=1, max_length=16)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: TopicPrefix = "doorgw/v1"
    keepalive: Int = Field(default=30, ge=5, le=3600)
    #: Seconds to wait for a broker's CONNACK (a cluster electing a leader can
    #: take a while) before trying the next URL.
    connect_timeout: Number = Field(default=10.0, ge=1, le=120)
    reconnect_min: Number = Field(default=0.5, gt=0, le=60)
    reconnect_max: Number = Field(default=60.0, gt=0, le=3600)
    heartbeat_seconds: Number = Field(default=60.0, ge=1, le=3600)


class StalenessSection(_Section):
    """``[sync.staleness]``: hours without hearing from the platform before each
    class of grant stops opening doors (unset: no bound)."""

    plan_hours: Number | None = Field(default=72.0, gt=0)
    booking_hours: Number | None = Field(default=72.0, gt=0)
    pass_hours: Number | None = Field(default=24.0, gt=0)
    #: For staff members, every kind of grant; unset: staff keep their access.
    staff_hours: Number | None = Field(default=None, gt=0)


class SyncSection(_Section):
    """``[sync]``: the platform's pinned signing keys and how long data stays good."""

    keys_file: Path
    staleness: StalenessSection = StalenessSection()
    #: The site's PIN key (mode 0600, from provisioning): PIN digests are keyed
    #: with it (docs/model.md).  Unset: the older unkeyed digests.
    pin_key_file: Path | None = None
    #: With a PIN key: also accept unkeyed digests, while the platform moves over.
    accept_unkeyed_pins: bool = False


class CredentialsSection(_Section):
    """``[credentials]``: how card reads are matched to the site's credentials.

    A Wiegand card's value includes its format (``26/12:34567``), so a cheap
    26-bit card cannot stand in for a 37-bit one with the same facility and
    number.  A platform that stores Wiegand numbers without their format
    (``12:34567``) can be matched for the formats listed here, and only those.
    """

    #: Formats (frame lengths) whose reads also match format-less values.
    wiegand_legacy_formats: tuple[Literal[26, 34, 35, 37], ...] = ()
    #: How many digits a PIN typed at a keypad has (anything else is a wrong PIN).
    pin_min_digits: Int = Field(default=4, ge=4, le=8)
    pin_max_digits: Int = Field(default=8, ge=4, le=8)

    @model_validator(mode="after")
    def _pin_digits(self) -> CredentialsSection:
        if self.pin_min_digits > self.pin_max_digits:
            raise ValueError("pin_min_digits is more than pin_max_digits")
        return self


class QrSection(_Section):
    """``[qr]``: how scanned codes are checked (docs/credentials.md)."""

    #: A member-app code is accepted this many seconds either side of when it was made.
    app_code_window_seconds: Int = Field(default=30, ge=5, le=300)


class ApiSection(_Section):
    """``[api]``: the local staff API and status page (docs/api.md).

    It listens on loopback unless ``listen`` says otherwise; with
    ``tls_cert_file`` and ``tls_key_file`` it speaks HTTPS.  Staff tokens are
    kept as hashes in ``tokens_file`` (default ``<data_dir>/staff-tokens.json``).
    """

    listen: str = "127.0.0.1"

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"
            ) from None
        return value

    port: Int = Field(default=8080, ge=1, le=65535)
    tokens_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Wrong tokens from one client address before it is refused for a while.
    max_failures: Int = Field(default=5, ge=1, le=1000)
    lockout_seconds: Number = Field(default=60.0, ge=1, le=86400)
    #: Connections the API holds at once; at the limit the longest-idle one is dropped.
    max_connections: Int = Field(default=32, ge=1, le=1000)

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSection:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self


class OutboxSection(_Section):
    """``[outbox]``: how many unacknowledged events the gateway keeps at most, and
    within how many milliseconds a stored event should be synced to the storage
    (a later sync is counted as late; the door never waits for any: see
    docs/doors.md, "What survives a crash")."""

    max_events: Int = Field(default=1_000_000, ge=100, le=100_000_000)
    flush_window_ms: Int = Field(default=50, ge=1, le=10_000)


class Config(_Section):
    """The whole configuration file."""

    gateway: GatewaySection
    time: TimeSection = TimeSection()
    doors: tuple[DoorConfig, ...] = Field(default=(), max_length=64)
    readers: tuple[ReaderConfig, ...] = Field(default=(), max_length=64)
    mqtt: MqttSection | None = None
    sync: SyncSection | None = None
    outbox: OutboxSection = OutboxSection()
    qr: QrSection = QrSection()
    credentials: CredentialsSection = CredentialsSection()
    api: ApiSection | None = None

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

    @model_validator(mode="after")
    def _hardware(self) -> Config:
        doors = {d.id for d in self.doors}
        owners: dict[int, str] = {}
        for reader in self.readers:
            if reader.door not in doors:
                raise ValueError(
                    f"reader {reader.id!r} names door {reader.door!r}, which is not in [[doors]]"
                )
        users = [(f"door {d.id!r}", d.pins()) for d in self.doors]
        users += [(f"reader {r.id!r}", r.pins()) for r in self.readers]
        for who, pins in users:
            for pin in pins:
                if pin in owners:
                    raise ValueError(f"GPIO {pin} is used by {owners[pin]} and by {who}")
                owners[pin] = who
        ids = [r.id for r in self.readers]
        if len(ids) != len(set(ids)):
            raise ValueError("reader ids must be unique")
        ports: dict[str, str] = {}
        for reader in self.readers:
            if not isinstance(reader, _SerialReader):
                continue
            if reader.port in ports:
                raise ValueError(
                    f"serial port {reader.port} is used by reader {ports[reader.port]!r} and "
                    f"by reader {reader.id!r} (one reader per port)"
                )
            ports[reader.port] = reader.id
        keypad_doors = {r.door for r in self.readers if r.kind == "wiegand"}
        for door in self.doors:
            if door.card_and_pin and door.id not in keypad_doors:
                raise ValueError(
                    f"door {door.id!r} is card_and_pin, but no keypad (a wiegand reader) "
                    "is configured for it"
                )
        return self

    @property
    def outbox_path(self) -> Path:
        """The SQLite file of the event outbox."""
        return self.gateway.data_dir / "events.sqlite3"

    @property
    def cache_path(self) -> Path:
        """The SQLite file of the local cache."""
        return self.gateway.data_dir / "cache.sqlite3"

    @property
    def site_state_path(self) -> Path:
        """The file of site state that outlasts restarts (lockdown, first staff in)."""
        return self.gateway.data_dir / "site-state.json"

    @property
    def tokens_path(self) -> Path:
        """The file of staff token hashes."""
        if self.api is not None and self.api.tokens_file is not None:
            return self.api.tokens_file
        return self.gateway.data_dir / "staff-tokens.json"

    def osdp_key_file(self, reader: OsdpReaderConfig) -> Path:
        """Where an OSDP reader's secure-channel key is kept."""
        if reader.key_file is not None:
            return reader.key_file
        return self.gateway.data_dir / "secrets" / f"osdp-{reader.id}.key"

    def door(self, door_id: str) -> DoorConfig | None:
        """The configured door with this id, if any."""
        return next((d for d in self.doors if d.id == door_id), None)


def _nul_at(value: object) -> str | None:
    """The key of the first string in ``value`` holding a NUL character, if any.

    A loop, not recursion: TOML arrays can nest deeper than Python recurses.
    """
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return key or "config"
        elif isinstance(item, dict):
            for k, v in item.items():
                if "\x00" in str(k):
                    return key or "config"
                stack.append((f"{key}.{k}" if key else str(k), v))
        elif isinstance(item, list):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(item))
    return None


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
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: an integer of 9,000 digits
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(str(path), "not valid TOML: nested too deeply") from None
    nul = _nul_at(data)
    if nul is not None:  # no setting has one, and paths with one cannot be opened
        raise ConfigError(str(path), "a value holds a NUL character", key=nul)
    try:
        data, board = resolve(data, path.parent)
    except ConfigError as exc:
        if exc.path != "config":
            raise
        raise ConfigError(str(path), exc.message, exc.key) from None
    try:
        config = Config.model_validate(data)
    except RecursionError:
        raise ConfigError(str(path), "a value is nested too deeply") from None
    except ValidationError as exc:
        key, message = first_problem(exc)
        problems = tuple(f"{k}: {m}" if k else m for k, m in all_problems(exc))
        more = exc.error_count() - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(str(path), message, key=key or None, problems=problems) from None
    if board is not None:
        used = [(f"door {d.id!r}", d.pins()) for d in config.doors]
        used += [(f"reader {r.id!r}", r.pins()) for r in config.readers]
        try:
            check_reserved(board, used)
        except ConfigError as exc:
            raise ConfigError(str(path), exc.message) from None
    base = path.parent
    gateway = config.gateway.model_copy(update={"data_dir": _under(base, config.gateway.data_dir)})
    update: dict[str, object] = {"gateway": gateway}
    if config.mqtt is not None:
        update["mqtt"] = _paths_under(base, config.mqtt, ("ca_file", "cert_file", "key_file"))
    update["readers"] = tuple(
        r.model_copy(update={"key_file": _under(base, r.key_file)})
        if isinstance(r, OsdpReaderConfig) and r.key_file is not None
        else r
        for r in config.readers
    )
    if config.sync is not None:
        update["sync"] = config.sync.model_copy(
            update={
                "keys_file": _under(base, config.sync.keys_file),
                "pin_key_file": None
                if config.sync.pin_key_file is None
                else _under(base, config.sync.pin_key_file),
            }
        )
    if config.api is not None:
        update["api"] = _paths_under(
            base, config.api, ("tokens_file", "tls_cert_file", "tls_key_file")
        )
    return config.model_copy(update=update)


def _paths_under(base: Path, section: _S, names: tuple[str, ...]) -> _S:
    """``section`` with its file settings ``names`` (those given) made absolute."""
    return section.model_copy(
        update={
            name: _under(base, getattr(section, name))
            for name in names
            if getattr(section, name) is not None
        }
    )


def _under(base: Path, path: Path) -> Path:
    """``path`` as given if absolute, else relative to the config file's directory."""
    return path if path.is_absolute() else (base / path).resolve()
