"""The operator's broker kit: `doorgw platform broker-config` files run by real brokers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from gateway.commands.cli import main
from gateway.tools.ports import free_port
from sim.broker import Broker, find_mosquitto
from sim.site import example_dataset


@contextlib.contextmanager
def _mosquitto(conf: Path, port: int) -> Iterator[None]:
    """Mosquitto on the kit's ``conf``, listening on ``port`` for the block."""
    proc = subprocess.Popen(
        [find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for _ in range(200):
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def _write(tmp_path: Path, *args: str) -> list[Path]:
    out = tmp_path / "kit"
    assert main(["platform", "broker-config", *args, "--out", str(out)]) == 0
    return sorted(out.iterdir())


def test_the_mosquitto_config_runs_and_keeps_each_gateway_to_its_own_topics(
    tmp_path: Path,
) -> None:
    pki = Broker(tmp_path / "pki", site="soho", gateways=["gw-1", "gw-2"])  # its CA and certs
    port = free_port()
    persist = tmp_path / "persist"
    persist.mkdir()
    # (both sites' gateways, named as their certificates are)
    files = _write(
        tmp_path,
        "--broker", "mosquitto",
        "--site", "soho=gw-1",
        "--site", "shoreditch=gw-2",
        "--ca-file", str(pki.ca_file),
        "--cert-file", str(pki.server_cert),
        "--key-file", str(pki.server_key),
        "--listen", "127.0.0.1",
        "--port", str(port),
        "--persistence", str(persist),
        "--acl-file", str(tmp_path / "kit" / "doorgw.acl"),
        *(["--run-as", "root"] if os.geteuid() == 0 else []),
    )  # fmt: skip
    assert [f.name for f in files] == ["doorgw.acl", "mosquitto.conf"]
    pki.port = port  # the clients below connect to the kit's broker

    async def go() -> None:
        async with (
            pki.client("cloud", "cloud") as cloud,
            pki.client("gw-1", "gw-1") as gw1,
        ):
            await cloud.subscribe("doorgw/v1/gw/+/events", qos=1)
            await gw1.subscribe("doorgw/v1/site/soho/delta", qos=1)
            await gw1.subscribe("doorgw/v1/site/shoreditch/delta", qos=1)  # another site's
            await gw1.subscribe("doorgw/v1/gw/gw-2/command", qos=1)  # another gateway's
            await gw1.publish("doorgw/v1/gw/gw-2/events", b"forged", qos=1)
            await gw1.publish("doorgw/v1/site/soho/delta", b"forged", qos=1)
            await gw1.publish("doorgw/v1/gw/gw-1/events", b"mine", qos=1)
            for topic in (
                "doorgw/v1/site/shoreditch/delta",
                "doorgw/v1/gw/gw-2/command",
                "doorgw/v1/site/soho/delta",
            ):
                await cloud.publish(topic, topic.encode(), qos=1)
            got: list[tuple[str, str, bytes]] = []

            async def read(name: str, client: aiomqtt.Client) -> None:
                async for m in client.messages:
                    payload = m.payload if isinstance(m.payload, bytes) else b""
                    got.append((name, str(m.topic), payload))

            readers = [asyncio.create_task(read(n, c)) for n, c in (("cloud", cloud), ("gw", gw1))]
            await asyncio.sleep(1.0)
            for r in readers:
                r.cancel()
            assert sorted(got) == [
                ("cloud", "doorgw/v1/gw/gw-1/events", b"mine"),
                ("gw", "doorgw/v1/site/soho/delta", b"doorgw/v1/site/soho/delta"),
            ]

    with _mosquitto(tmp_path / "kit" / "mosquitto.conf", port):
        asyncio.run(asyncio.wait_for(go(), 60))


def test_the_fleet_runs_on_a_broker_someone_else_runs_from_the_kit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An operator's broker: the development CA, the kit's config for the
    # example site's fleet gateways, then `doorgw sim fleet --urls`.
    ca = tmp_path / "devca"
    ca.mkdir()
    assert main(["provision", "dev-ca", "--out", str(ca)]) == 0
    port, persist = free_port(), tmp_path / "persist"
    persist.mkdir()
    site = example_dataset()["site"]["id"]
    _write(
        tmp_path,
        "--broker", "mosquitto",
        "--site", f"{site}=gw-0001,gw-0002",
        "--ca-file", str(ca / "ca.pem"),
        "--cert-file", str(ca / "broker.pem"),
        "--key-file", str(ca / "broker.key"),
        "--listen", "127.0.0.1",
        "--port", str(port),
        "--persistence", str(persist),
        "--acl-file", str(tmp_path / "kit" / "doorgw.acl"),
        *(["--run-as", "root"] if os.geteuid() == 0 else []),
    )  # fmt: skip
    capsys.readouterr()
    with _mosquitto(tmp_path / "kit" / "mosquitto.conf", port):
        args = ["sim", "fleet", "--urls", f"mqtts://127.0.0.1:{port}", "--ca-dir", str(ca)]
        args += ["--gateways", "2", "--deltas", "2", "--idle", "1", "--dir", str(tmp_path / "f")]
        assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["broker"], data["broker_rss_mb"]) == ("external", None)
    assert data["all_p50_ms"] > 0
    assert data["floor_all_p50_ms"] > 0
    assert list((tmp_path / "f").rglob("ca.key")) == []  # the CA's key is not copied


def test_the_fleet_needs_the_ca_an_outside_broker_trusts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim", "fleet", "--urls", "mqtts://127.0.0.1:1"]) == 2
    assert "--urls needs --ca-dir" in capsys.readouterr().err
    args = ["sim", "fleet", "--urls", "mqtts://127.0.0.1:1", "--ca-dir", str(tmp_path)]
    assert main(args) == 2
    assert "holds no CA" in capsys.readouterr().err


NODES = ("--node", "a=h1", "--node", "b=h2", "--node", "c=h3")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "nats", "--site", "s=gw.1", *NODES], "cannot be used on NATS"),
        (["--broker", "nats", "--site", "s=gw-1", "--node", "a=h1"], "three times or more"),
        (["--broker", "mosquitto", "--site", "s=gw-1", "--site", "s=gw-2"], "given twice"),
        (["--broker", "mosquitto", "--site", "s=gw-1,gw-1"], "named twice"),
        (["--broker", "mosquitto", "--site", "s=gw-1", "--platform-user", "a b"], "valid id"),
        (["--broker", "nats", "--site", "s=gw-1", *NODES[:4], "--node", "a=h3"], "own NAME"),
    ],
)  # fmt: skip
def test_a_fleet_the_kit_cannot_serve_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["platform", "broker-config", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing half written


def test_bad_arguments_and_an_unwritable_place_are_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("")
    args = ["platform", "broker-config", "--broker", "mosquitto", "--site", "s=gw-1"]
    assert main([*args, "--out", str(taken)]) == 2
    assert "cannot write into" in capsys.readouterr().err
    for bad in (["--prefix", "doorgw/#"], ["--node", "a=h 1"], ["--port", "0"]):
        with pytest.raises(SystemExit) as exit_:
            main([*args, *bad, "--out", str(tmp_path / "kit")])
        assert exit_.value.code == 2
        assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "kit").exists()
