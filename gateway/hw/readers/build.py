"""Readers made from their config entries, by kind, from one table.

:data:`BUILDERS` maps each ``kind`` of ``[[readers]]`` entry to the function
that makes its reader, wired to the gateway's :class:`~.base.Sink`.  A new
reader kind is a folder beside the others, a config class and one row here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.clock import Clock
from gateway.config.models import (
    OsdpReaderConfig,
    Pn532ReaderConfig,
    ReaderConfig,
    ScannerReaderConfig,
    WiegandReaderConfig,
)
from gateway.core.credentials import CredentialRead
from gateway.core.model import CredentialKind
from gateway.errors import HardwareError
from gateway.events import Record
from gateway.hw.pins import PinFactory
from gateway.hw.readers.base import Reader, Sink
from gateway.hw.readers.osdp.keys import KeyFileError, load_or_create_key
from gateway.hw.readers.pn532.reader import Pn532Reader
from gateway.hw.readers.scanner.reader import SerialLineReader
from gateway.hw.readers.wiegand.codec import CardRead
from gateway.hw.readers.wiegand.reader import WiegandReader


@dataclass
class ReaderContext:
    """What every builder may use: the sink, the event record, the clock, the pins."""

    sink: Sink
    record: Record
    clock: Clock
    pin_factory: PinFactory
    #: Where an OSDP reader's key lives (config decides).
    osdp_key_file: Callable[[OsdpReaderConfig], Path]
    #: Closed when the gateway stops (outputs back to their safe state).
    closing: contextlib.AsyncExitStack
    #: Problems found while building, recorded once the gateway runs: (type, data).
    startup_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _pn532(cfg: Pn532ReaderConfig, ctx: ReaderContext) -> Reader:
    async def on_uid(uid: bytes) -> None:
        read = CredentialRead(CredentialKind.NFC_UID, uid.hex().upper())
        await ctx.sink.card(cfg.door, cfg.id, read)

    return Pn532Reader(
        cfg.id,
        cfg.port,
        on_uid=on_uid,
        record=ctx.record,
        clock=ctx.clock,
        baudrate=cfg.baudrate or 115200,
    )


def _scanner(cfg: ScannerReaderConfig, ctx: ReaderContext) -> Reader:
    async def on_line(text: str) -> None:
        await ctx.sink.code(cfg.door, cfg.id, text)

    return SerialLineReader(
        cfg.id,
        cfg.port,
        on_line=on_line,
        record=ctx.record,
        clock=ctx.clock,
        baudrate=cfg.baudrate or 9600,
    )


def _wiegand(cfg: WiegandReaderConfig, ctx: ReaderContext) -> Reader:
    async def on_card(read: CardRead) -> None:
        await ctx.sink.card(cfg.door, cfg.id, CredentialRead(CredentialKind.WIEGAND, read.value))

    async def on_pin(pin: str) -> None:
        await ctx.sink.pin(cfg.door, cfg.id, pin)

    reader = WiegandReader(
        cfg.id,
        factory=ctx.pin_factory,
        clock=ctx.clock,
        data0=cfg.data0_pin,
        data1=cfg.data1_pin,
        on_card=on_card,
        on_pin=on_pin,
        record=ctx.record,
    )
    ctx.closing.callback(reader.close)
    return reader


def _osdp(cfg: OsdpReaderConfig, ctx: ReaderContext) -> Reader | None:
    """An OSDP reader with its key, or None (and a recorded reason) if it cannot run."""
    try:
        import osdp  # noqa: F401 - only to say clearly when libosdp is missing
    except ImportError:
        raise HardwareError(
            f"reader {cfg.id!r} is an OSDP reader, but libosdp is not installed "
            "(pip install 'doorgw[osdp]')"
        ) from None
    from gateway.hw.readers.osdp.reader import OsdpReader

    path = ctx.osdp_key_file(cfg)
    try:
        key, created = load_or_create_key(path, create=cfg.install_mode)
    except KeyFileError as exc:
        ctx.startup_events.append(
            ("reader_insecure", {"reader": cfg.id, "reason": "key_file", "detail": str(exc)})
        )
        return None
    if created:
        ctx.startup_events.append(("reader_key_created", {"reader": cfg.id, "key_file": str(path)}))

    async def on_read(read: CredentialRead) -> None:
        await ctx.sink.card(cfg.door, cfg.id, read)

    return OsdpReader(
        cfg.id,
        cfg.port,
        address=cfg.address,
        key=key,
        install_mode=cfg.install_mode,
        on_read=on_read,
        record=ctx.record,
        clock=ctx.clock,
        baudrate=cfg.baudrate or 9600,
    )


#: One builder per reader kind; each returns the reader, or None when it
#: cannot run and has said why in ``ctx.startup_events``.
BUILDERS: dict[str, Callable[[Any, ReaderContext], Reader | None]] = {
    "pn532": _pn532,
    "scanner": _scanner,
    "wiegand": _wiegand,
    "osdp": _osdp,
}


def build_reader(cfg: ReaderConfig, ctx: ReaderContext) -> Reader | None:
    """The reader for one ``[[readers]]`` entry (None: it cannot run, and said why)."""
    return BUILDERS[cfg.kind](cfg, ctx)
