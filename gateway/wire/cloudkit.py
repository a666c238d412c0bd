"""The platform's side of the protocol: building and signing what gateways receive.

A reference implementation for platform developers, and what the simulator
and the tests use as the cloud.  Every function returns the exact bytes to
publish.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import zlib
from typing import Any

from gateway.core import model
from gateway.core.jws import Signer
from gateway.wire.protocol import MAX_CHUNK_ROWS, dataset_parts

#: Default upper bound of a chunk's compressed data (before base64 and JWS).
CHUNK_BYTES = 192 * 1024


class CloudSigner:
    """Signs protocol messages for one site."""

    def __init__(self, signer: Signer, site_id: str, clock_now: Any = None) -> None:
        self.signer = signer
        self.site_id = site_id
        self._now = clock_now

    def _iat(self) -> int:
        if self._now is None:
            import time

            return int(time.time())
        return int(self._now().timestamp())

    def sign(self, body: dict[str, Any], gateway: str | None = None) -> bytes:
        """Sign a message body (``type`` and its fields), adding v, site, gateway, iat."""
        doc = {"v": 1, "site": self.site_id, "iat": self._iat(), **body}
        if gateway is not None:
            doc["gateway"] = gateway
        return self.signer.sign(json.dumps(doc, separators=(",", ":")).encode())

    def delta(
        self,
        base_version: int,
        version: int,
        changes: list[dict[str, Any]],
        gateway: str | None = None,
    ) -> bytes:
        """A signed delta from ``base_version`` to ``version``."""
        return self.sign(
            {"type": "delta", "base_version": base_version, "version": version, "changes": changes},
            gateway,
        )

    def beacon(self, version: int) -> bytes:
        """A signed beacon announcing the platform's current version."""
        return self.sign({"type": "beacon", "version": version})

    def ack(self, gateway: str, seq: int) -> bytes:
        """A signed acknowledgement of events up to ``seq``."""
        return self.sign({"type": "ack", "seq": seq}, gateway)

    def command(self, gateway: str | None, action: str, exp: int, **fields: Any) -> bytes:
        """A signed one-time command."""
        return self.sign(
            {
                "type": "command",
                "command_id": secrets.token_hex(8),
                "nonce": secrets.token_urlsafe(16),
                "exp": exp,
                "action": action,
                **fields,
            },
            gateway,
        )

    def snapshot(
        self,
        dataset: model.Dataset,
        *,
        snapshot_id: str | None = None,
        gateway: str | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> list[bytes]:
        """The signed chunks of a snapshot of ``dataset``, in order."""
        datas = snapshot_datas(dataset, chunk_bytes)
        digest = hashlib.sha256(b"".join(datas)).hexdigest()
        sid = snapshot_id or f"snap-{dataset.version}-{secrets.token_hex(4)}"
        return [
            self.sign(
                {
                    "type": "snapshot_chunk",
                    "snapshot_id": sid,
                    "version": dataset.version,
                    "index": i,
                    "count": len(datas),
                    "sha256": digest,
                    "data": base64.b64encode(data).decode("ascii"),
                },
                gateway,
            )
            for i, data in enumerate(datas)
        ]


def snapshot_datas(dataset: model.Dataset, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """Compressed chunk payloads: each holds rows of one table, at most ``chunk_bytes``."""
    out: list[bytes] = []
    for table, rows in dataset_parts(dataset):
        if not rows:
            continue
        out.extend(_split(table, rows, chunk_bytes))
    return out


def _split(table: str, rows: list[list[Any]], limit: int) -> list[bytes]:
    # Guess rows per chunk from a sample, then halve any chunk that is too big.
    sample = _pack(table, rows[:200])
    per = max(1, int(len(rows[:200]) * limit * 0.8 / max(1, len(sample))))
    per = min(per, MAX_CHUNK_ROWS)  # rows that compress well must not make a chunk too long
    out: list[bytes] = []
    stack = [rows[i : i + per] for i in range(0, len(rows), per)][::-1]
    while stack:
        group = stack.pop()
        data = _pack(table, group)
        if len(data) > limit and len(group) > 1:
            half = len(group) // 2
            stack.extend([group[half:], group[:half]])
            continue
        out.append(data)
    return out


def _pack(table: str, rows: list[list[Any]]) -> bytes:
    return zlib.compress(
        json.dumps({"table": table, "rows": rows}, separators=(",", ":")).encode(), 6
    )
