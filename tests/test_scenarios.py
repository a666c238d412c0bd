"""The shipped scenarios, through the real daemon, a real Mosquitto and the emulated hardware."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.commands.cli import main
from sim.scenario import ScenarioError, load_scenario, run_file

SCENARIOS = sorted((Path(__file__).parent.parent / "sim" / "scenarios").glob("*.toml"))


def test_scenarios_are_shipped() -> None:
    assert len(SCENARIOS) >= 5


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_passes(path: Path, tmp_path: Path) -> None:
    text, passed = run_file(path, tmp_path)
    assert passed, text
    assert "every expectation met" in text


def test_the_embedded_broker_runs_a_site_without_mosquitto(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = SCENARIOS[0].parent / "offline-and-restart.toml"
    code = main(["sim", "run", str(path), "--broker", "embedded", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "6 steps, every expectation met" in out


def test_a_wrong_expectation_says_which_step_what_was_expected_and_what_happened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "wrong.toml"
    scenario.write_text(
        'title = "Ada expects too much"\nstart = "2026-03-10T09:00"\n\n'
        '[[steps]]\nat = "09:30"\ntap = { card = "nfc:04A1B2C3D4E5F6", door = "front" }\n'
        'expect = { door = "opened" }\n\n'
        '[[steps]]\nat = "21:30"\nnote = "After her plan\'s hours"\n'
        'tap = { card = "nfc:04A1B2C3D4E5F6", door = "front" }\n'
        'expect = { door = "opened", reason = "granted_plan", led = "granted" }\n'
    )
    assert main(["sim", "run", str(scenario), "--dir", str(tmp_path / "run")]) == 1
    out = capsys.readouterr().out
    assert "[ ok ] step 1 Tue 10 Mar 09:30" in out
    assert "[FAIL] step 2 Tue 10 Mar 21:30  After her plan's hours" in out
    assert "-> expected the door opened, it shut" in out
    assert "-> expected reason granted_plan, got outside_plan_hours" in out
    assert "-> expected the granted LED pattern, saw denied" in out
    assert "2 steps, 1 with unmet expectations" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('title = "x"\nstart = "2026-03-10T09:00"\n', "steps: required setting is missing"),
        ('title = "x"\nstart = "2026-03-10T09:00"\n[[steps]]\nat = "soon"\n', "at 'soon'"),
        (
            'title = "x"\nstart = "2026-03-10T09:00"\n[[steps]]\nat = "09:00"\n'
            'cancel = "b"\nsuspend = "m"\n',
            "one action per step",
        ),
        ('title = "x"\nstart = "2026-03-10T09:00"\n[[steps]]\nat = "09:00"\nfly = 1\n', "fly"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_a_bad_scenario_file_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)
    assert main(["sim", "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("doorgw: error: ")


def test_sim_demo_tells_the_story_as_it_happens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sim", "demo", "--broker", "embedded", "--dir", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0, "\n".join(line for line in out if not line.startswith("[ ok ]"))
    assert out[0].startswith("scenario: A day at the Shoreditch site")
    assert out[-1] == "17 steps, every expectation met"
    assert any("OPENED granted_pass" in line for line in out)


def test_watch_shows_doors_readers_sync_and_the_events_each_step_caused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = SCENARIOS[0].parent / "doors-and-lockdown.toml"
    assert main(["sim", "run", str(path), "--watch", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| doors    front locked/closed led:- | room-3 locked/closed" in out
    assert "studio locked/open/door_forced" in out
    assert "| event    door_forced studio" in out
    assert "front unlocked/closed led:granted" in out
    assert "| readers  wg-front:up qr-front:up" in out
    assert "LOCKDOWN" in out


def test_a_scan_that_never_comes_back_stops_the_scenario_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "repeat.toml"
    scenario.write_text(
        'title = "A scanner repeating itself"\nstart = "2026-03-10T09:00"\n\n'
        '[[steps]]\nat = "09:30"\nscan = { door = "front", day_pass = "dp-1" }\n\n'
        '[[steps]]\nat = "+1s"\nnote = "The same code within a second: one presentation"\n'
        'scan = { door = "front", again = true }\nexpect = { door = "shut" }\n\n'
        '[[steps]]\nat = "+1m"\nlockdown = true\n'
    )
    assert main(["sim", "run", str(scenario), "--dir", str(tmp_path / "run")]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] step 2" in out
    assert "waited 20 s of real time for the code's decision; the scenario stops here" in out
    assert "step 3" not in out


def test_a_missing_scenario_file_or_entity_is_said_plainly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim", "run", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    scenario = tmp_path / "ghost.toml"
    scenario.write_text(
        'title = "Cancelling what is not there"\nstart = "2026-03-10T09:00"\n\n'
        '[[steps]]\nat = "09:30"\ncancel = "bk-ghost"\n\n'
        '[[steps]]\nat = "09:40"\ntap = { card = "nfc:04A1B2C3D4E5F6", door = "attic" }\n'
    )
    assert main(["sim", "run", str(scenario), "--dir", str(tmp_path / "run")]) == 1
    out = capsys.readouterr().out
    assert "-> no booking 'bk-ghost' in the site's data" in out
    assert "-> no door 'attic' at this site" in out
