"""``doorgw run``: the gateway daemon, as systemd runs it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from gateway.clock import Clock
from gateway.commands.common import Groups, add_config
from gateway.config.models import Config, load_config
from gateway.errors import ServiceFailedError, StopTimeoutError

log = logging.getLogger(__name__)


def run_daemon(config: Config, clock: Clock) -> int:
    """Run one gateway until SIGTERM or SIGINT; return the exit status."""

    # The daemon (GPIO, MQTT, HTTP) loads only for this command, not for every
    # doorgw command that merely lists it.
    from gateway.app.serve import serve

    async def main() -> int:
        try:
            await serve(config, clock)
        except ServiceFailedError as exc:
            # The services are stopped and the doors locked: systemd restarts us.
            log.error("%s; exiting for a restart", exc)
            return 1
        except StopTimeoutError as exc:
            # Like systemd's final SIGKILL, but with a report. Events are already
            # durable, and asyncio's own clean-up would wait for the stuck task
            # forever, so leave from here.
            log.error("%s", exc)
            logging.shutdown()
            os._exit(1)
        return 0

    # The process's logging is set up here, by the command, never by library code.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(main())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``run``."""
    p = sub.add_parser("run", help="run the gateway daemon")
    add_config(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace, clock: Clock) -> int:
    # What the daemon writes (cache, outbox, their WAL files, keys, state) is
    # for its own user only, however it was started: systemd's unit says
    # UMask=0077 too, a shell usually 0022.
    os.umask(0o077)
    return run_daemon(load_config(args.config), clock)
