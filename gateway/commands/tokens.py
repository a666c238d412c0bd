"""``doorgw token add | list | remove``: staff API tokens, shown once, stored as hashes."""

from __future__ import annotations

import argparse
import sys

from gateway.clock import Clock
from gateway.commands.common import Groups, add_config
from gateway.config.models import load_config
from gateway.core.localtime import to_iso


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``token``."""
    p = sub.add_parser("token", help="staff API tokens: add (shown once), list, remove")
    tokens = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    with_config = argparse.ArgumentParser(add_help=False)
    add_config(with_config)
    t = tokens.add_parser(
        "add", parents=[with_config], help="make a token; it is printed once and stored as a hash"
    )
    t.add_argument("name", help="who or what holds it, e.g. front-desk or alice")
    tokens.add_parser("list", parents=[with_config], help="the tokens' names and ages")
    t = tokens.add_parser("remove", parents=[with_config], help="revoke a token")
    t.add_argument("name")

    p.set_defaults(handler=token)


def token(args: argparse.Namespace, clock: Clock) -> int:
    from gateway.net.staff_tokens import TokenStore

    store = TokenStore(load_config(args.config).tokens_path)
    if args.token_command == "add":
        token = store.add(args.name, int(clock.now().timestamp()))
        print(token)
        print(
            f"# token {args.name!r} saved (as a hash) in {store.path}; "
            "this is the only time it is shown",
            file=sys.stderr,
        )
    elif args.token_command == "remove":
        store.remove(args.name)
        print(f"token {args.name!r} removed")
    else:
        for entry in store.tokens():
            print(f"{entry.name}\tmade {to_iso(entry.created)}")
    return 0
