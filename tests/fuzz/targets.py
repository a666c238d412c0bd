"""The fuzz targets: each a parser, its seeds, its mutations and its documented refusals."""

from __future__ import annotations

import contextlib
import copy
import json
import random
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from gateway.core import base45, qr
from gateway.core.credentials import parse_read
from gateway.core.jws import SignatureError, Signer, b64url, keyset_of
from gateway.errors import DoorgwError
from gateway.hw.readers.osdp.reader import card_read
from gateway.hw.readers.pn532.codec import (
    IN_LIST_PASSIVE_TARGET,
    PN532_TFI,
    FrameParser,
    Response,
    encode,
    parse_targets,
)
from gateway.hw.readers.scanner.framer import LineFramer
from gateway.hw.readers.wiegand.codec import decode_frame, encode_card
from gateway.net.api import EnrolBody, LockdownBody, UnlockBody
from gateway.net.http_guard import _is_json
from gateway.wire.cloudkit import CloudSigner
from gateway.wire.dataset import parse_dataset
from gateway.wire.protocol import decode_part, parse_cloud_message
from tests.conftest import base_dataset

SIGNER = Signer.generate("fuzz")
KEYS = keyset_of([SIGNER])
PASS_KEY = Ed25519PrivateKey.generate()
APP_KEY = Ed25519PrivateKey.generate()

# Values that have broken parsers before: bounds, types, sizes, shapes.
HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**53 - 1,
    2**53,
    2**63,
    -(2**63),
    10**30,
    1e308,
    -1e308,
    0.5,
    "",
    " ",
    "A" * 300,
    "A" * 70_000,
    "\u0000",
    "\ud800",
    "é",
    "../../etc",
    "Europe/London",
    "UTC",
    "2026-03-10",
    [],
    {},
    [[]],
    [None] * 50,
    {"a": 1},
    json.loads("[" * 40 + "]" * 40),
    "DG1:",
    "paid",
    "active",
    "delete",
]
INTERESTING_BYTES = [
    b"\x00",
    b"\xff",
    b'"',
    b"{",
    b"[",
    b"]",
    b"}",
    b"\\",
    b",",
    b":",
    b"\n",
    b"\r",
    b"\x1b",
    b"0",
    b"9" * 40,
    b"-",
    b"e999",
    b"\\u0000",
    b"\xc3",
    b"=",
]


def _hostile(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(HOSTILE))  # a fresh one: never shared, never a cycle


def mutate_bytes(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """A few byte-level changes to ``data`` (``pool``: other seeds to splice with)."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.randrange(9)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif op == 2:
            buf[at:at] = rng.randbytes(rng.choice((1, 2, 4, 16, 300)))
        elif op == 3 and buf:
            end = min(len(buf), at + rng.choice((1, 4, 64, 4096)))
            del buf[at:end]
        elif op == 4 and buf:
            end = min(len(buf), at + rng.choice((1, 8, 64)))
            buf[at:at] = buf[at:end] * rng.choice((2, 10, 1000))
        elif op == 5:
            buf[at:at] = rng.choice(INTERESTING_BYTES)
        elif op == 6:
            del buf[at:]
        elif op == 7 and pool:
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            buf[at:] = other[cut:]
        elif op == 8 and buf:
            buf = bytearray(bytes(buf).swapcase()) if rng.random() < 0.1 else buf
    return bytes(buf[:1_000_000])


def mutate_json(doc: Any, rng: random.Random) -> Any:
    """``doc`` with one node replaced, removed or added (structure-aware)."""
    doc = json.loads(json.dumps(doc))
    for _ in range(rng.choice((1, 1, 2, 4))):
        doc = _mutate_node(doc, rng)
    return doc


def _mutate_node(node: Any, rng: random.Random) -> Any:
    if isinstance(node, dict) and node and rng.random() < 0.8:
        key = rng.choice(list(node))
        r = rng.random()
        if r < 0.15:
            del node[key]
        elif r < 0.25:
            node[rng.choice(["x", "gateway", "v", "type", key + "_"])] = _hostile(rng)
        else:
            node[key] = _mutate_node(node[key], rng)
        return node
    if isinstance(node, list) and node and rng.random() < 0.8:
        i = rng.randrange(len(node))
        r = rng.random()
        if r < 0.1:
            del node[i]
        elif r < 0.2:
            node.insert(i, _hostile(rng))
        elif r < 0.25:
            node.extend(node[i : i + 1] * rng.choice((2, 100)))
        else:
            node[i] = _mutate_node(node[i], rng)
        return node
    if isinstance(node, int) and not isinstance(node, bool) and rng.random() < 0.5:
        return node + rng.choice((-1, 1, 2**32, -(2**32), 2**53))
    return _hostile(rng)


def dump(doc: Any, rng: random.Random) -> bytes:
    """JSON text of ``doc``; sometimes with a member given twice."""
    text = json.dumps(doc, separators=(",", ":"))
    if rng.random() < 0.05 and text.startswith('{"'):
        first = text[1 : text.index(",") if "," in text else -1]
        text = "{" + first + "," + text[1:]
    return text.encode()


class Target:
    """A parser under fuzz: ``mutate`` makes an input, ``check`` feeds it."""

    name = ""
    #: What the parser may raise for bad input: its documented refusal.
    refusals: tuple[type[BaseException], ...] = (DoorgwError,)

    def mutate(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def check(self, data: Any) -> None:
        raise NotImplementedError


def _cloud_payloads() -> list[dict[str, Any]]:
    """Valid payloads of every signed message kind."""
    cloud = CloudSigner(SIGNER, "t")
    tokens = [
        *cloud.snapshot(parse_dataset(base_dataset()))[:3],
        cloud.delta(1, 2, [{"op": "delete", "entity": "member", "id": "day_m"}]),
        cloud.command("gw-1", "unlock", 2_000_000_000, door="front", seconds=5),
        cloud.beacon(5),
        cloud.ack("gw-1", 17),
    ]
    return [json.loads(KEYS.verify(t)[1]) for t in tokens]


class Jws(Target):
    """A compact JWS off the network, verified, then parsed as a cloud message."""

    name = "jws"
    refusals = (SignatureError, DoorgwError)

    def __init__(self) -> None:
        self.payloads = _cloud_payloads()
        self.tokens = [SIGNER.sign(json.dumps(p).encode()) for p in self.payloads]

    def mutate(self, rng: random.Random) -> bytes:
        r = rng.random()
        if r < 0.4:  # signed but absurd: gets past the signature
            doc = mutate_json(rng.choice(self.payloads), rng)
            return SIGNER.sign(dump(doc, rng))
        if r < 0.6:  # a hostile protected header, re-signed
            header = mutate_json({"alg": "EdDSA", "kid": "fuzz", "typ": "JWT"}, rng)
            head = b64url(dump(header, rng))
            payload = b64url(json.dumps(rng.choice(self.payloads)).encode())
            signing_input = f"{head}.{payload}".encode()
            sig = SIGNER.key.sign(signing_input)
            return signing_input + b"." + b64url(sig).encode()
        return mutate_bytes(rng.choice(self.tokens), rng, self.tokens)

    def check(self, data: bytes) -> None:
        _, payload = KEYS.verify(data)
        parse_cloud_message(payload)


class CloudMessage(Target):
    """A verified payload's JSON, parsed into a message (no signature in the way)."""

    name = "cloud_message"

    def __init__(self) -> None:
        self.payloads = _cloud_payloads()
        self.raw = [json.dumps(p).encode() for p in self.payloads]

    def mutate(self, rng: random.Random) -> bytes:
        if rng.random() < 0.7:
            return dump(mutate_json(rng.choice(self.payloads), rng), rng)
        return mutate_bytes(rng.choice(self.raw), rng, self.raw)

    def check(self, data: bytes) -> None:
        parse_cloud_message(data)


class SnapshotChunk(Target):
    """A snapshot chunk's ``data``: zlib of one table's rows, decoded and checked."""

    name = "snapshot_chunk"

    def __init__(self) -> None:
        from gateway.wire.protocol import dataset_parts

        ds = parse_dataset(base_dataset())
        self.parts = [{"table": t, "rows": r} for t, r in dataset_parts(ds) if r]
        self.raw = [zlib.compress(json.dumps(p).encode()) for p in self.parts]

    def mutate(self, rng: random.Random) -> bytes:
        if rng.random() < 0.7:
            return zlib.compress(dump(mutate_json(rng.choice(self.parts), rng), rng))
        return mutate_bytes(rng.choice(self.raw), rng, self.raw)

    def check(self, data: bytes) -> None:
        decode_part(data)


class QrText(Target):
    """What a scanner reads: parsed, then its signature checked (pass or app code)."""

    name = "qr"

    def __init__(self) -> None:
        self.issuer = qr.PassIssuer(PASS_KEY, "fuzz")
        self.keys = keyset_of([Signer(PASS_KEY, "fuzz")])
        self.app_public = APP_KEY.public_key().public_bytes_raw()
        self.seeds = [
            self.issuer.issue(
                site="t", pass_id="dp-1", not_before=1, not_after=2**31, doors=["front"]
            ),
            self.issuer.issue(
                site="t",
                pass_id="v-2",
                not_before=1,
                not_after=2,
                kind=qr.PassKind.VISITOR,
                door_groups=["g"],
                max_uses=3,
                holder="Ada",
            ),
            qr.app_code(APP_KEY, "app-1", 1_773_136_500),
        ]
        self.raw = [s.encode() for s in self.seeds]

    def mutate(self, rng: random.Random) -> str:
        r = rng.random()
        if r < 0.3:  # the signed bytes changed, then signed again
            code = qr.parse(rng.choice(self.seeds))
            body = mutate_bytes(code.signed, rng, [])
            key = APP_KEY if body[:1] == code.signed[:1] and code.signed[0] != 1 else PASS_KEY
            return qr.to_text(body, key.sign(body))
        if r < 0.5:  # the base45 text changed
            text = rng.choice(self.seeds)
            return text[:4] + mutate_bytes(text[4:].encode(), rng, []).decode("latin-1")
        return mutate_bytes(rng.choice(self.raw), rng, self.raw).decode("latin-1")

    def check(self, data: str) -> None:
        code = qr.parse(data)
        if isinstance(code.body, qr.AppCode):
            qr.verify_app_code(code, self.app_public)
        else:
            qr.verify_pass(code, self.keys)


class Base45(Target):
    name = "base45"

    def __init__(self) -> None:
        self.raw = [base45.encode(bytes(range(n))).encode() for n in (0, 1, 2, 17, 200)]

    def mutate(self, rng: random.Random) -> str:
        return mutate_bytes(rng.choice(self.raw), rng, self.raw).decode("latin-1")

    def check(self, data: str) -> None:
        base45.decode(data)


class Wiegand(Target):
    """The bits of one Wiegand frame."""

    name = "wiegand"

    def __init__(self) -> None:
        self.frames = [encode_card(n, 12, 345) for n in (26, 34, 35, 37)]
        self.frames += [[1, 0, 1, 1], [0, 0, 1, 1, 1, 1, 0, 0]]

    def mutate(self, rng: random.Random) -> list[int]:
        bits = list(rng.choice(self.frames))
        for _ in range(rng.choice((1, 2, 5))):
            op = rng.randrange(4)
            if op == 0 and bits:
                bits[rng.randrange(len(bits))] ^= 1
            elif op == 1:
                bits.insert(rng.randrange(len(bits) + 1), rng.choice((0, 1, 2, -1)))
            elif op == 2 and bits:
                del bits[rng.randrange(len(bits))]
            else:
                bits = (bits * rng.choice((2, 100)))[:400]
        return bits

    def check(self, data: list[int]) -> None:
        decode_frame(data)


class Pn532(Target):
    """UART bytes from a PN532, framed; card lists taken from InListPassiveTarget answers."""

    name = "pn532"
    refusals = (DoorgwError, ValueError)  # parse_targets: ValueError is its refusal

    def __init__(self) -> None:
        answer = bytes([1, 1, 0x00, 0x04, 0x08, 4]) + b"\x04\x00\x00\x01"
        self.raw = [
            b"\x00\x00\xff\x00\xff\x00" + encode(IN_LIST_PASSIVE_TARGET + 1, answer, tfi=PN532_TFI),
            encode(0x03, bytes([0x32, 1, 6, 7]), tfi=PN532_TFI),
            b"\x00\x00\xff\x01\xff\x7f\x81\x00",
        ]

    def mutate(self, rng: random.Random) -> bytes:
        return mutate_bytes(rng.choice(self.raw), rng, self.raw)

    def check(self, data: bytes) -> None:
        parser = FrameParser()
        cut = len(data) // 2
        for frame in parser.feed(data[:cut]) + parser.feed(data[cut:]):
            if isinstance(frame, Response) and frame.command == IN_LIST_PASSIVE_TARGET + 1:
                parse_targets(frame)


class LineFraming(Target):
    """A scanner's bytes, cut into lines."""

    name = "line_framer"

    def __init__(self) -> None:
        self.raw = [b"DG1:ABC\r\n", b"\x1b[0m\n" * 3, "café\n".encode(), b"A" * 5000 + b"\n"]

    def mutate(self, rng: random.Random) -> bytes:
        return mutate_bytes(rng.choice(self.raw), rng, self.raw)

    def check(self, data: bytes) -> None:
        framer = LineFramer()
        for i in range(0, len(data), 64):
            framer.feed(data[i : i + 64])


class OsdpCard(Target):
    """An OSDP card-read event as libosdp hands it over (format, length, data bytes)."""

    name = "osdp_card"

    def __init__(self) -> None:
        frame = encode_card(26, 12, 34567)
        packed = int("".join(map(str, frame)), 2) << (32 - 26)
        self.events: list[dict[str, Any]] = [
            {"event": 1, "format": 1, "length": 26, "data": packed.to_bytes(4, "big")},
            {"event": 1, "format": 2, "length": 8, "data": b"04A2B3C4"},
            {"event": 1, "format": 0, "length": 32, "data": b"\x04\xa2\xb3\xc4"},
        ]

    def mutate(self, rng: random.Random) -> dict[str, Any]:
        event = dict(rng.choice(self.events))
        for _ in range(rng.choice((1, 2))):
            key = rng.choice(("format", "length", "data"))
            if key == "data":
                event["data"] = mutate_bytes(event["data"], rng, [])
            else:
                event[key] = rng.choice((0, 1, 2, 3, -1, 26, 37, 2**31, 10**9, event[key] + 1))
        return event

    def check(self, data: dict[str, Any]) -> None:
        card_read(data)


class Credentials(Target):
    """``KIND:VALUE`` as staff type it (explain, access, the simulator)."""

    name = "credentials"

    def __init__(self) -> None:
        self.raw = [
            b"nfc:04:a2:b3:c4:d5:e6:f7",
            b"wiegand:26/012:34567",
            b"wiegand:12:345",
            b"pin:123456",
            b"app:" + b"A" * 43,
        ]

    def mutate(self, rng: random.Random) -> str:
        return mutate_bytes(rng.choice(self.raw), rng, self.raw).decode("latin-1")

    def check(self, data: str) -> None:
        parse_read(data, site_id="t")


class ApiBodies(Target):
    """A staff request's body, as the gate and then the endpoint's model read it."""

    name = "api_bodies"
    refusals = (DoorgwError, ValidationError)
    MODELS: tuple[Any, ...] = (UnlockBody, LockdownBody, EnrolBody)

    def __init__(self) -> None:
        self.docs = [{"seconds": 8}, {"on": True}, {"seconds": 60}]

    def mutate(self, rng: random.Random) -> bytes:
        if rng.random() < 0.7:
            return dump(mutate_json(rng.choice(self.docs), rng), rng)[:8192]
        raw = [json.dumps(d).encode() for d in self.docs]
        return mutate_bytes(rng.choice(raw), rng, raw)[:8192]

    def check(self, data: bytes) -> None:
        if not _is_json(data):
            return  # the gate answers 400
        for model in self.MODELS:
            with contextlib.suppress(ValidationError):
                model.model_validate_json(data)


class ConfigFile(Target):
    """A config file, read and validated as ``doorgw run`` and ``check-config`` do."""

    name = "config"

    def __init__(self) -> None:
        from gateway.config.models import load_config

        self.load = load_config
        self.dir = Path(tempfile.mkdtemp(prefix="doorgw-fuzz-"))
        example = Path(__file__).parents[2] / "firmware-config" / "doorgw.example.toml"
        self.raw = [
            example.read_bytes(),
            b'[gateway]\nid = "gw-1"\nsite_id = "t"\ndata_dir = "d"\n'
            b'[[doors]]\nid = "front"\nlock_pin = 17\n'
            b'[[readers]]\nid = "r"\ndoor = "front"\nkind = "wiegand"\n'
            b"data0_pin = 5\ndata1_pin = 6\n[api]\nport = 8080\n",
        ]
        self.path = self.dir / "doorgw.toml"

    def mutate(self, rng: random.Random) -> bytes:
        return mutate_bytes(rng.choice(self.raw), rng, self.raw)

    def check(self, data: bytes) -> None:
        self.path.write_bytes(data)
        self.load(self.path)


TARGETS: dict[str, Callable[[], Target]] = {
    t.name: t
    for t in (
        Jws,
        CloudMessage,
        SnapshotChunk,
        QrText,
        Base45,
        Wiegand,
        Pn532,
        LineFraming,
        OsdpCard,
        Credentials,
        ApiBodies,
        ConfigFile,
    )
}
