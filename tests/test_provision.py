"""Provisioning from nothing to a gateway on the broker, and enrolments that must not half-apply."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app.gateway import Gateway
from gateway.clock import SystemClock
from gateway.commands.cli import main
from gateway.config.models import load_config
from gateway.core.jws import Signer
from gateway.net.staff_tokens import TokenStore
from gateway.store.files import load_pin_key_file
from gateway.tools import provision
from gateway.tools.ports import free_port
from sim.broker import Broker

from .conftest import base_dataset
from .test_mqtt import run_async, until

INIT = ["provision", "init", "--gateway-id", "gw-1", "--site", "t", "--board", "rpi4-relay-hat-2ch"]


def initialised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    etc = tmp_path / "etc"
    args = [*INIT, "--dir", str(etc), "--data-dir", str(tmp_path / "state")]
    assert main(args) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    return etc, token


def bundle_for(broker: Broker, etc: Path, path: Path, **changes: Any) -> Path:
    doc = provision.dev_bundle(
        broker.ca,
        (etc / "gateway.csr").read_bytes(),
        site_id="t",
        broker_urls=[broker.url],
        signing_keys={"keys": [broker.signer.public_jwk()]},
    )
    doc.update(changes)
    path.write_text(json.dumps(doc))
    return path


def release_of(etc: Path) -> str:
    return (etc / "current").resolve().name


def test_from_a_fresh_machine_to_a_gateway_on_the_broker(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    etc, token = initialised(tmp_path, capsys)
    key = etc / "gateway.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert token.startswith("dgw_")
    config = load_config(etc / "doorgw.toml")
    assert (config.doors[0].id, config.doors[0].lock_pin) == ("front", 26)  # relay1 on the HAT
    assert config.mqtt is None
    assert TokenStore(config.tokens_path).check(token) == "installer"
    assert release_of(etc) == "0001"

    bundle = bundle_for(broker, etc, tmp_path / "bundle.json")
    assert main(["provision", "enroll", str(bundle), "--dir", str(etc)]) == 0
    assert release_of(etc) == "0002"
    config = load_config(etc / "doorgw.toml")
    assert config.mqtt is not None
    assert list(config.mqtt.urls) == [broker.url]

    async def go() -> None:
        cloud = broker.cloud_peer(base_dataset())
        task = asyncio.create_task(cloud.run())
        await cloud.connected.wait()
        gw = Gateway(config, SystemClock(), pin_factory=MockFactory())
        async with gw.running():
            await until(lambda: cloud.status.get("gw-1", {}).get("state") == "online", "online")
            await until(lambda: gw.engine.version is not None, "synced with the new keys")
        task.cancel()

    run_async(go())


def test_a_bad_bundle_changes_nothing(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    etc, _ = initialised(tmp_path, capsys)
    before = (etc / "doorgw.toml").read_text()

    def refused(bundle: Path, message: str) -> None:
        assert main(["provision", "enroll", str(bundle), "--dir", str(etc)]) == 2
        assert message in capsys.readouterr().err
        assert release_of(etc) == "0001"
        assert (etc / "doorgw.toml").read_text() == before
        assert not list((etc / "releases").glob(".staging-*"))

    # A certificate for somebody else's key.
    other = tmp_path / "other"
    assert main([*INIT, "--dir", str(other), "--data-dir", str(tmp_path / "s2")]) == 0
    capsys.readouterr()
    refused(bundle_for(broker, other, tmp_path / "b1.json"), "not for this gateway's key")
    refused(
        bundle_for(broker, etc, tmp_path / "b2.json", gateway_id="gw-2"),
        "the bundle is for gateway 'gw-2'",
    )
    refused(
        bundle_for(broker, etc, tmp_path / "b3.json", signing_keys={"keys": []}),
        "signing keys",
    )
    # A broker that does not answer: checked before anything is installed.
    refused(
        bundle_for(
            broker, etc, tmp_path / "b4.json", broker_urls=[f"mqtts://127.0.0.1:{free_port()}"]
        ),
        "no broker accepted the new certificate",
    )
    (tmp_path / "b5.json").write_text("{not json")
    refused(tmp_path / "b5.json", "not an enrolment bundle")
    # Values that would have become config syntax when pasted into the TOML.
    refused(
        bundle_for(broker, etc, tmp_path / "b6.json", topic_prefix='x"\n[api]\nlisten = "0.0.0.0'),
        "topic_prefix",
    )
    refused(
        bundle_for(broker, etc, tmp_path / "b7.json", broker_urls=['mqtts://a:1"\n[x]']),
        "broker_urls",
    )
    refused(bundle_for(broker, etc, tmp_path / "b8.json", pin_key="c2hvcnQ"), "pin_key")
    assert not (etc / "pin-key").exists()


def test_the_bundles_pin_key_becomes_a_private_file_the_config_names(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    etc, _ = initialised(tmp_path, capsys)
    key = secrets.token_bytes(32)
    text = base64.urlsafe_b64encode(key).rstrip(b"=").decode()
    bundle = bundle_for(broker, etc, tmp_path / "bundle.json", pin_key=text)
    assert main(["provision", "enroll", str(bundle), "--dir", str(etc), "--no-broker-check"]) == 0
    config = load_config(etc / "doorgw.toml")
    assert config.sync is not None
    assert config.sync.pin_key_file == etc / "pin-key"
    assert stat.S_IMODE((etc / "pin-key").stat().st_mode) == 0o600
    assert load_pin_key_file(config) == key


def test_an_enroll_interrupted_while_writing_leaves_the_old_config(
    broker: Broker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    etc, _ = initialised(tmp_path, capsys)
    bundle = bundle_for(broker, etc, tmp_path / "bundle.json")
    before = (etc / "doorgw.toml").read_text()
    writes = 0
    real_write = provision.write_release_file

    def failing_write(path: Path, data: bytes) -> None:
        nonlocal writes
        writes += 1
        if writes == 3:
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(provision, "write_release_file", failing_write)
    assert main(["provision", "enroll", str(bundle), "--dir", str(etc), "--no-broker-check"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert (etc / "doorgw.toml").read_text() == before
    monkeypatch.undo()
    # A power cut mid-enroll leaves a staging directory and a half-made link: ignored, cleaned.
    (etc / "releases" / ".staging-dead").mkdir()
    (etc / ".current-dead").symlink_to("releases/.staging-dead")
    assert load_config(etc / "doorgw.toml").mqtt is None
    assert main(["provision", "enroll", str(bundle), "--dir", str(etc)]) == 0
    assert not (etc / "releases" / ".staging-dead").exists()
    assert load_config(etc / "doorgw.toml").mqtt is not None


def test_pinned_keys_rotate_only_when_a_pinned_key_signs_the_new_set(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    etc, _ = initialised(tmp_path, capsys)
    bundle = bundle_for(broker, etc, tmp_path / "bundle.json")
    assert main(["provision", "enroll", str(bundle), "--dir", str(etc), "--no-broker-check"]) == 0
    successor = Signer.generate("platform-2027")
    new_set = {"keys": [broker.signer.public_jwk(), successor.public_jwk()]}
    body = json.dumps({"type": "key_rotation", "site": "t", "keys": new_set}).encode()
    forged = tmp_path / "forged.jws"
    forged.write_bytes(Signer.generate("platform-test").sign(body))
    assert main(["provision", "rotate-keys", str(forged), "--dir", str(etc)]) == 2
    assert "not signed by a pinned key" in capsys.readouterr().err
    assert release_of(etc) == "0002"
    good = tmp_path / "rotation.jws"
    good.write_bytes(broker.signer.sign(body))
    assert main(["provision", "rotate-keys", str(good), "--dir", str(etc)]) == 0
    assert release_of(etc) == "0003"
    config = load_config(etc / "doorgw.toml")
    assert config.sync is not None
    pinned = json.loads(config.sync.keys_file.read_text())
    assert sorted(k["kid"] for k in pinned["keys"]) == ["platform-2027", "platform-test"]
    # The rest of the enrolled configuration came along unchanged.
    assert config.mqtt is not None
    assert config.mqtt.cert_file is not None
    assert (
        config.mqtt.cert_file.read_bytes()
        == (etc / "releases" / "0002" / "gateway.pem").read_bytes()
    )


def test_init_refuses_to_run_twice_and_names_the_known_boards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    etc, _ = initialised(tmp_path, capsys)
    key = (etc / "gateway.key").read_bytes()
    assert main([*INIT, "--dir", str(etc), "--data-dir", str(tmp_path / "state")]) == 2
    assert "already initialised" in capsys.readouterr().err
    assert (etc / "gateway.key").read_bytes() == key
    fresh = tmp_path / "fresh"
    args = ["provision", "init", "--gateway-id", "gw-9", "--site", "t", "--board", "rpi5-magic"]
    assert main([*args, "--dir", str(fresh)]) == 2
    err = capsys.readouterr().err
    assert "unknown board profile 'rpi5-magic'" in err
    assert "rpi4-relay-hat-2ch" in err
    assert not (fresh / "gateway.key").exists()


def test_a_development_ca_signs_what_init_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    etc, _ = initialised(tmp_path, capsys)
    ca_dir = tmp_path / "ca"
    assert main(["provision", "dev-ca", "--out", str(ca_dir)]) == 0
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [Signer.generate("k1").public_jwk()]}))
    out = tmp_path / "bundle.json"
    args = ["provision", "dev-bundle", "--ca-dir", str(ca_dir), "--csr", str(etc / "gateway.csr")]
    args += ["--site", "t", "--broker", "mqtts://127.0.0.1:8883", "--keys", str(keys)]
    assert main([*args, "--out", str(out)]) == 0
    bundle = provision.EnrollBundle.model_validate_json(out.read_bytes())
    config = load_config(etc / "doorgw.toml")
    provision.check_bundle(etc, bundle, config, datetime.now(UTC))  # raises if anything is off
    assert main(["provision", "dev-ca", "--out", str(ca_dir)]) == 2  # never replaces a CA


@pytest.fixture
def service_layout() -> Iterator[tuple[Path, Path]]:
    """/etc/doorgw and /var/lib/doorgw as systemd/doorgw.tmpfiles makes them, with
    ``nobody``/``nogroup`` as the service account (a real non-root user and group)."""
    if os.geteuid() != 0:
        pytest.skip("giving files to a service account needs root (CI runs the suite as root)")
    # Outside pytest's own 0700 directory: the service account must be able to get in.
    with tempfile.TemporaryDirectory(prefix="doorgw-layout-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        etc, state = base / "etc", base / "state"
        etc.mkdir()
        etc.chmod(0o750)  # whatever the umask
        os.chown(etc, 0, NOGROUP)
        state.mkdir()
        state.chmod(0o700)
        os.chown(state, NOBODY, NOGROUP)
        yield etc, state


NOBODY = NOGROUP = 65534


def test_re_enrolment_keeps_the_service_able_to_read_its_files(
    broker: Broker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    service_layout: tuple[Path, Path],
) -> None:
    etc, state = service_layout
    assert main([*INIT, "--dir", str(etc), "--data-dir", str(state)]) == 0
    bundle = bundle_for(broker, etc, tmp_path / "bundle.json")
    assert main(["provision", "enroll", str(bundle), "--dir", str(etc)]) == 0
    # A second enrolment (a renewed certificate) writes a third release.
    assert main(["provision", "enroll", str(bundle), "--dir", str(etc)]) == 0
    assert release_of(etc) == "0003"
    capsys.readouterr()
    config = load_config(etc / "doorgw.toml")
    assert config.mqtt is not None
    assert config.sync is not None
    files = [
        etc / "doorgw.toml",
        config.mqtt.ca_file,
        config.mqtt.cert_file,
        config.mqtt.key_file,
        config.sync.keys_file,
        config.tokens_path,
    ]
    # Read as the service would: a non-root user whose group owns /etc/doorgw.
    done = subprocess.run(
        ["cat", *map(str, files)],
        user=NOBODY,
        group=NOGROUP,
        extra_groups=[NOGROUP],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr.decode()
    for release in sorted((etc / "releases").iterdir()):
        assert (release.stat().st_gid, stat.S_IMODE(release.stat().st_mode)) == (NOGROUP, 0o750)
        for item in release.iterdir():
            assert (item.stat().st_gid, stat.S_IMODE(item.stat().st_mode)) == (NOGROUP, 0o640)
    # Private keys stay private: the service's own, no one else's.
    key = etc / "gateway.key"
    assert (key.stat().st_uid, stat.S_IMODE(key.stat().st_mode)) == (NOBODY, 0o600)


def test_relative_paths_are_taken_from_where_init_was_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*INIT, "--dir", "etc", "--data-dir", "state"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    config = load_config(tmp_path / "etc" / "doorgw.toml")
    assert config.gateway.data_dir == tmp_path / "state"
    # The token shown once works where the daemon will look, and nothing was left staged.
    assert TokenStore(tmp_path / "state" / "staff-tokens.json").check(token) == "installer"
    assert [p.name for p in (tmp_path / "etc" / "releases").iterdir()] == ["0001"]


def test_a_private_file_is_never_written_through_what_sits_at_a_predictable_name(
    tmp_path: Path,
) -> None:
    from gateway.store.files import write_private

    target = tmp_path / "gateway.key"
    outside = tmp_path / "elsewhere"
    outside.write_text("not yours")
    (tmp_path / "gateway.key.tmp").symlink_to(outside)  # the name the old writer used
    planted = tmp_path / ".gateway.key.tmp"
    planted.write_text("planted")
    planted.chmod(0o644)
    write_private(target, b"secret")
    assert outside.read_text() == "not yours"
    assert not target.is_symlink()
    assert target.read_bytes() == b"secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert planted.read_text() == "planted"  # neither used nor kept as the key


def test_init_writes_its_config_with_a_toml_library_whatever_the_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / 'state "quoted" \\ and [bracketed]'
    assert main([*INIT, "--dir", str(tmp_path / "etc"), "--data-dir", str(odd)]) == 0
    config = load_config(tmp_path / "etc" / "doorgw.toml")
    assert config.gateway.data_dir == odd
    assert config.api is not None
    assert config.api.listen == "127.0.0.1"
