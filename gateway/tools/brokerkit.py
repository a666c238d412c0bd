"""Broker configurations for a fleet of gateways: Mosquitto, or a NATS JetStream cluster.

Both give every gateway exactly the topics docs/protocol.md says it may
use (its own ``gw/GW/...`` topics and its site's), identify clients by
their certificate's common name, refuse packets larger than the gateway
accepts, and keep sessions across restarts.  ``doorgw platform
broker-config`` writes them; the test suite runs its brokers on them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.jws import MAX_TOKEN_BYTES
from gateway.errors import UsageError
from gateway.wire.protocol import Topics

#: The largest packet a broker should pass: the gateway's message limit plus
#: room for the topic and the packet header (docs/protocol.md, "Transport").
MAX_PACKET_BYTES = MAX_TOKEN_BYTES + 256
#: What the platform's own certificate names, unless told otherwise.
PLATFORM_USER = "cloud"

#: Characters a NATS subject token cannot hold; MQTT topics become subjects.
_NATS_UNSAFE = re.compile(r"[.\s*>]")


@dataclass(frozen=True)
class Fleet:
    """Who uses the broker: each site's gateways, and the platform."""

    #: site id -> its gateway ids (each one's certificate common name).
    sites: Mapping[str, Sequence[str]]
    prefix: str = "doorgw/v1"
    #: The common name of the platform's client certificate.
    platform: str = PLATFORM_USER

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for site, gateways in self.sites.items():
            if not gateways:
                raise UsageError(f"site {site!r} has no gateways")
            for gw in gateways:
                if gw in seen or gw == self.platform:
                    raise UsageError(f"{gw!r} is named twice: every client needs its own name")
                seen.add(gw)

    def gateways(self) -> list[tuple[str, str]]:
        """(site, gateway) for every gateway, in the order given."""
        return [(site, gw) for site, gws in self.sites.items() for gw in gws]

    def reads(self, site: str, gateway: str) -> list[str]:
        """The MQTT topics a gateway may subscribe to."""
        return Topics(self.prefix, site, gateway).inbound()

    def writes(self, site: str, gateway: str) -> list[str]:
        """The MQTT topics a gateway may publish to (its status is also its will)."""
        t = Topics(self.prefix, site, gateway)
        return [t.events, t.heartbeat, t.resync, t.status]


@dataclass(frozen=True)
class Tls:
    """The broker's TLS files: the CA that signs every client, its own key and certificate."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def mosquitto_config(
    fleet: Fleet,
    tls: Tls,
    *,
    acl_file: Path,
    persistence: Path,
    listen: str = "0.0.0.0",  # noqa: S104 - a broker serves the site network
    port: int = 8883,
    max_queued: int = 1000,
    log_file: Path | None = None,
    run_as: str | None = None,
) -> dict[str, str]:
    """``mosquitto.conf`` and its ACL file (``acl_file``'s name) for Mosquitto 2.

    One listener with mutual TLS, the certificate's common name as the
    user name, no anonymous clients, the per-client ACL, persistence.
    """
    conf = [
        "# doorgw: Mosquitto 2 for the gateways of " + ", ".join(fleet.sites),
        *([f"user {run_as}"] if run_as else []),
        "per_listener_settings false",
        "# Small messages (revocations) must not wait behind others (Nagle).",
        "set_tcp_nodelay true",
        "persistence true",
        f"persistence_location {persistence}/",
        "autosave_interval 60",
        f"max_queued_messages {max_queued}",
        "# Nobody may make a gateway read more than it accepts (docs/protocol.md).",
        f"max_packet_size {MAX_PACKET_BYTES}",
        "allow_anonymous false",
        f"acl_file {acl_file}",
        *(
            [f"log_dest file {log_file}"]
            + [f"log_type {t}" for t in ("error", "warning", "notice")]
            if log_file
            else []
        ),
        f"listener {port} {listen}",
        f"cafile {tls.ca_file}",
        f"certfile {tls.cert_file}",
        f"keyfile {tls.key_file}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    acl = [
        "# doorgw: what each client may use (docs/protocol.md, Topics).",
        f"user {fleet.platform}",
        f"topic readwrite {fleet.prefix}/#",
    ]
    for site, gw in fleet.gateways():
        acl += ["", f"user {gw}"]
        acl += [f"topic read {t}" for t in fleet.reads(site, gw)]
        acl += [f"topic write {t}" for t in fleet.writes(site, gw)]
    return {"mosquitto.conf": "\n".join(conf) + "\n", acl_file.name: "\n".join(acl) + "\n"}


@dataclass(frozen=True)
class NatsNode:
    """One server of a NATS cluster: its name, where it listens, where it stores."""

    name: str
    host: str
    mqtt_port: int
    cluster_port: int
    store_dir: Path
    #: The NATS protocol port; the gateways never use it (MQTT only).
    client_port: int = 4222
    #: The address the other nodes reach this one's cluster port at.
    route_host: str = field(default="")


def gateway_subject(site: str, gateway: str) -> str:
    """A gateway certificate's subject as NATS names the user it maps to: the
    ``CN=<gateway id>, OU=<site id>`` that ``doorgw provision`` asks for."""
    return f"OU={site},CN={gateway}"


def _subject(topic: str) -> str:
    """The NATS subject of an MQTT topic filter: ``/`` -> ``.``, ``+`` -> ``*``, ``#`` -> ``>``."""
    return ".".join({"+": "*", "#": ">"}.get(level, level) for level in topic.split("/"))


def nats_cluster_config(
    fleet: Fleet, tls: Tls, nodes: Sequence[NatsNode], *, cluster: str = "doorgw"
) -> dict[str, str]:
    """One config file per node (``NAME.conf``) of a NATS JetStream cluster with MQTT.

    Clients are MQTT only, identified by their certificate's subject
    (:func:`gateway_subject`, ``verify_and_map``); each may use its topics as on
    Mosquitto; the MQTT streams keep ``len(nodes)`` replicas (3 for three
    nodes), so a node can die without losing a session or a message.
    """
    if len(nodes) < 3:
        raise UsageError("a NATS JetStream cluster needs at least 3 nodes to survive one")
    for name in [fleet.prefix, *(gw for _, gw in fleet.gateways()), *fleet.sites]:
        for part in name.split("/"):
            if _NATS_UNSAFE.search(part):
                raise UsageError(
                    f"{name!r} cannot be used on NATS: its topics become subjects, "
                    "which cannot hold '.', '*', '>' or spaces"
                )

    def user(subject: str, publish: list[str], subscribe: list[str]) -> dict[str, object]:
        return {
            "user": subject,
            "permissions": {
                "publish": {"allow": [_subject(t) for t in publish]},
                # NATS delivers QoS 1 subscriptions through these subjects.
                "subscribe": {"allow": [_subject(t) for t in subscribe] + ["$MQTT.sub.>"]},
            },
            "allowed_connection_types": ["MQTT"],
        }

    everything = [f"{fleet.prefix}/#"]
    users = [user(f"CN={fleet.platform}", everything, everything)]
    users += [
        user(gateway_subject(s, gw), fleet.writes(s, gw), fleet.reads(s, gw))
        for s, gw in fleet.gateways()
    ]
    accounts = {"DOORGW": {"jetstream": "enabled", "users": users}}
    out: dict[str, str] = {}
    for node in nodes:
        routes = [
            f"nats-route://{other.route_host or other.host}:{other.cluster_port}"
            for other in nodes
            if other is not node
        ]
        conf = {
            "server_name": node.name,
            "host": node.host,
            "port": node.client_port,
            # For NATS-protocol clients; nats-server 2.9 does not apply it to MQTT.
            "max_payload": MAX_PACKET_BYTES,
            "jetstream": {"store_dir": str(node.store_dir)},
            "cluster": {
                "name": cluster,
                "host": node.host,
                "port": node.cluster_port,
                "routes": routes,
            },
            "mqtt": {
                "host": node.host,
                "port": node.mqtt_port,
                "stream_replicas": len(nodes),
                "tls": {
                    "ca_file": str(tls.ca_file),
                    "cert_file": str(tls.cert_file),
                    "key_file": str(tls.key_file),
                    "verify_and_map": True,
                    "timeout": 5,
                },
            },
            "accounts": accounts,
        }
        # NATS reads JSON as its config syntax.
        out[f"{node.name}.conf"] = (
            f"# doorgw: NATS node {node.name} of cluster {cluster}\n"
            + json.dumps(conf, indent=2)
            + "\n"
        )
    return out
