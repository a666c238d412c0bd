"""The staff commands: explain, access, demo and bench, including their bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.commands.cli import COMMANDS, main
from gateway.tools.demo import example_document
from gateway.tools.ports import free_port
from gateway.tools.sitegen import percentile, rank

from .conftest import base_dataset, local, write_cache

CONFIG = """\
[gateway]
id = "gw-1"
site_id = "t"
data_dir = "."
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "doorgw.toml"
    path.write_text(CONFIG)
    write_cache(tmp_path / "cache.sqlite3", base_dataset())
    return path


def run(
    args: list[str], capsys: pytest.CaptureFixture[str], now: str = "2026-03-10T10:00:00+00:00"
) -> tuple[int, str, str]:
    clock = ManualClock(datetime.fromisoformat(now))
    code = main(args, clock=clock)
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_granted(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        [
            "explain",
            "--config",
            str(config),
            "--door",
            "room1",
            "--credential",
            "nfc:04000005",
            "--at",
            "2026-03-10T14:30",
        ],
        capsys,
    )
    assert code == 0
    assert out.splitlines()[0] == "GRANTED  granted_booking  (booking b-paid)"
    assert "until:      Tue 10 Mar 2026 16:15 Europe/London" in out


def test_explain_denied_says_why(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        [
            "explain",
            "--config",
            str(config),
            "--door",
            "room1",
            "--credential",
            "nfc:04-00-00-05",
            "--at",
            "2026-03-10T12:00",
        ],
        capsys,
    )
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "DENIED  booking_not_started"
    assert lines[1] == "  your booking for Room 1 starts at 14:00; door opens 13:50"
    assert "member:     book_m (Book M, active)" in out


def test_explain_defaults_to_the_clock_and_prints_json(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        [
            "explain",
            "--config",
            str(config),
            "--door",
            "front",
            "--credential",
            "pin:1234",
            "--json",
        ],
        capsys,
        now="2026-03-10T21:00:00+00:00",
    )
    assert code == 1
    data = json.loads(out)
    assert data["reason"] == "outside_plan_hours"
    assert data["at"] == "2026-03-10T21:00:00Z"
    assert data["member"] == "day_m"
    assert "1234" not in out


def test_explain_with_an_explicit_offset(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        [
            "explain",
            "--config",
            str(config),
            "--door",
            "front",
            "--credential",
            "nfc:04000001",
            "--at",
            "2026-03-10T19:30:00-01:00",
            "--json",
        ],
        capsys,
    )
    assert (code, json.loads(out)["reason"]) == (1, "outside_plan_hours")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--door", "front", "--credential", "nfc"], "is not KIND:VALUE"),
        (["--door", "front", "--credential", "fingerprint:1"], "is not KIND:VALUE"),
        (["--door", "front", "--credential", "nfc:XYZ"], "is not 4, 7 or 10 bytes of hex"),
        (["--door", "front", "--credential", "pin:12"], "a PIN is 4 to 12 digits"),
        (["--door", "front", "--credential", "wiegand:1:2:3"], "is not BITS/FACILITY:CARD"),
        (["--door", "front", "--credential", "app:short"], "is not a 32-byte Ed25519"),
        (
            ["--door", "front", "--credential", "nfc:04000001", "--at", "tomorrow"],
            "--at 'tomorrow' is not an ISO 8601 time",
        ),
    ],
)
def test_explain_bad_input_is_one_clear_line(
    config: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(["explain", "--config", str(config), *args], capsys)
    assert code == 2
    assert message in err
    assert err.startswith("doorgw: error: ")
    assert "Traceback" not in err
    assert out == ""


def test_explain_a_scanned_code(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.core import qr
    from gateway.core.jws import Signer

    signer = Signer.generate("k1")
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [signer.public_jwk()]}))
    config.write_text(CONFIG + '\n[sync]\nkeys_file = "keys.json"\n')
    text = qr.PassIssuer(signer.key, "k1").issue(
        site="t",
        pass_id="inv-7",
        kind=qr.PassKind.VISITOR,
        not_before=local("2026-03-10T09:00"),
        not_after=local("2026-03-10T17:00"),
        doors=["front"],
        holder="Grace",
    )
    base = ["explain", "--config", str(config), "--code", text, "--at", "2026-03-10T12:00"]
    code, out, _ = run([*base, "--door", "front"], capsys)
    assert code == 0
    assert out.splitlines()[:2] == [
        "GRANTED  granted_pass  (pass inv-7)",
        "  welcome, Grace, until 17:00",
    ]
    assert "  code:       pass (pass inv-7, kind visitor, holder Grace)" in out
    code, out, _ = run([*base, "--door", "lab", "--json"], capsys)
    assert code == 1
    assert json.loads(out)["reason"] == "door_not_in_pass"
    assert json.loads(out)["code"]["pass"] == "inv-7"
    code, out, _ = run([*base[:3], "--code", "hello", "--door", "front"], capsys)
    assert (code, out.splitlines()[0]) == (1, "DENIED  code_unrecognised")


def test_explain_without_a_cache_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "doorgw.toml"
    path.write_text(CONFIG)
    code, _, err = run(
        ["explain", "--config", str(path), "--door", "front", "--credential", "nfc:04000001"],
        capsys,
    )
    assert code == 2
    assert "no cache here yet" in err


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["explain", "--door", "front"])
    assert info.value.code == 2
    assert "--credential" in capsys.readouterr().err


def test_access_lists_windows_per_door(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        [
            "access",
            "--config",
            str(config),
            "--member",
            "book_m",
            "--from",
            "2026-03-10T00:00",
            "--days",
            "2",
        ],
        capsys,
    )
    assert code == 0
    assert out.splitlines()[:3] == [
        "Book M (book_m): active",
        "credentials: c-book nfc_uid active",
        "windows from Tue 10 Mar 2026 00:00 to Thu 12 Mar 2026 00:00 (Europe/London):",
    ]
    assert "  Front door (front)" in out
    assert "    Tue 10 Mar 08:00 - 20:00" in out
    assert "    Tue 10 Mar 13:50 - 16:15" in out
    assert "booking b-paid for Room 1" in out
    assert "b-unpaid" not in out  # unpaid bookings open nothing, so they are not listed


def test_access_json_and_blocked_members(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["access", "--config", str(config), "--member", "sus_m", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert (data["blocked"], data["windows"]) == ("member_suspended", [])


def test_access_unknown_member(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["access", "--config", str(config), "--member", "nobody"], capsys)
    assert code == 2
    assert "no member 'nobody' in the cache" in err


@pytest.mark.parametrize("days", ["0", "400", "many"])
def test_access_bad_days(config: Path, days: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["access", "--config", str(config), "--member", "day_m", "--days", days])
    assert info.value.code == 2
    assert "--days" in capsys.readouterr().err


def test_demo_runs_the_example_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["demo", "--dir", str(tmp_path / "demo")], capsys)
    assert code == 0
    assert "5 of 14 taps and 2 of 6 QR codes opened a door." in out
    for expected in (
        "granted_booking",
        "booking_unpaid",
        "outside_plan_hours",
        "site_closed",
        "member_suspended",
        "credential_revoked",
        "unknown_credential",
        "granted_pass",
        "door_not_in_plan",
        "door_not_in_pass",
        "code_bad_signature",
        "code_outside_window",
    ):
        assert expected in out
    # The kept directory is a working config for the staff commands.
    code, out, _ = run(
        [
            "explain",
            "--config",
            str(tmp_path / "demo" / "doorgw.toml"),
            "--door",
            "room-3",
            "--credential",
            "nfc:04A1B2C3D4E5F6",
            "--at",
            "2026-03-10T14:30",
        ],
        capsys,
    )
    assert code == 0
    assert "granted_booking" in out


def test_a_benchmark_p99_is_the_nearest_rank_not_the_largest_sample() -> None:
    samples = [us * 1000 for us in range(1, 101)]  # 1..100 us, sorted
    assert percentile(samples, 0.99) == 99.0  # the max is reported as max
    assert percentile(samples, 0.50) == 50.0
    assert percentile(samples, 0.999) == 100.0
    assert percentile(samples[:6], 0.99) == 6.0  # too few samples: the largest
    assert percentile([7000], 0.5) == 7.0
    assert rank(200, 0.99) == 197  # the 198th of 200: two samples above it


def test_bench_decide_reports_its_floor(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["bench", "decide", "--members", "300", "--bookings", "3000", "--taps", "300", "--json"],
        capsys,
    )
    assert code == 0
    data = json.loads(out)
    for key in ("p50_us", "p99_us", "floor_p99_us", "ratio", "members", "bookings"):
        assert key in data
    assert (data["members"], data["bookings"]) == (300, 3000)
    # Computed from unrounded figures, so compare to the rounded ones loosely.
    # The ratio is of the unrounded figures; each printed figure is rounded to 0.1 us
    # and the ratio to 0.01, which bounds where it can be.
    p99, f99 = data["p99_us"], data["floor_p99_us"]
    assert (
        (p99 - 0.05) / (f99 + 0.05) - 0.005 <= data["ratio"] <= (p99 + 0.05) / (f99 - 0.05) + 0.005
    )
    assert sum(data["reasons"].values()) == 300
    assert "granted_booking" in data["reasons"]
    assert "unknown_credential" in data["reasons"]


def test_bench_qr_reports_its_rate_and_floor(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["bench", "qr", "--members", "300", "--bookings", "3000", "--codes", "300", "--json"],
        capsys,
    )
    assert code == 0
    data = json.loads(out)
    for key in ("codes_per_s", "p99_us", "floor_p99_us", "ratio", "decide_p99_us"):
        assert data[key] > 0
    # The ratio is of the unrounded figures; each printed figure is rounded to 0.1 us
    # and the ratio to 0.01, which bounds where it can be.
    p99, f99 = data["p99_us"], data["floor_p99_us"]
    assert (
        (p99 - 0.05) / (f99 + 0.05) - 0.005 <= data["ratio"] <= (p99 + 0.05) / (f99 - 0.05) + 0.005
    )
    assert sum(data["reasons"].values()) == 300
    # Passes and app codes, granted and refused, were all in the mix.
    assert {"granted_pass", "pass_revoked", "door_not_in_pass"} <= set(data["reasons"])
    assert data["pass_chars"] <= 178  # QR version 7 at level M


def test_bench_api_times_the_real_api_against_bare_uvicorn(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(["bench", "api", "--requests", "50", "--json"], capsys)
    assert code == 0  # every GET /api/status answered 200 with the bench's token
    data = json.loads(out)
    assert data["requests"] == 50
    for key in ("p50_us", "p99_us", "floor_p50_us", "floor_p99_us"):
        assert data[key] > 0
    assert data["ratio_p50"] == round(data["p50_us"] / data["floor_p50_us"], 2)


def test_a_port_chosen_for_a_server_is_one_outgoing_connections_never_take() -> None:
    # The bench's servers bind a port some time after it is chosen; one from
    # the kernel's ephemeral range can meanwhile become a connection's local
    # port (the bench gateway keeps dialling its absent broker), and uvicorn
    # then exits with "address already in use".
    low, _ = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(50):
        port = free_port()
        assert port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # and nothing holds it


def test_bench_idle_times_work_after_a_pause_against_the_same_work_back_to_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["bench", "idle", "--pause", "0.01", "--samples", "4", "--pages", "64", "--json"]
    code, out, _ = run(args, capsys)
    assert code == 0
    data = json.loads(out)
    assert (data["pause_s"], data["samples"], data["pages"]) == (0.01, 4, 64)
    for kind in ("syscall", "page_reads"):
        figures = data[kind]
        assert 0 <= figures["floor_p50_us"] <= figures["floor_p99_us"]
        assert 0 < figures["p50_us"] <= figures["p99_us"]
        ratio = figures["p50_us"] / max(figures["floor_p50_us"], 0.1)
        assert figures["ratio_p50"] == round(ratio, 1)
    assert data["page_us"] == round(data["page_reads"]["p50_us"] / 64, 3)
    with pytest.raises(SystemExit) as info:
        main(["bench", "idle", "--pause", "0"])
    assert info.value.code == 2
    assert "--pause: 0 is not above 0" in capsys.readouterr().err


def test_bench_tap_times_every_reader_kind_to_the_relay_and_draws_the_plot(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Every tap through the daemon moved the relay (else the bench fails), the
    floor ran beside it, the run without the delay is compared, and the PNG is one."""
    plot = tmp_path / "tap.png"
    args = ["bench", "tap", "--members", "300", "--bookings", "3000", "--taps", "6"]
    code, out, _ = run([*args, "--fsync-delay-ms", "20", "--plot", str(plot), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert (data["fsync_delay_ms"], data["doors"]) == (20, 1)
    assert set(data["readers"]) == {"pn532", "wiegand", "qr"}
    assert data["reader"] in data["readers"]
    for figures in data["readers"].values():
        assert figures["taps"] == 6
        assert figures["floor_p99_us"] > 0
        added = figures["p99_us"] - figures["floor_p99_us"]
        assert figures["added_p99_us"] == pytest.approx(added, abs=0.11)
    assert data["added_p99_us"] == max(f["added_p99_us"] for f in data["readers"].values())
    assert data["compare"]["fsync_delay_ms"] == 0
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_plot_that_cannot_be_written_is_refused_before_any_tap(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The audit found --plot into a missing directory failing with a traceback
    after the whole run (minutes of taps); now it is a usage error at once."""
    args = ["bench", "tap", "--members", "300", "--bookings", "3000", "--taps", "2"]
    for target, says in (
        (tmp_path / "nowhere" / "tap.png", f"there is no directory {tmp_path / 'nowhere'}"),
        (tmp_path, "is a directory"),
    ):
        code, out, err = run([*args, "--plot", str(target)], capsys)
        assert code == 2
        assert out == ""  # no progress line: no cache was built, not one tap timed
        assert err.startswith(f"doorgw: error: --plot {target}: {says}")
        assert "Traceback" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "command",
    [
        ["schemas", "--out"],
        ["demo", "--dir"],
        ["bench", "decide", "--members", "5", "--bookings", "10", "--dir"],
        ["sim", "demo", "--dir"],
        ["sim", "run", str(Path(__file__).parents[1] / "sim/scenarios/demo.toml"), "--dir"],
        ["sim", "fleet", "--gateways", "1", "--dir"],
    ],
    ids=lambda command: " ".join(c for c in command if c.isalpha()),
)
def test_a_directory_argument_that_cannot_be_one_is_a_usage_error(
    command: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A file in the way, or a path under a file: one clear line, exit 2, no traceback
    (each of these raised FileExistsError or FileNotFoundError before)."""
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("staff notes\n")
    option = command[-1]
    for target, says in (
        (in_the_way, "not a directory"),
        (in_the_way / "sub", "cannot be made (Not a directory)"),
    ):
        code, out, err = run([*command, str(target)], capsys)
        assert (code, out) == (2, "")
        assert err == f"doorgw: error: {option} {target}: {says}\n"
    assert in_the_way.read_text() == "staff notes\n"


def test_console_entry_point_runs_as_a_module(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\nid = 'x'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        f"{bad}: gateway.site_id: required setting is missing\ndoorgw: error: {bad}: 1 problem\n"
    )


def test_clock_is_not_read_when_at_is_given(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class NoClock(ManualClock):
        def now(self) -> datetime:
            raise AssertionError("clock read")

    code = main(
        [
            "explain",
            "--config",
            str(config),
            "--door",
            "front",
            "--credential",
            "nfc:04000001",
            "--at",
            "2026-03-10T10:00",
        ],
        clock=NoClock(datetime(2026, 1, 1, tzinfo=UTC)),
    )
    assert code == 0


#: Libraries of the running daemon (GPIO, serial, OSDP, MQTT, HTTP, async SQLite).
DAEMON_LIBRARIES = {
    "gpiozero",
    "serial",
    "osdp",
    "aiomqtt",
    "paho",
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "aiosqlite",
}


@pytest.mark.parametrize(
    "args",
    [
        ["explain", "--door", "front", "--code", "DG1:not-a-code"],
        ["explain", "--door", "front", "--credential", "nfc:04A1B2C3D4E5F6"],
        ["access", "--member", "m-ada"],
    ],
)
def test_staff_commands_that_read_the_cache_load_none_of_the_daemon(
    tmp_path: Path, args: list[str]
) -> None:
    """On a Pi these run beside the service: they must not load GPIO, MQTT or HTTP."""
    assert main(["demo", "--dir", str(tmp_path)]) == 0
    probe = (
        "import sys\n"
        "from gateway.commands.cli import main\n"
        f"main({[*args, '--config', str(tmp_path / 'doorgw.toml')]!r})\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode in (0, 1), done.stderr  # 1: the door would stay shut
    loaded = set(eval(done.stdout.strip().splitlines()[-1]))
    assert "gateway" in loaded
    assert loaded & DAEMON_LIBRARIES == set()


def test_bench_memory_reads_a_real_daemon_idle_and_through_a_snapshot_against_a_bare_client(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The daemon took the site over MQTT (else the bench fails waiting), and its
    readings are its own: above the bare client's, the apply's peak above idle."""
    args = ["bench", "memory", "--members", "300", "--bookings", "3000", "--settle", "0.5"]
    code, out, _ = run([*args, "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert (data["members"], data["bookings"], data["api"]) == (300, 3000, True)
    assert data["snapshot_chunks"] >= 1
    assert data["idle_rss_mb"] > data["floor_rss_mb"] > 0
    assert data["peak_rss_mb"] >= data["idle_rss_mb"] * 0.9
    assert data["idle_ratio"] == pytest.approx(data["idle_rss_mb"] / data["floor_rss_mb"], abs=0.02)


def test_bench_memory_loads_a_site_file_and_runs_without_the_api(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--site FILE`` is the platform's dataset document; the API's share is left out."""
    site = tmp_path / "site.json"
    site.write_text(json.dumps(example_document()))
    args = ["bench", "memory", "--site", str(site), "--without-api", "--settle", "0.5", "--json"]
    code, out, _ = run(args, capsys)
    assert code == 0
    data = json.loads(out)
    assert data["api"] is False
    assert data["bookings"] == len(example_document()["bookings"])


def test_bench_memory_names_a_site_file_it_cannot_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.json"
    code, _, err = run(["bench", "memory", "--site", str(missing), "--json"], capsys)
    assert code == 2
    assert f"{missing}: cannot read" in err
    assert "Traceback" not in err


def test_the_daemon_loads_no_other_command(tmp_path: Path) -> None:
    """``doorgw run`` (what systemd starts, and restarts) imports its own
    command and none of the others, nor the add-ons' (``sim``): they are
    start-up time and memory a door process never uses. Every other command
    line still sees them all."""
    missing = tmp_path / "nowhere.toml"
    probe = (
        "import sys; from gateway.commands.cli import main; "
        f"code = main(['run', '--config', {str(missing)!r}]); "
        "print(code, sorted(m for m in sys.modules "
        "if m.startswith(('gateway.commands.', 'sim'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split(" ", 1) == [
        "2",
        "['gateway.commands.cli', 'gateway.commands.common', 'gateway.commands.run']\n",
    ]
    assert f"{missing}" in out.stderr
    assert "Traceback" not in out.stderr


def test_every_command_is_listed_and_add_ons_still_extend_bench(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def help_of(args: list[str]) -> str:
        with pytest.raises(SystemExit) as exit_:
            main([*args, "--help"])
        assert exit_.value.code == 0
        return capsys.readouterr().out

    def listed(text: str) -> set[str]:
        return {line.split()[0] for line in text.splitlines() if line.startswith("    ")}

    assert listed(help_of([])) >= {name for name, _ in COMMANDS} | {"sim"}  # sim: an add-on
    assert listed(help_of(["bench"])) >= {"tap", "decide", "sync", "drain"}
    assert "--config" in help_of(["run"])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["rnu"], "invalid choice: 'rnu'"),  # a typo: every command is offered
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "--config"], "expected one argument"),
        (["bench", "nothing"], "invalid choice: 'nothing'"),
    ],
)
def test_a_bad_command_line_is_refused_in_one_line(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err
    assert "Traceback" not in err
    if args == ["rnu"]:
        assert all(f"'{name}'" in err for name, _ in COMMANDS)
        assert "'sim'" in err


def test_the_daemon_does_not_load_the_provisioning_tools() -> None:
    """``doorgw run`` parses the same command line as every command: registering
    them must not import what only ``doorgw provision`` uses (the PKI and
    cryptography's x509 are 1.4 MB of the daemon's memory otherwise)."""
    probe = (
        "import sys; from gateway.commands.cli import build_parser; build_parser(); "
        "import gateway.app.gateway, gateway.net.api; "
        "print(sorted(m for m in ('cryptography.x509', 'gateway.tools.pki', "
        "'gateway.tools.provision') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
