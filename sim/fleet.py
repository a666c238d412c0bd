"""``doorgw sim fleet``: N gateways of one site against one broker.

Each gateway is its own process, as each is its own Pi: the real daemon
(``sim.fleet_proc gateway``) with a door on mock pins and a QR scanner on a
pty, its own cache and outbox files, connected with its own certificate to
one Mosquitto.  The platform stand-in in this process publishes deltas to
the site and times how long until every gateway has applied each one, as
the platform sees it: a gateway's ``delta_applied`` event arriving back.

The floor is the same path with the gateway's work taken out: N bare MQTT
client processes with the gateways' identities that answer each delta with
its version.  Memory and CPU are read from ``/proc`` for every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config.models import DoorConfig, ScannerReaderConfig, TimeSection
from gateway.config.write import config_with, write_config
from gateway.net.mqtt import CONNECT_TIMEOUT
from gateway.tools.sitegen import rank
from sim.broker import Broker, ExternalBroker
from sim.cloud import CloudPeer
from sim.fleet_failover import kill_node
from sim.fleet_proc import DOOR_PINS, child_options
from sim.nats_cluster import NatsCluster
from sim.scanner import SimulatedScanner
from sim.site import example_dataset

_TICK = os.sysconf("SC_CLK_TCK")
#: Seconds between the platform stand-in's beacons during a run.
BEACON_EVERY = 10.0


@dataclass
class _Phase:
    """What one set of N processes did."""

    kind: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)
    #: version -> gateway -> perf_counter() when its answer arrived.
    arrivals: dict[int, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    #: gateway -> the highest dataset version it reported (delta or snapshot).
    versions: dict[str, int] = field(default_factory=dict)
    #: gateway -> perf_counter() of its latest ``online`` presence.
    online: dict[str, float] = field(default_factory=dict)
    #: gateway -> seq -> how many times the platform received that event.
    seqs: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    #: gateway -> how many ``delta_gap`` / ``snapshot_applied`` events it sent.
    gaps: Counter[str] = field(default_factory=Counter)
    snapshots: Counter[str] = field(default_factory=Counter)


def _cpu_seconds(pid: int) -> float:
    user, system = _cpu_split(pid)
    return user + system


def _cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def _memory_kb(pid: int) -> tuple[int, int]:
    """Resident and proportional set sizes (shared pages split among their users)."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0])
    return values["Rss"], values["Pss"]


def _gateway_config(
    broker: Broker, name: str, directory: Path, scanner: Path, urls: list[str], **mqtt: Any
) -> Path:
    lock, contact, green, red = DOOR_PINS
    settings = config_with(
        broker.gateway_settings(name, directory, urls=urls, **mqtt),
        doors=(
            DoorConfig(
                id="front", lock_pin=lock, contact_pin=contact, green_led_pin=green, red_led_pin=red
            ),
        ),
        readers=(
            ScannerReaderConfig(id="qr-front", door="front", kind="scanner", port=str(scanner)),
        ),
        time=TimeSection(use_ntp=False),
    )
    return write_config(settings, directory / "doorgw.toml")


class Fleet:
    """One broker (or a NATS cluster), the platform stand-in, and N gateway (then N
    floor) processes."""

    def __init__(
        self,
        gateways: int,
        directory: Path,
        *,
        deltas: int,
        idle_seconds: float,
        cluster: str | None = None,
        kill_node: bool = False,
        connect_timeout: float | None = None,
        urls: list[str] | None = None,
        ca_dir: Path | None = None,
    ):
        self.n = gateways
        #: A broker someone else runs (with ``ca_dir``, the CA it trusts), or None.
        self.urls, self.ca_dir = urls, ca_dir
        #: The gateways' ``[mqtt]`` settings beyond the defaults.
        self.mqtt = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
        self.cluster = cluster
        self.kill_node = kill_node
        self.dir = directory
        self.deltas = deltas
        self.idle_seconds = idle_seconds
        self.dataset = example_dataset()
        self.site = self.dataset["site"]["id"]
        self.names = [f"gw-{i:04d}" for i in range(1, gateways + 1)]
        self.phase = _Phase("none")
        self.progress: Any = None

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def _observe(self, gateway: str, leaf: str, body: Any) -> None:
        now = time.perf_counter()
        phase = self.phase
        if not isinstance(body, dict):
            return
        if leaf == "status" and body.get("state") == "online":
            phase.online[gateway] = now
        if phase.kind == "gateway" and leaf == "events":
            for event in body.get("events", []):
                kind, data = event.get("type"), event.get("data", {})
                phase.seqs[gateway][int(event.get("seq", 0))] += 1
                if kind == "snapshot_applied":
                    phase.ready.setdefault(gateway, now)
                    phase.snapshots[gateway] += 1
                    self._reached(gateway, int(data["now_version"]))
                elif kind == "delta_applied":
                    phase.arrivals[int(data["version"])].setdefault(gateway, now)
                    self._reached(gateway, int(data["version"]))
                elif kind == "delta_gap":
                    phase.gaps[gateway] += 1
        elif phase.kind == "echo" and leaf == "heartbeat":
            if body.get("ready"):
                phase.ready.setdefault(gateway, now)
            elif "echo" in body:
                phase.arrivals[int(body["echo"])].setdefault(gateway, now)

    def _reached(self, gateway: str, version: int) -> None:
        versions = self.phase.versions
        before = versions.get(gateway, 0)
        versions[gateway] = max(before, version)
        if before:
            # A delta lost on the way and recovered by a resync counts as reached
            # when the snapshot that carried it applied (its arrival, if late).
            now = time.perf_counter()
            for v in range(before + 1, version + 1):
                self.phase.arrivals[v].setdefault(gateway, now)

    async def run(self) -> dict[str, Any]:
        """Both phases; the figures."""
        _raise_fd_limit()
        # SIGTERM stops the benchmark as Ctrl-C does: its processes are stopped too.
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        self._say(f"certificates for {self.n} gateways ...")
        broker: Broker
        if self.urls and self.ca_dir is not None:
            self._say(f"on the broker at {', '.join(self.urls)} ...")
            broker = ExternalBroker(
                self.dir / "broker",
                site=self.site,
                gateways=self.names,
                urls=self.urls,
                ca_dir=self.ca_dir,
            )
        elif self.cluster == "nats":
            self._say("starting a 3-node NATS JetStream cluster ...")
            broker = NatsCluster(self.dir / "broker", site=self.site, gateways=self.names)
        else:
            broker = Broker(
                self.dir / "broker", site=self.site, gateways=self.names, max_queued=10_000
            )
        await asyncio.to_thread(broker.start)
        cloud = broker.cloud_peer(self.dataset)
        cloud.observer = self._observe
        # As a platform does (docs/protocol.md, beacon): a delta a broker lost is
        # then found missing, and a resync brings it, instead of a wait for ever.
        cloud.beacon_every = BEACON_EVERY
        cloud_task = asyncio.create_task(cloud.run(), name="cloud")
        try:
            await asyncio.wait_for(cloud.connected.wait(), 30)
            result: dict[str, Any] = {
                "gateways": self.n,
                "deltas": self.deltas,
                "broker": "external" if self.urls else self.cluster or "mosquitto",
                "connect_timeout": self.mqtt.get("connect_timeout", CONNECT_TIMEOUT),
            }
            # The floor first: a node kill comes last, so the floor is never measured
            # on a cluster still settling after a node rejoined.
            floor = await self._measure("echo", broker, cloud)
            gw = await self._measure("gateway", broker, cloud)
            pids = broker.pids()  # none for a broker that is not ours
            broker_rss = sum(_memory_kb(pid)[0] for pid in pids) if pids else None
        finally:
            cloud_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cloud_task
            broker.stop()
        result.update({f"{k}": v for k, v in gw.items()})
        result.update({f"floor_{k}": v for k, v in floor.items()})
        result["broker_rss_mb"] = None if broker_rss is None else round(broker_rss / 1024, 1)
        result["all_ratio"] = round(gw["all_p50_ms"] / floor["all_p50_ms"], 2)
        result["each_p99_ratio"] = round(gw["each_p99_ms"] / floor["each_p99_ms"], 2)
        result["rss_ratio"] = round(gw["rss_mb"] / floor["rss_mb"], 2)
        return result

    async def _measure(self, kind: str, broker: Broker, cloud: CloudPeer) -> dict[str, Any]:
        phase = self.phase = _Phase(kind)
        scanners: list[SimulatedScanner] = []
        started = time.perf_counter()
        self._say(f"starting {self.n} {'gateways' if kind == 'gateway' else 'floor clients'} ...")
        try:
            phase.procs = self._launch(kind, broker, scanners)
            await self._until(
                lambda: len(phase.ready) == self.n, 120 + 3 * self.n, "every process to be ready"
            )
            start_s = time.perf_counter() - started
            self._say(f"all {self.n} ready in {start_s:.1f} s; idle for {self.idle_seconds:.0f} s")
            pids = {name: p.pid for name, p in phase.procs.items()}
            before = {n: _cpu_seconds(pid) for n, pid in pids.items()}
            await asyncio.sleep(self.idle_seconds)
            idle = [(_cpu_seconds(pid) - before[n]) / self.idle_seconds for n, pid in pids.items()]
            memory = [_memory_kb(pid) for pid in pids.values()]
            split = {n: _cpu_split(pid) for n, pid in pids.items()}
            all_ms, each_ms = await self._deltas(cloud, phase)
            after = {n: _cpu_split(pid) for n, pid in pids.items()}
            user = [(after[n][0] - split[n][0]) / self.deltas for n in pids]
            system = [(after[n][1] - split[n][1]) / self.deltas for n in pids]
            killed = None
            if kind == "gateway" and self.kill_node and isinstance(broker, NatsCluster):
                killed = await kill_node(self, cloud, broker, phase)
                self._say("the killed node starts again ...")
                await asyncio.to_thread(broker.start_node, killed["killed_node"])
                await asyncio.to_thread(broker.wait_serving)
        finally:
            await self._stop(phase)
            for scanner in scanners:
                scanner.unplug()
        each_ms.sort()
        return {
            "start_s": round(start_s, 1),
            "all_p50_ms": round(statistics.median(all_ms), 1),
            "all_max_ms": round(max(all_ms), 1),
            "each_p50_ms": round(statistics.median(each_ms), 1),
            "each_p99_ms": round(each_ms[rank(len(each_ms), 0.99)], 1),
            "rss_mb": round(statistics.mean(m[0] for m in memory) / 1024, 1),
            "pss_mb": round(statistics.mean(m[1] for m in memory) / 1024, 1),
            "idle_cpu_pct": round(100 * statistics.mean(idle), 3),
            "cpu_ms_per_delta": round(1000 * (statistics.mean(user) + statistics.mean(system)), 2),
            "cpu_system_ms_per_delta": round(1000 * statistics.mean(system), 2),
            **({"kill": killed} if killed else {}),
        }

    def _launch(
        self, kind: str, broker: Broker, scanners: list[SimulatedScanner]
    ) -> dict[str, subprocess.Popen[bytes]]:
        """Start N processes of ``kind`` (starting one does not wait for it)."""
        procs = {}
        urls = broker.urls
        for i, name in enumerate(self.names):
            # On a cluster, gateway i starts from node i mod 3 (and knows the others).
            mine = urls[i % len(urls) :] + urls[: i % len(urls)]
            if kind == "gateway":
                home = self.dir / name
                home.mkdir(parents=True, exist_ok=True)
                scanner = SimulatedScanner(home / "scanner")
                scanners.append(scanner)
                config = _gateway_config(broker, name, home, scanner.path, mine, **self.mqtt)
                args = ["gateway", str(config)]
            else:
                cert, key = broker.certs[name]
                where = urlsplit(mine[0])
                at = f"{where.hostname}:{where.port or 8883}"
                args = ["echo", at, str(broker.ca_file), str(cert), str(key), name, self.site]
            with (self.dir / f"{name}-{kind}.log").open("wb") as log:
                # Our own interpreter and module, with arguments this class made.
                procs[name] = subprocess.Popen(  # noqa: S603
                    [sys.executable, "-m", "sim.fleet_proc", *args],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    cwd=Path(__file__).resolve().parent.parent,
                    **child_options(),
                )
        return procs

    @staticmethod
    def booking(booking_id: str) -> dict[str, Any]:
        """A change for a delta: one paid booking upserted."""
        booking = {
            "id": booking_id,
            "member_id": "ada",
            "resource_id": "room-3",
            "start": "2026-12-01T09:00:00Z",
            "end": "2026-12-01T10:00:00Z",
            "payment": "paid",
            "grace_before_min": 10,
            "grace_after_min": 10,
        }
        return {"op": "upsert", "entity": "booking", "data": booking}

    async def _deltas(
        self, cloud: CloudPeer, phase: _Phase, *, count: int | None = None, tag: str = ""
    ) -> tuple[list[float], list[float]]:
        """Publish deltas one at a time; per delta, when the last and each gateway had it."""
        all_ms: list[float] = []
        each_ms: list[float] = []
        for k in range(self.deltas if count is None else count):
            t0 = time.perf_counter()
            version = await cloud.send_delta([self.booking(f"fleet-{phase.kind}{tag}-{k}")])
            got = phase.arrivals[version]
            await self._until(lambda got=got: len(got) == self.n, 120, f"delta {version}")
            each_ms.extend(1000 * (t - t0) for t in got.values())
            all_ms.append(1000 * (max(got.values()) - t0))
            await asyncio.sleep(0.2)
        return all_ms, each_ms

    async def _until(self, predicate: Any, seconds: float, what: str) -> None:
        deadline = time.perf_counter() + seconds
        checked = time.perf_counter()
        while not predicate():
            now = time.perf_counter()
            if now - checked > 1.0:  # a process that died will never answer: say so now
                checked = now
                dead = [n for n, p in self.phase.procs.items() if p.poll() is not None]
                if dead:
                    raise RuntimeError(
                        f"{len(dead)} {self.phase.kind} processes exited while waiting for "
                        f"{what}, first {dead[0]} (its log: {self.dir}/{dead[0]}-"
                        f"{self.phase.kind}.log)"
                    )
            if now > deadline:
                raise RuntimeError(f"gave up after {seconds:.0f} s waiting for {what}")
            await asyncio.sleep(0.001)

    async def _stop(self, phase: _Phase) -> None:
        for proc in phase.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(_reap, list(phase.procs.values()), 60.0)


def _reap(procs: list[subprocess.Popen[bytes]], seconds: float) -> None:
    """Wait for ``procs`` to exit, killing what is still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _raise_fd_limit() -> None:
    """Each gateway holds a pty here and a connection at the broker (which inherits this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_fleet(
    gateways: int,
    *,
    deltas: int = 20,
    idle_seconds: float = 10.0,
    directory: Path | None = None,
    progress: Any = None,
    cluster: str | None = None,
    kill_node: bool = False,
    connect_timeout: float | None = None,
    urls: list[str] | None = None,
    ca_dir: Path | None = None,
) -> dict[str, Any]:
    """Measure a fleet of ``gateways``; the figures as a dict."""
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="doorgw-fleet-"))
            )
        fleet = Fleet(
            gateways,
            directory,
            deltas=deltas,
            idle_seconds=idle_seconds,
            cluster=cluster,
            kill_node=kill_node,
            connect_timeout=connect_timeout,
            urls=urls,
            ca_dir=ca_dir,
        )
        fleet.progress = progress
        try:
            return asyncio.run(fleet.run())
        except asyncio.CancelledError:  # SIGTERM: every process is stopped by now
            raise KeyboardInterrupt from None


def fleet_command(args: Any) -> int:
    """``doorgw sim fleet``: print the figures (or one JSON object)."""
    from gateway.errors import DoorgwError, UsageError
    from sim.broker import find_mosquitto
    from sim.nats_cluster import find_nats_server

    if args.kill_node and args.cluster is None:
        raise UsageError("--kill-node needs --cluster nats: one Mosquitto has no node to spare")
    if bool(args.urls) != (args.ca_dir is not None) or (args.urls and args.cluster):
        raise UsageError(
            "--urls needs --ca-dir (the development CA the broker trusts), and no --cluster"
        )
    if args.ca_dir is not None and not (args.ca_dir / "ca.key").exists():
        raise UsageError(f"{args.ca_dir} holds no CA (doorgw provision dev-ca --out DIR)")
    try:
        if not args.urls:
            find_nats_server() if args.cluster == "nats" else find_mosquitto()
    except RuntimeError as exc:
        raise DoorgwError(f"sim fleet: {exc}") from None

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        r = run_fleet(
            args.gateways,
            deltas=args.deltas,
            idle_seconds=args.idle,
            directory=args.dir,
            progress=None if args.json else say,
            cluster=args.cluster,
            kill_node=args.kill_node,
            connect_timeout=args.connect_timeout,
            urls=args.urls,
            ca_dir=args.ca_dir,
        )
    except RuntimeError as exc:
        raise DoorgwError(f"sim fleet: {exc}") from None
    if args.json:
        print(json.dumps(r))
        return 0
    where = {
        "external": f"the broker at {', '.join(args.urls or [])}",
        "nats": "a 3-node NATS cluster",
    }.get(r["broker"], "one Mosquitto")
    rss = "not measured (not ours)" if r["broker_rss_mb"] is None else f"{r['broker_rss_mb']} MB"
    print(
        f"fleet        {r['gateways']} gateway processes (real daemon, mock pins, pty scanner), "
        f"{where}, {r['deltas']} deltas\n"
        f"start        all synced {r['start_s']} s after launch "
        f"(floor: all subscribed after {r['floor_start_s']} s)\n"
        f"delta reach  every gateway applied it (as the platform hears back): "
        f"p50 {r['all_p50_ms']} ms, max {r['all_max_ms']} ms\n"
        f"             floor (bare clients echoing): p50 {r['floor_all_p50_ms']} ms, "
        f"max {r['floor_all_max_ms']} ms; ratio {r['all_ratio']}\n"
        f"each         per gateway p50 {r['each_p50_ms']} ms, p99 {r['each_p99_ms']} ms; "
        f"floor p99 {r['floor_each_p99_ms']} ms; ratio {r['each_p99_ratio']}\n"
        f"memory       per gateway RSS {r['rss_mb']} MB (PSS {r['pss_mb']} MB); "
        f"floor RSS {r['floor_rss_mb']} MB (PSS {r['floor_pss_mb']} MB); ratio {r['rss_ratio']}\n"
        f"cpu          per gateway idle {r['idle_cpu_pct']} % of a core, "
        f"{r['cpu_ms_per_delta']} ms per delta ({r['cpu_system_ms_per_delta']} ms in the "
        f"kernel); floor idle {r['floor_idle_cpu_pct']} %, "
        f"{r['floor_cpu_ms_per_delta']} ms per delta\n"
        f"broker       RSS {rss}"
    )
    if "kill" in r:
        k = r["kill"]
        print(
            f"node kill    {k['killed_node']} under {k['gateways_on_node']} gateways: failover "
            f"p50 {k['failover_p50_s']} s, max {k['failover_max_s']} s; "
            f"all caught up after {k['all_caught_up_s']} s\n"
            f"             {k['deltas_during']} deltas meanwhile: {k['deltas_missed']} missed by "
            f"{k['gateways_that_missed']} gateways ({k['gap_resyncs']} gaps, "
            f"{k['snapshots_after_kill']} snapshots), {k['gateways_caught_up']} of "
            f"{r['gateways']} caught up\n"
            f"             reach after: p50 {k['after_p50_ms']} ms, max {k['after_max_ms']} ms; "
            f"events lost {k['events_lost']}, received twice {k['events_duplicated']}"
        )
    return 0
