"""Configuration files: good ones load, bad ones get one clear line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.commands.cli import main
from gateway.config.models import load_config
from gateway.core.jws import Signer
from gateway.errors import ConfigError

GOOD = """\
[gateway]
id = "gw-1"
site_id = "shoreditch"
data_dir = "state"

[time]
timezone = "Europe/London"

[[doors]]
id = "front"
name = "Front door"

[[doors]]
id = "room-3"
unlock_seconds = 4
extended_unlock_seconds = 12
"""


def _room_3(lines: str) -> str:
    """GOOD with ``lines`` in place of the second door's ``unlock_seconds = 4``."""
    return GOOD.replace("unlock_seconds = 4", lines, 1)


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "doorgw.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_a_good_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    assert config.gateway.id == "gw-1"
    assert config.gateway.data_dir == (tmp_path / "state").resolve()
    assert config.cache_path == (tmp_path / "state" / "cache.sqlite3").resolve()
    assert [d.id for d in config.doors] == ["front", "room-3"]
    assert config.doors[0].unlock_seconds == 5.0
    door = config.door("room-3")
    assert door is not None
    assert door.extended_unlock_seconds == 12


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    with pytest.raises(ValueError, match="frozen"):
        config.gateway.id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (GOOD.replace('id = "gw-1"\n', ""), "gateway.id", "required setting is missing"),
        (GOOD.replace("[time]", "[time]\nzone = 1"), "time.zone", "not a known field"),
        (
            GOOD.replace("Europe/London", "Mars/Olympus"),
            "time.timezone",
            "'Mars/Olympus' is not an IANA timezone",
        ),
        (GOOD.replace('id = "room-3"', 'id = "front"'), "doors", "duplicate door id 'front'"),
        (_room_3("unlock_seconds = -1"), "doors[1].unlock_seconds", "greater than 0"),
        (_room_3('unlock_seconds = "long"'), "doors[1].unlock_seconds", "valid number"),
        (
            GOOD.replace("extended_unlock_seconds = 12", "extended_unlock_seconds = 2"),
            "doors",
            "shorter than unlock_seconds",
        ),
        (
            GOOD.replace('site_id = "shoreditch"', 'site_id = "has spaces"'),
            "gateway.site_id",
            "should match pattern",
        ),
        (GOOD.replace("[gateway]", "[gateway]\n[gateway]"), None, "not valid TOML"),
        ("", "gateway", "required setting is missing"),
        (GOOD + '[mqtt]\nurls = ["http://broker:80"]\n', "mqtt.urls[0]", "should match pattern"),
        (GOOD + "[mqtt]\nurls = []\n", "mqtt.urls", "at least 1 item"),
        (
            GOOD + '[mqtt]\nurls = ["mqtts://b:8883"]\ntopic_prefix = "a/#"\n',
            "mqtt.topic_prefix",
            "should match pattern",
        ),
        (GOOD + "[sync]\n", "sync.keys_file", "required setting is missing"),
        (GOOD + "[outbox]\nmax_events = 5\n", "outbox.max_events", "greater than or equal"),
        (
            GOOD + '[[readers]]\nid = "r1"\ndoor = "back"\nkind = "pn532"\nport = "/dev/x"\n',
            None,
            "reader 'r1' names door 'back', which is not in [[doors]]",
        ),
        (
            GOOD + '[[readers]]\nid = "r1"\ndoor = "front"\nkind = "pn532"\n',
            "readers[0]",
            "a pn532 reader needs 'port'",
        ),
        (
            GOOD.replace('name = "Front door"', 'name = "Front door"\nlock_pin = 17')
            + '[[readers]]\nid = "w1"\ndoor = "front"\nkind = "wiegand"\n'
            "data0_pin = 17\ndata1_pin = 18\n",
            None,
            "GPIO 17 is used by door 'front' and by reader 'w1'",
        ),
        (
            GOOD + '[[readers]]\nid = "r1"\ndoor = "front"\nkind = "pn532"\nport = "/dev/x"\n'
            "address = 3\n",
            "readers[0]",
            "reader 'r1': address is for osdp readers, not pn532",
        ),
        (
            GOOD + '[[readers]]\nid = "w1"\ndoor = "front"\nkind = "wiegand"\n'
            "data0_pin = 5\ndata1_pin = 6\nbaudrate = 9600\n",
            "readers[0]",
            "reader 'w1': baudrate is for pn532, osdp, scanner readers, not wiegand",
        ),
        (
            GOOD + '[[readers]]\nid = "s1"\ndoor = "front"\nkind = "scanner"\nport = "/dev/x"\n'
            "install_mode = true\n",
            "readers[0]",
            "reader 's1': install_mode is for osdp readers, not scanner",
        ),
        (
            GOOD.replace('name = "Front door"', 'name = "Front door"\ncard_and_pin = true')
            + '[[readers]]\nid = "r1"\ndoor = "front"\nkind = "pn532"\nport = "/dev/x"\n',
            None,
            "door 'front' is card_and_pin, but no keypad (a wiegand reader) is configured for it",
        ),
        (
            GOOD.replace('name = "Front door"', 'name = "Front door"\nlock_pin = 40'),
            "doors[0].lock_pin",
            "less than or equal to 27",
        ),
        (
            GOOD.replace(
                'name = "Front door"', 'name = "Front door"\nunlocked_schedule = ["weekdays 9-5"]'
            ),
            "doors[0].unlocked_schedule",
            "is not of the form 'DAYS HH:MM-HH:MM'",
        ),
        # This session's settings.
        (
            GOOD + "\n[credentials]\nwiegand_legacy_formats = [27]\n",
            "credentials.wiegand_legacy_formats[0]",
            "26, 34, 35 or 37",
        ),
        (
            GOOD + "\n[credentials]\npin_min_digits = 8\npin_max_digits = 4\n",
            "credentials",
            "pin_min_digits is more than pin_max_digits",
        ),
        (GOOD + "\n[credentials]\npin_max_digits = 12\n", "credentials.pin_max_digits", "8"),
        (
            GOOD + '\n[mqtt]\nurls = ["mqtt://127.0.0.1:1883"]\nconnect_timeout = 0\n',
            "mqtt.connect_timeout",
            "greater than or equal to 1",
        ),
        # true and false are not 1 and 0: a number's key refuses them (a door
        # configured `lock_pin = true` drove GPIO 1 before).
        (_room_3("unlock_seconds = 4\nlock_pin = true"), "doors[1].lock_pin", "valid integer"),
        (_room_3("unlock_seconds = true"), "doors[1].unlock_seconds", "valid number"),
        (GOOD + "\n[outbox]\nflush_window_ms = false\n", "outbox.flush_window_ms", "valid integer"),
        # Nor is text a number: a quoted "50" was once taken as 50.
        (GOOD + '\n[outbox]\nflush_window_ms = "50"\n', "outbox.flush_window_ms", "valid integer"),
        (_room_3('unlock_seconds = "4"'), "doors[1].unlock_seconds", "valid number"),
        (_room_3('unlock_seconds = 4\nlock_pin = "17"'), "doors[1].lock_pin", "valid integer"),
        # A whole-number key is a TOML integer, not a float.
        (GOOD + "\n[api]\nport = 8080.0\n", "api.port", "valid integer"),
    ],
)
def test_bad_configs_name_the_key_and_the_problem(
    tmp_path: Path, text: str, key: str | None, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert message in info.value.message
    assert str(info.value).startswith(f"{path}: ")


def _complete(tmp_path: Path, extra: str = "") -> Path:
    """GOOD with what the daemon also needs: a broker and a usable key set."""
    keys = tmp_path / "platform-keys.json"
    keys.write_text(json.dumps({"keys": [Signer.generate("platform").public_jwk()]}))
    return _write(
        tmp_path,
        GOOD + f'\n[mqtt]\nurls = ["mqtt://127.0.0.1:1883"]\n{extra}\n'
        f'[sync]\nkeys_file = "{keys}"\n',
    )


def test_check_config_reports_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _complete(tmp_path)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok: gateway gw-1 at site shoreditch" in out
    assert "doors: front, room-3" in out


def test_check_config_lists_every_problem_the_daemon_would_meet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Valid TOML and a valid config, but no [mqtt] and no [sync]: run would refuse it.
    path = _write(tmp_path, GOOD)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}: mqtt: the daemon needs an [mqtt] section (`doorgw provision enroll` writes it)",
        f"{path}: sync: the daemon needs a [sync] section with keys_file",
        f"doorgw: error: {path}: 2 problems",
    ]


def test_check_config_checks_the_files_it_names_and_their_modes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "gateway.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)
    (tmp_path / "state").mkdir(mode=0o755)
    (tmp_path / "state").chmod(0o755)
    path = _complete(
        tmp_path,
        f'ca_file = "{tmp_path / "ca.pem"}"\ncert_file = "{tmp_path / "gw.pem"}"\n'
        f'key_file = "{key}"\n',
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}: mqtt.ca_file: {tmp_path / 'ca.pem'}: no such file",
        f"{path}: mqtt.cert_file: {tmp_path / 'gw.pem'}: no such file",
        f"{path}: mqtt.key_file: {key}: mode 0644 lets others read it (chmod 0600 {key})",
        f"{path}: gateway.data_dir: {tmp_path / 'state'}: mode 0755: events and keys there are "
        f"for the service alone (chmod 0700 {tmp_path / 'state'})",
        f"doorgw: error: {path}: 4 problems",
    ]


def test_check_config_lists_all_validation_problems_not_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace('id = "front"', "id = 7").replace(
        "unlock_seconds = 4", "unlock_seconds = -1"
    )
    path = _write(tmp_path, text + "\n[api]\nport = 0\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4
    assert err[0] == f"{path}: doors[0].id: Input should be a valid string"
    assert err[1].startswith(f"{path}: doors[1].unlock_seconds: ")
    assert err[2].startswith(f"{path}: api.port: ")
    assert err[3] == f"doorgw: error: {path}: 3 problems"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            GOOD.replace("Europe/London", "Nowhere/Town"),
            "doorgw.toml: time.timezone: 'Nowhere/Town' is not an IANA timezone",
        ),
        (b"\xff\xfe not utf-8", "doorgw.toml: not UTF-8 text"),
        ("[gateway\n", "doorgw.toml: not valid TOML"),
        (
            GOOD + "\n[[doors]]\nid = 7\n",
            "doorgw.toml: doors[2].id: Input should be a valid string",
        ),
    ],
)
def test_check_config_errors_are_a_line_each_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, expected: str
) -> None:
    path = _write(tmp_path, content)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.splitlines()[-1] == f"doorgw: error: {path}: 1 problem"
    assert err.count("\n") == 2
    assert "Traceback" not in err


def test_check_config_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: cannot read: No such file or directory" in capsys.readouterr().err


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "firmware-config" / "doorgw.example.toml"
    config = load_config(example)
    assert config.gateway.site_id == "shoreditch"
    assert [d.id for d in config.doors] == ["front", "room-3"]


BOARD = """\
[gateway]
id = "gw-1"
site_id = "shoreditch"
board = "rpi4-relay-hat-2ch"

[[doors]]
id = "front"
lock = "relay1"
contact = "in1"
rex = "in2"
green_led = "led_green"
red_led = "led_red"
buzzer = "buzzer"
card_and_pin = true

[[readers]]
id = "nfc-front"
door = "front"
profile = "pn532-hsu"

[[readers]]
id = "kp-front"
door = "front"
profile = "wiegand-keypad"

[[readers]]
id = "osdp-front"
door = "front"
profile = "osdp-rs485"
port = "/dev/ttyUSB0"
address = 7
"""


def test_board_and_reader_profiles_become_pins_and_settings(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, BOARD))
    door = config.doors[0]
    assert (door.lock_pin, door.relay_active_high) == (26, False)  # the HAT's relays: active-low
    assert (door.contact_pin, door.rex_pin) == (17, 27)
    assert (door.green_led_pin, door.red_led_pin, door.buzzer_pin) == (23, 24, 25)
    nfc, keypad, osdp = config.readers
    assert (nfc.kind, nfc.port, nfc.baudrate) == ("pn532", "/dev/serial0", 115200)
    assert (keypad.kind, keypad.data0_pin, keypad.data1_pin) == ("wiegand", 5, 6)
    # The reader's own settings win over its profile's.
    assert (osdp.kind, osdp.port, osdp.baudrate, osdp.address) == (
        "osdp",
        "/dev/ttyUSB0",
        9600,
        7,
    )


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (
            ('board = "rpi4-relay-hat-2ch"', 'board = "rpi5-poe"'),
            "gateway.board",
            "unknown board profile 'rpi5-poe' (known: rpi-bare, rpi4-relay-hat-2ch)",
        ),
        (
            ('lock = "relay1"', 'lock = "in3"'),
            "doors[0].lock",
            "board 'rpi4-relay-hat-2ch' has no output 'in3' (that is an input)",
        ),
        (
            ('contact = "in1"', 'contact = "relay2"'),
            "doors[0].contact",
            "has no input 'relay2' (that is an output)",
        ),
        (
            ('profile = "pn532-hsu"', 'profile = "acr122u"'),
            "readers[0].profile",
            "unknown reader profile 'acr122u'",
        ),
        (
            ('profile = "pn532-hsu"', 'profile = "../../etc/passwd"'),
            "readers[0].profile",
            "is not a profile name",
        ),
        (
            ('rex = "in2"', 'rex = "wiegand_d0"'),
            None,
            "GPIO 5 is used by door 'front' and by reader 'kp-front'",
        ),
        (
            ('lock = "relay1"', 'lock = "relay1"\nlock_pin = 20'),
            "doors[0].lock",
            "set lock or lock_pin, not both",
        ),
        (
            ('lock = "relay1"', "lock_pin = 14"),
            None,
            "GPIO 14 is used by door 'front', but board 'Raspberry Pi 4 + 2-channel relay HAT' "
            "reserves it: UART TX",
        ),
        (
            ('board = "rpi4-relay-hat-2ch"\n', ""),
            "doors[0].lock",
            "'relay1' names a board pin, but [gateway] sets no board",
        ),
    ],
)
def test_bad_profile_references_say_what_exists(
    tmp_path: Path, change: tuple[str, str], key: str | None, message: str
) -> None:
    path = _write(tmp_path, BOARD.replace(*change, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert message in info.value.message
    assert str(info.value).startswith(f"{path}: ")


def test_every_shipped_profile_is_valid() -> None:
    from gateway.config.profiles import SEARCH_PATH, load_board, load_reader_profile

    shipped = Path(__file__).parent.parent / "firmware-config"
    assert shipped in SEARCH_PATH
    boards = sorted(p.stem for p in (shipped / "boards").glob("*.toml"))
    readers = sorted(p.stem for p in (shipped / "readers").glob("*.toml"))
    assert boards
    assert readers
    for name in boards:
        board = load_board(name, (shipped,))
        pins = [o.pin for o in board.outputs.values()] + list(board.inputs.values())
        assert len(pins) == len(set(pins)), name  # no pin named twice
        assert not set(pins) & set(board.reserved), name
    for name in readers:
        assert load_reader_profile(name, (shipped,), "x").kind in (
            "pn532",
            "wiegand",
            "osdp",
            "scanner",
        )


def test_a_site_profiles_dir_and_what_its_board_may_not_do(tmp_path: Path) -> None:
    boards = tmp_path / "profiles" / "boards"
    boards.mkdir(parents=True)
    (boards / "inverted.toml").write_text(
        'name = "Inverted"\n'
        "[outputs]\n"
        "strike = { pin = 17, active_high = false }\n"
        "led = { pin = 18, active_high = false }\n"
        "[inputs]\n"
        "d0 = 5\n"
        "d1 = 6\n"
    )
    text = (
        '[gateway]\nid = "gw"\nsite_id = "s"\nboard = "inverted"\nprofiles_dir = "profiles"\n\n'
        '[[doors]]\nid = "front"\nlock = "strike"\n\n'
        '[[readers]]\nid = "kp"\ndoor = "front"\nkind = "wiegand"\ndata0 = "d0"\ndata1 = "d1"\n'
    )
    config = load_config(_write(tmp_path, text))
    assert (config.doors[0].lock_pin, config.doors[0].relay_active_high) == (17, False)
    assert (config.readers[0].data0_pin, config.readers[0].data1_pin) == (5, 6)

    for change, key, message in (
        (
            ('lock = "strike"', 'lock = "strike"\ngreen_led = "led"'),
            "doors[0].green_led",
            "board output 'led' is active-low; only a lock relay may be",
        ),
        (
            ('data0 = "d0"', 'data0 = "d0"\ndata0_pin = 7'),
            "readers[0].data0",
            "set data0 or data0_pin, not both",
        ),
        (
            ('profiles_dir = "profiles"', 'profiles_dir = "elsewhere"'),
            "gateway.board",
            "unknown board profile 'inverted' (known: none)",
        ),
    ):
        with pytest.raises(ConfigError) as info:
            load_config(_write(tmp_path, text.replace(*change)))
        assert (info.value.key, info.value.message) == (key, message)


def test_the_api_listens_on_an_ip_address_and_tls_files_come_in_pairs(tmp_path: Path) -> None:
    from gateway.config.models import load_config
    from gateway.errors import ConfigError

    base = '[gateway]\nid = "gw-1"\nsite_id = "t"\n\n[api]\n'
    for body, message in (
        ('listen = "localhost"\n', "api.listen: 'localhost' is not an IP address"),
        ('tls_cert_file = "api.pem"\n', "tls_cert_file and tls_key_file go together"),
        ("port = 0\n", "api.port"),
    ):
        path = tmp_path / "doorgw.toml"
        path.write_text(base + body)
        with pytest.raises(ConfigError, match=message):
            load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Found by tests/fuzz/run: both escaped as a ValueError traceback.
        ('[gateway]\nid = "gw-1"\nsite_id = "t"\ndata_dir = "d\\u0000x"\n', "NUL character"),
        ("[gateway]\nid = " + "9" * 5000 + "\n", "not valid TOML"),
    ],
)
def test_config_text_the_fuzzer_found_is_one_clear_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "doorgw.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_arrays_nested_as_deep_as_toml_allows_are_one_clear_error(tmp_path: Path) -> None:
    """Found by tests/fuzz/run: the NUL check recursed past Python's limit."""
    path = tmp_path / "doorgw.toml"
    for depth in (900, 5000):
        path.write_text("[gateway]\nid = " + "[" * depth + "]" * depth + "\n")
        with pytest.raises(ConfigError):
            load_config(path)
