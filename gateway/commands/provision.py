"""``doorgw provision init | enroll | rotate-keys | dev-ca | dev-bundle``."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from gateway.commands.common import Groups


def register(sub: Any, groups: Groups) -> None:
    """The ``doorgw provision`` subcommands."""
    from gateway.config.models import DEFAULT_CONFIG_PATH

    etc = DEFAULT_CONFIG_PATH.parent
    p = sub.add_parser("provision", help="set up a gateway: init, enroll, rotate keys")
    p.set_defaults(handler=lambda args, clock: run(args, clock.now()))
    cmds = p.add_subparsers(dest="provision_command", required=True, metavar="STEP")
    i = cmds.add_parser(
        "init",
        help="make the gateway's key and CSR, a config from a board profile, the first token",
    )
    i.add_argument("--gateway-id", required=True)
    i.add_argument("--site", required=True, help="site id")
    i.add_argument("--board", required=True, help="board profile, e.g. rpi4-relay-hat-2ch")
    i.add_argument("--door", default="front", help="the door this gateway drives (default front)")
    i.add_argument("--dir", type=Path, default=etc, help=f"configuration directory ({etc})")
    i.add_argument("--data-dir", type=Path, default=Path("/var/lib/doorgw"))
    e = cmds.add_parser("enroll", help="install the platform's answer to the CSR, all or nothing")
    e.add_argument("bundle", type=Path, metavar="BUNDLE")
    e.add_argument("--dir", type=Path, default=etc)
    e.add_argument(
        "--no-broker-check",
        action="store_true",
        help="install without first connecting to the broker (offline installs)",
    )
    r = cmds.add_parser("rotate-keys", help="pin a new platform key set signed by a pinned key")
    r.add_argument("rotation", type=Path, metavar="FILE", help="a JWS from the platform")
    r.add_argument("--dir", type=Path, default=etc)
    c = cmds.add_parser("dev-ca", help="a development CA with broker and cloud certificates")
    c.add_argument("--out", type=Path, required=True)
    b = cmds.add_parser("dev-bundle", help="sign a CSR with the development CA into a bundle")
    b.add_argument("--ca-dir", type=Path, required=True)
    b.add_argument("--csr", type=Path, required=True)
    b.add_argument("--site", required=True)
    b.add_argument("--broker", action="append", required=True, metavar="URL")
    b.add_argument("--keys", type=Path, required=True, help="the platform's JWKS")
    b.add_argument("--out", type=Path, required=True)


def run(args: Any, now: dt.datetime) -> int:
    """Carry out one provisioning step; a file system error is one clear line too."""
    # Imported here: the PKI (cryptography's x509) would otherwise load into every
    # ``doorgw`` process, the daemon's included (1.4 MB it never uses).
    from gateway.tools.provision import ProvisionError

    try:
        return _run(args, now)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise ProvisionError(
            f"{where}{exc.strerror or exc}; nothing was switched, the previous "
            "configuration is still the one in use"
        ) from None


def _run(args: Any, now: dt.datetime) -> int:
    import asyncio

    from gateway.tools.provision import (
        FIRST_TOKEN,
        ProvisionError,
        dev_bundle,
        dev_ca,
        enroll,
        init,
        load_ca,
        rotate_keys,
        verify_broker,
    )

    # Relative paths are taken from where the command was run, before anything
    # is staged: the config written holds absolute ones, and a relative data
    # directory must not end up inside the release being staged.
    for name in ("dir", "data_dir", "bundle", "rotation"):
        if getattr(args, name, None) is not None:
            setattr(args, name, Path(os.path.abspath(getattr(args, name))))
    step = args.provision_command
    if step == "init":
        result = init(
            args.dir,
            gateway_id=args.gateway_id,
            site_id=args.site,
            board=args.board,
            data_dir=args.data_dir,
            door=args.door,
            now=int(now.timestamp()),
        )
        print(f"gateway key:  {result.key} (0600, stays here)")
        print(f"CSR:          {result.csr} (send it to the platform)")
        print(f"config:       {result.config}")
        print(f"staff token {FIRST_TOKEN!r} (shown once, stored only as a hash):")
        print(result.token)
    elif step == "enroll":
        verify = None if args.no_broker_check else verify_broker
        release = asyncio.run(enroll(args.dir, args.bundle, verify=verify, now=now))
        print(f"enrolled: {args.dir / 'current'} -> {release}")
        print("restart the service to use it: systemctl restart doorgw")
    elif step == "rotate-keys":
        release = rotate_keys(args.dir, args.rotation)
        print(f"new pinned keys in {release}; restart the service: systemctl restart doorgw")
    elif step == "dev-ca":
        for name, path in dev_ca(args.out).items():
            print(f"{name}: {path}")
    else:
        try:
            keys = json.loads(args.keys.read_bytes())
            csr = args.csr.read_bytes()
        except OSError as exc:
            raise ProvisionError(f"cannot read: {exc}") from None
        except ValueError as exc:
            raise ProvisionError(f"{args.keys}: not JSON: {exc}") from None
        bundle = dev_bundle(
            load_ca(args.ca_dir), csr, site_id=args.site, broker_urls=args.broker, signing_keys=keys
        )
        args.out.write_text(json.dumps(bundle, indent=1) + "\n")
        print(f"bundle for {bundle['gateway_id']}: {args.out}")
    return 0
