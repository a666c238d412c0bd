"""``doorgw platform broker-config``: broker configurations for a fleet of gateways."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from gateway.clock import Clock
from gateway.commands.common import Groups, add_config, positive_int
from gateway.errors import UsageError

#: A site or gateway id, as the protocol allows it (docs/model.md).
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def _site(text: str) -> tuple[str, list[str]]:
    site, sep, gateways = text.partition("=")
    names = [g.strip() for g in gateways.split(",") if g.strip()]
    if not sep or not names:
        raise argparse.ArgumentTypeError(f"{text!r} is not SITE=GATEWAY[,GATEWAY...]")
    for name in [site, *names]:
        if not _ID.match(name):
            raise argparse.ArgumentTypeError(f"{name!r} is not a valid site or gateway id")
    return site, names


def _node(text: str) -> tuple[str, str]:
    name, sep, host = text.partition("=")
    if (
        not sep
        or not re.match(r"^[A-Za-z0-9_-]{1,64}$", name)
        or not re.match(r"^[A-Za-z0-9.:-]{1,253}$", host)
    ):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=HOST (e.g. n1=10.0.0.11)")
    return name, host


def _prefix(text: str) -> str:
    """A topic prefix as the gateways' ``[mqtt] topic_prefix`` allows it."""
    if not re.match(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a topic prefix: levels of letters, digits, _ and -, "
            "split by / (no wildcards)"
        )
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``platform broker-config``."""
    p = sub.add_parser("platform", help="what the platform side needs: broker configurations")
    cmds = p.add_subparsers(dest="platform_command", required=True, metavar="COMMAND")
    b = cmds.add_parser(
        "broker-config",
        help="write Mosquitto or NATS cluster configs for a fleet's gateways",
        description=(
            "Write a broker's configuration for the gateways named (docs/brokers.md): "
            "mutual TLS with the certificate's common name as identity, each gateway "
            "limited to its own topics and its site's, the message size limit, persistence."
        ),
    )
    b.add_argument("--broker", choices=("mosquitto", "nats"), required=True)
    b.add_argument(
        "--site",
        type=_site,
        action="append",
        required=True,
        metavar="SITE=GW[,GW...]",
        help="a site and its gateways' ids (repeat for each site)",
    )
    b.add_argument("--out", type=Path, required=True, metavar="DIR")
    b.add_argument(
        "--platform-user",
        default="cloud",
        help="the common name of the platform's client certificate (default: cloud, as "
        "`doorgw provision dev-ca` issues it)",
    )
    b.add_argument(
        "--prefix", type=_prefix, default="doorgw/v1", help="[mqtt] topic_prefix of the gateways"
    )
    b.add_argument("--ca-file", type=Path, help="on the broker host: the CA of every client")
    b.add_argument("--cert-file", type=Path, help="on the broker host: its certificate")
    b.add_argument("--key-file", type=Path, help="on the broker host: its key")
    b.add_argument("--listen", default="0.0.0.0", help="Mosquitto: address (default 0.0.0.0)")  # noqa: S104
    b.add_argument("--port", type=positive_int(65535), default=8883, help="MQTT port (8883)")
    b.add_argument("--persistence", type=Path, default=Path("/var/lib/mosquitto"))
    b.add_argument(
        "--acl-file",
        type=Path,
        default=Path("/etc/mosquitto/doorgw.acl"),
        help="Mosquitto: where the ACL file will be (default /etc/mosquitto/doorgw.acl)",
    )
    b.add_argument("--max-queued", type=positive_int(10_000_000), default=1000)
    b.add_argument(
        "--run-as",
        metavar="USER",
        help="Mosquitto: the user to run as (default: Mosquitto's own, 'mosquitto')",
    )
    b.add_argument(
        "--node",
        type=_node,
        action="append",
        metavar="NAME=HOST",
        help="NATS: a cluster node (3 or more)",
    )
    b.add_argument("--cluster-port", type=positive_int(65535), default=6222)
    b.add_argument("--store-dir", type=Path, default=Path("/var/lib/nats"))
    b.set_defaults(handler=broker_config)
    c = cmds.add_parser(
        "conformance",
        help="check the platform against the sync contract, point by point",
        description=(
            "Run a gateway with the identity of --config (its certificates, broker URLs and "
            "pinned platform keys; no hardware, its own state directory) against the "
            "platform, and report each point of docs/protocol.md it checks as pass or fail. "
            "Exit status 0 when every point passes, 1 when one fails."
        ),
    )
    add_config(c)
    c.add_argument(
        "--state-dir",
        type=Path,
        default=Path("doorgw-conformance"),
        help="where the conformance gateway keeps its files between runs "
        "(default ./doorgw-conformance; keep it: its event numbers go on from it)",
    )
    c.add_argument(
        "--timeout",
        type=positive_int(3600),
        default=60,
        metavar="SECONDS",
        help="how long each answer may take (60)",
    )
    c.add_argument(
        "--beacon-wait",
        type=positive_int(3600),
        default=90,
        metavar="SECONDS",
        help="how long to wait for a beacon (90: the docs ask for one every 30-60 s)",
    )
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(handler=conformance)


def broker_config(args: argparse.Namespace, clock: Clock) -> int:
    """Write the files into ``--out``, one path a line."""
    from gateway.tools.brokerkit import (
        Fleet,
        NatsNode,
        Tls,
        mosquitto_config,
        nats_cluster_config,
    )

    sites: dict[str, list[str]] = {}
    for site, gateways in args.site:
        if site in sites:
            raise UsageError(f"site {site!r} is given twice")
        sites[site] = gateways
    if not _ID.match(args.platform_user):
        raise UsageError(f"--platform-user {args.platform_user!r} is not a valid id")
    fleet = Fleet(sites, prefix=args.prefix, platform=args.platform_user)
    home = Path("/etc/mosquitto/certs" if args.broker == "mosquitto" else "/etc/nats/certs")
    tls = Tls(
        args.ca_file or home / "ca.crt",
        args.cert_file or home / "server.crt",
        args.key_file or home / "server.key",
    )
    if args.broker == "mosquitto":
        files = mosquitto_config(
            fleet,
            tls,
            acl_file=args.acl_file,
            persistence=args.persistence,
            listen=args.listen,
            port=args.port,
            max_queued=args.max_queued,
            run_as=args.run_as,
        )
    else:
        if not args.node or len(args.node) < 3:
            raise UsageError("a NATS cluster needs --node NAME=HOST three times or more")
        if len({name for name, _ in args.node}) < len(args.node):
            raise UsageError("every --node needs its own NAME")
        nodes = [
            NatsNode(name, host, args.port, args.cluster_port, args.store_dir / name)
            for name, host in args.node
        ]
        files = nats_cluster_config(fleet, tls, nodes)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (args.out / name).write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write into {args.out}: {exc.strerror or exc}") from None
    for name in files:
        print(args.out / name)
    return 0


def conformance(args: argparse.Namespace, clock: Clock) -> int:
    """Run every point; print a line each (or one JSON object)."""
    import asyncio
    import json
    import sys

    from gateway.config.models import load_config
    from gateway.tools.conformance import Conformance

    config = load_config(args.config)

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr, flush=True)

    run = Conformance(
        config,
        clock,
        args.state_dir,
        timeout=args.timeout,
        beacon_wait=args.beacon_wait,
        say=say,
    )
    points = asyncio.run(run.run())
    passed = all(p.passed for p in points)
    if args.json:
        print(
            json.dumps(
                {
                    "passed": passed,
                    "points": [
                        {
                            "key": p.key,
                            "passed": p.passed,
                            "what": p.title,
                            "docs": p.ref,
                            "detail": p.detail,
                        }
                        for p in points
                    ],
                }
            )
        )
    else:
        for p in points:
            print(f"{'PASS' if p.passed else 'FAIL'}  {p.key:<9} {p.title}: {p.detail}")
        print(f"{sum(bool(p.passed) for p in points)} of {len(points)} points pass")
    return 0 if passed else 1
