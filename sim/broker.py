"""A real Mosquitto for tests, benchmarks and the simulator: mutual TLS, certificate
identities, a per-gateway ACL, persistence, restartable."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from gateway.config.models import Config, DoorConfig, GatewaySection, MqttSection, SyncSection
from gateway.config.write import write_config
from gateway.core.jws import Signer
from gateway.tools.brokerkit import Fleet, Tls, mosquitto_config
from gateway.tools.pki import Issued, issue, make_ca
from gateway.tools.ports import free_port

if TYPE_CHECKING:
    import aiomqtt

    from sim.cloud import CloudPeer

PREFIX = "doorgw/v1"


def find_mosquitto() -> str:
    """The mosquitto binary (Debian puts it in /usr/sbin, often not on PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError("mosquitto is not installed; .ci/run installs it with apt-get")
    return found


def platform_keys_file(directory: Path, signer: Signer) -> Path:
    """``directory/platform-keys.json``, the JWKS of ``signer``: written once,
    atomically, as gateways already running may read it while more are set up."""
    path = directory / "platform-keys.json"
    if not path.exists():
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps({"keys": [signer.public_jwk()]}))
        staging.replace(path)
    return path


class Broker:
    """One Mosquitto process on a free loopback port, restartable, with its PKI."""

    def __init__(
        self,
        directory: Path,
        *,
        site: str,
        gateways: list[str],
        max_queued: int = 1000,
        ca: Issued | None = None,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.site = site
        self.port = free_port()
        #: The broker's CA, which also signs what provisioning tests enroll.
        self.ca = ca or make_ca()
        if ca is None:
            _, self.ca_file = self.ca.write(self.dir, "ca")
        else:  # someone else's CA: its key stays where it is
            self.ca_file = self.dir / "ca.pem"
            self.ca_file.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
        self.server_key, self.server_cert = issue(
            self.ca, "localhost", server=True, hosts=("127.0.0.1", "localhost")
        ).write(self.dir, "server")
        self.certs: dict[str, tuple[Path, Path]] = {}
        # As `doorgw provision` asks for them: a gateway's is CN=<id>, OU=<site>.
        for name in ["cloud", *gateways]:
            unit = None if name == "cloud" else site
            key, cert = issue(self.ca, name, unit=unit).write(self.dir, name)
            self.certs[name] = (cert, key)
        self.signer = Signer.generate("platform-test")
        self.max_queued = max_queued
        self.gateways = list(gateways)
        self._write_conf()
        self._proc: subprocess.Popen[bytes] | None = None

    def fleet(self) -> Fleet:
        """Who uses this broker: the site's gateways and the platform (``cloud``)."""
        return Fleet({self.site: self.gateways}, prefix=PREFIX, platform="cloud")

    def tls(self) -> Tls:
        """The broker's own TLS files."""
        return Tls(self.ca_file, self.server_cert, self.server_key)

    def _write_conf(self) -> None:
        # The very configuration `doorgw platform broker-config` writes for an operator.
        persistence = self.dir / "persist"
        persistence.mkdir(exist_ok=True)
        files = mosquitto_config(
            self.fleet(),
            self.tls(),
            acl_file=self.dir / "acl",
            persistence=persistence,
            listen="127.0.0.1",
            port=self.port,
            max_queued=self.max_queued,
            log_file=self.dir / "mosquitto.log",
            # As root it would drop to 'mosquitto' and not read the 0600 keys.
            run_as="root" if os.geteuid() == 0 else None,
        )
        for name, text in files.items():
            (self.dir / name).write_text(text)
        self.conf = self.dir / "mosquitto.conf"

    def twin(self, directory: Path) -> Broker:
        """A second broker on its own port with this one's PKI, ACL and platform
        key (to a gateway, another node of the same service), not started."""
        other = copy.copy(self)
        other.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        other.port = free_port()
        other._proc = None
        other._write_conf()
        return other

    def start(self) -> None:
        # The command is our own fixed binary and a config file this class wrote.
        self._proc = subprocess.Popen(  # noqa: S603
            [find_mosquitto(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                log = self.dir / "mosquitto.log"
                raise RuntimeError(
                    f"mosquitto exited: {err} {log.read_text() if log.exists() else ''}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pids(self) -> list[int]:
        """The broker's running processes."""
        return [self._proc.pid] if self._proc is not None else []

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    @property
    def urls(self) -> list[str]:
        """Every URL of the broker service (one here)."""
        return [self.url]

    def cloud_peer(self, dataset: dict[str, Any], **kw: Any) -> CloudPeer:
        """A platform stand-in connected as ``cloud`` (signing with this broker's test key)."""
        from sim.cloud import CloudPeer

        cert, key = self.certs["cloud"]
        kw.setdefault("signer", self.signer)
        return CloudPeer(
            host="127.0.0.1",
            port=self.port,
            site_id=self.site,
            dataset=dataset,
            ca_file=self.ca_file,
            cert_file=cert,
            key_file=key,
            **kw,
        )

    def client(
        self, name: str, identifier: str, *, port: int | None = None, **kw: Any
    ) -> aiomqtt.Client:
        """An MQTT client on this broker (or ``port``) with ``name``'s certificate
        (not connected)."""
        import aiomqtt

        from gateway.net.mqtt import NO_DELAY, tls_context

        cert, key = self.certs[name]
        kw.setdefault("timeout", 30)
        kw.setdefault("socket_options", [NO_DELAY])
        return aiomqtt.Client(
            "127.0.0.1",
            port or self.port,
            identifier=identifier,
            tls_context=tls_context(self.ca_file, cert, key),
            **kw,
        )

    def keys_file(self) -> Path:
        """The platform's public keys, for the gateways' ``[sync] keys_file``."""
        return platform_keys_file(self.dir, self.signer)

    def gateway_settings(
        self, gateway: str, data_dir: Path, *, urls: list[str] | None = None, **mqtt: Any
    ) -> Config:
        """A complete config for ``gateway`` on this broker (or ``urls``), one door "front"."""
        cert, key = self.certs[gateway]
        return Config(
            gateway=GatewaySection(id=gateway, site_id=self.site, data_dir=data_dir),
            doors=(DoorConfig(id="front"),),
            mqtt=MqttSection(
                urls=tuple(urls or [self.url]),
                ca_file=self.ca_file,
                cert_file=cert,
                key_file=key,
                **{"reconnect_min": 0.05, "reconnect_max": 0.5, **mqtt},
            ),
            sync=SyncSection(keys_file=self.keys_file()),
        )

    def gateway_config(
        self, gateway: str, data_dir: Path, *, urls: list[str] | None = None, **mqtt: Any
    ) -> Path:
        """:meth:`gateway_settings`, written to ``data_dir/doorgw.toml``."""
        settings = self.gateway_settings(gateway, data_dir, urls=urls, **mqtt)
        return write_config(settings, data_dir / "doorgw.toml")


class ExternalBroker(Broker):
    """A broker (or cluster) someone else runs, at ``urls``, that trusts the
    development CA in ``ca_dir`` (``doorgw provision dev-ca``) and lets the
    site's gateways and the platform user ``cloud`` in, as ``doorgw platform
    broker-config`` writes it: certificates are issued here from that CA."""

    def __init__(
        self, directory: Path, *, site: str, gateways: list[str], urls: list[str], ca_dir: Path
    ) -> None:
        from gateway.tools.provision import load_ca

        super().__init__(directory, site=site, gateways=gateways, ca=load_ca(ca_dir))
        self.external = list(urls)
        self.ca_file = ca_dir / "ca.pem"
        parts = urlsplit(self.external[0])
        self.port = parts.port or 8883

    @property
    def url(self) -> str:
        return self.external[0]

    @property
    def urls(self) -> list[str]:
        return list(self.external)

    def start(self) -> None:
        """Nothing to start: it runs already."""

    def stop(self) -> None:
        """Nothing to stop: it is not ours."""

    def cloud_peer(self, dataset: dict[str, Any], **kw: Any) -> CloudPeer:
        """The platform stand-in on the first URL, failing over to the others."""
        peer = super().cloud_peer(dataset, **kw)
        peer.endpoints = [
            ((p := urlsplit(u)).hostname or "127.0.0.1", p.port or 8883) for u in self.external
        ]
        peer.host, peer.port = peer.endpoints[0]
        return peer
