"""``doorgw config set | unset | edit``: settings change through a checked new release."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from gateway.commands.cli import main
from gateway.config.models import load_config

from .test_provision import INIT


@pytest.fixture
def etc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    directory = tmp_path / "etc"
    assert main([*INIT, "--dir", str(directory), "--data-dir", str(tmp_path / "state")]) == 0
    capsys.readouterr()
    return directory


def release_of(etc: Path) -> str:
    return (etc / "current").resolve().name


def test_a_setting_changes_through_a_new_release_and_the_old_one_stays(
    etc: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "set", "doors.front.unlock_seconds", "8", "--dir", str(etc)]) == 0
    assert "current -> " in capsys.readouterr().out
    assert release_of(etc) == "0002"
    assert load_config(etc / "doorgw.toml").doors[0].unlock_seconds == 8
    assert load_config(etc / "releases" / "0001" / "doorgw.toml").doors[0].unlock_seconds == 5
    assert (etc / "doorgw.toml").is_symlink()  # still the link enrolments follow
    new = etc / "releases" / "0002" / "doorgw.toml"
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
    # Not TOML: taken as text.  By place as well as by id.
    assert main(["config", "set", "api.listen", "0.0.0.0", "--dir", str(etc)]) == 0
    assert main(["config", "set", "doors[0].name", "Front door", "--dir", str(etc)]) == 0
    config = load_config(etc / "doorgw.toml")
    assert config.api is not None
    assert config.api.listen == "0.0.0.0"
    assert config.doors[0].name == "Front door"
    assert main(["config", "unset", "api.listen", "--dir", str(etc)]) == 0
    config = load_config(etc / "doorgw.toml")
    assert config.api is not None
    assert config.api.listen == "127.0.0.1"
    # The same value again is no new release.
    assert main(["config", "set", "doors.front.unlock_seconds", "8", "--dir", str(etc)]) == 0
    assert "no change" in capsys.readouterr().out
    assert release_of(etc) == "0005"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("doors.front.unlock_seconds", "-1", "doors[0].unlock_seconds: "),
        ("doors.back.unlock_seconds", "3", "no door 'back' (there is: front)"),
        ("api.port", '"eighty"', "api.port: "),
        ("gateway..id", "x", "a setting is named like mqtt.heartbeat_seconds"),
        ("doors.unlock_seconds", "3", "say which of the doors: doors[0] or doors.ID"),
    ],
)
def test_a_change_with_a_problem_switches_nothing(
    etc: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, message: str
) -> None:
    assert main(["config", "set", key, value, "--dir", str(etc)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert release_of(etc) == "0001"
    assert sorted(p.name for p in (etc / "releases").iterdir()) == ["0001"]  # nothing staged left


def test_edit_checks_the_edited_copy_and_keeps_a_rejected_edit(
    etc: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[2])\n"
        "p.write_text(p.read_text().replace('port = 8080', 'port = ' + sys.argv[1]))\n"
    )
    monkeypatch.setenv("VISUAL", f"{sys.executable} {editor} 99999")
    assert main(["config", "edit", "--dir", str(etc)]) == 2
    err = capsys.readouterr().err
    assert "api.port: " in err
    rejected = etc / "doorgw.toml.rejected"
    assert f"go on from it with `doorgw config edit --from {rejected}`" in err
    assert "port = 99999" in rejected.read_text()
    assert release_of(etc) == "0001"
    # Go on from the rejected edit, and fix it.
    monkeypatch.setenv("VISUAL", f"{sys.executable} -c pass")
    text = rejected.read_text().replace("port = 99999", "port = 8081")
    rejected.write_text(text)
    assert main(["config", "edit", "--from", str(rejected), "--dir", str(etc)]) == 0
    config = load_config(etc / "doorgw.toml")
    assert config.api is not None
    assert config.api.port == 8081


def test_a_config_edited_in_place_is_refused_and_check_config_says_why(
    etc: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = etc / "doorgw.toml"
    text = link.read_text()
    link.unlink()
    link.write_text(text.replace("port = 8080", "port = 8082"))  # what `sed -i` does
    assert main(["config", "set", "api.port", "8083", "--dir", str(etc)]) == 2
    assert "is not the link into the current release" in capsys.readouterr().err
    main(["check-config", str(link)])
    assert f"{link}: warning: {link} is no longer the link to current/doorgw.toml" in (
        capsys.readouterr().err
    )


def test_an_editor_that_cannot_run_or_fails_changes_nothing(
    etc: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VISUAL", str(tmp_path / "no-such-editor"))
    assert main(["config", "edit", "--dir", str(etc)]) == 2
    assert "cannot run the editor" in capsys.readouterr().err
    monkeypatch.setenv("VISUAL", f"{sys.executable} -c 'raise SystemExit(3)'")
    assert main(["config", "edit", "--dir", str(etc)]) == 2
    assert "the editor exited with status 3; nothing changed" in capsys.readouterr().err
    monkeypatch.setenv("VISUAL", f"{sys.executable} -c pass")
    assert (
        main(["config", "edit", "--from", str(tmp_path / "missing.toml"), "--dir", str(etc)]) == 2
    )
    assert "missing.toml: cannot read" in capsys.readouterr().err
    assert release_of(etc) == "0001"
    assert sorted(p.name for p in (etc / "releases").iterdir()) == ["0001"]
