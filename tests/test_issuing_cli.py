"""``doorgw pass``: keys, passes and app codes from the command line, with clear errors."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from gateway.commands.cli import main
from gateway.core import qr
from gateway.core.jws import KeySet, b64url_decode

ISSUE = ["pass", "issue", "--kid", "k1", "--site", "t", "--id", "dp-1", "--door", "front"]
WHEN = ["--from", "2026-12-01T09:00", "--until", "2026-12-01T18:00", "--tz", "Europe/London"]


@pytest.fixture
def key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict[str, object]]:
    path = tmp_path / "platform.pem"
    assert main(["pass", "keygen", "--out", str(path), "--kid", "k1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path, out


def test_a_pass_issued_from_the_command_line_verifies_from_its_image(
    tmp_path: Path, key: tuple[Path, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, out = key
    image = tmp_path / "pass.png"
    args = [*ISSUE, "--key", str(path), *WHEN, "--uses", "1", "--holder", "Ada", "--json"]
    assert main([*args, "--qr", str(image)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["from"] == "2026-12-01T09:00:00Z"  # London is on UTC in December
    assert printed["qr"]["file"] == str(image)
    # QR codes only, as a QR scanner reads: a random image can look like a 1D barcode too.
    found = zxingcpp.read_barcodes(Image.open(image), formats=zxingcpp.BarcodeFormat.QRCode)
    assert [r.text for r in found] == [printed["token"]]
    keys = KeySet.from_jwks({"keys": [out["jwk"]]})
    body = qr.verify_pass(qr.parse(found[0].text), keys)
    assert (body.pass_id, body.max_uses, body.holder, body.doors) == (
        "dp-1",
        1,
        "Ada",
        frozenset({"front"}),
    )


def test_an_app_code_is_signed_by_the_app_key(
    key: tuple[Path, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, out = key
    args = ["pass", "app-code", "--key", str(path), "--credential", "app-1"]
    assert main([*args, "--at", "2026-12-01T09:00:00Z", "--json"]) == 0
    token = json.loads(capsys.readouterr().out)["token"]
    scanned = qr.parse(token)
    assert isinstance(out["app_key"], str)
    code = qr.verify_app_code(scanned, b64url_decode(out["app_key"]))
    assert (code.credential_id, code.issued_at) == ("app-1", 1_796_115_600)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--until", "2026-12-01T08:00"], "--until (2026-12-01T08:00:00Z) must be after --from"),
        (["--from", "tomorrow"], "--from 'tomorrow' is not an ISO 8601 time"),
        (["--tz", "Mars/Base"], "'Mars/Base' is not an IANA timezone"),
        (["--until", "2200-01-01T00:00"], "is not an instant this format can hold"),
        (["--uses", "-1"], "max_uses is 0 (unlimited) to 65535"),
        (["--qr", "pass.xyz"], 'Unknown file extension ".xyz"'),
    ],
)
def test_bad_arguments_get_one_clear_line(
    key: tuple[Path, dict[str, object]],
    capsys: pytest.CaptureFixture[str],
    change: list[str],
    message: str,
) -> None:
    path, _ = key
    when = dict(zip(WHEN[::2], WHEN[1::2], strict=True))
    extra: list[str] = []
    for option, value in zip(change[::2], change[1::2], strict=True):
        if option in when:
            when[option] = value
        else:
            extra += [option, value]
    args = [*ISSUE, "--key", str(path), *[x for kv in when.items() for x in kv], *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("doorgw: error: ")
    assert message in err
    assert "Traceback" not in err


def test_bad_key_files_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    junk.chmod(0o600)
    open_key = tmp_path / "open.pem"
    assert main(["pass", "keygen", "--out", str(open_key)]) == 0
    open_key.chmod(0o644)
    for path, message in [
        (tmp_path / "missing.pem", "no such key file"),
        (junk, "not an unencrypted PEM private key"),
        (open_key, "mode 0644 lets others read the key; it must be 0600"),
    ]:
        capsys.readouterr()
        assert main([*ISSUE, "--key", str(path), *WHEN]) == 2
        assert message in capsys.readouterr().err
    # An existing key is never overwritten.
    before = open_key.read_bytes()
    assert main(["pass", "keygen", "--out", str(open_key)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert open_key.read_bytes() == before
