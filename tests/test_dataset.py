"""Datasets from the platform are validated whole; errors name the exact field."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from gateway.core.credentials import normalize, parse_read
from gateway.core.model import CredentialKind
from gateway.errors import CredentialFormatError, DatasetError
from gateway.wire.dataset import load_dataset_file, parse_changes, parse_dataset
from gateway.wire.protocol import decode_part

from .conftest import base_dataset


def _broken(path: str, value: Any) -> dict[str, Any]:
    doc = base_dataset()
    target: Any = doc
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is KeyError:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("site.timezone", "Europe/Londn", "site.timezone: 'Europe/Londn' is not an IANA"),
        ("members.0.status", "vip", "members[0].status"),
        ("credentials.0.value", "04:00:00:01", "value is not canonical; send '04000001'"),
        ("credentials.0.member_id", "ghost", "names member_id 'ghost'"),
        ("credentials.1.value", "04000001", "the same value is held twice"),
        ("credentials.17.value", "1234", "64 lower-case hex digits"),
        ("plans.0.schedule", ["Mon-Fri 8-20"], "is not of the form"),
        ("bookings.0.end", "2026-03-10T13:00:00Z", "end must be after start"),
        ("bookings.0.start", "2026-03-10T14:00:00", "timezone"),
        ("bookings.0.grace_before_min", -5, "greater than or equal to 0"),
        ("bookings.0.resource_id", "r9", "names resource_id 'r9'"),
        ("doors.1.resources", ["nowhere"], "serves unknown resource 'nowhere'"),
        ("members.1.id", "day_m", "members: duplicate ids ['day_m']"),
        ("entitlements.0.valid_until", "2025-01-01T00:00:00Z", "valid_until must be after"),
        ("version", -1, "greater than or equal to 0"),
        ("members.0.nickname", "x", "members[0].nickname: not a known field"),
        # Lax validation read a number, or digits in a string, as Unix seconds.
        ("bookings.0.start", 1773133200, "start: an instant is an ISO 8601 string"),
        ("passes.0.valid_until", "1773133200", "valid_until: an instant is an ISO 8601"),
        ("site.closures", [1766620800], "closures[0]: a date is an ISO 8601 calendar date"),
        ("site.closures", ["2026-12-25T00:00:00Z"], "closures[0]: a date is an ISO 8601"),
    ],
)
def test_invalid_datasets_are_refused_whole(path: str, value: Any, message: str) -> None:
    doc = _broken(path, value)
    with pytest.raises(DatasetError, match="invalid dataset") as info:
        parse_dataset(doc)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("bookings.0.grace_before_min", True),
        ("bookings.0.grace_after_min", "10"),
        ("members.0.staff", 1),
        ("members.0.extended_unlock", "yes"),
        ("plans.0.around_the_clock", "true"),
        ("version", True),
    ],
)
def test_a_number_or_flag_must_be_the_json_type_its_schema_names(path: str, value: Any) -> None:
    # Lax validation read `true` as one minute of grace and "yes" as staff.
    field = path.rsplit(".", 1)[-1]
    with pytest.raises(DatasetError, match=f"{field}: Input should be a valid"):
        parse_dataset(_broken(path, value))


def test_a_whole_number_written_with_a_fraction_is_that_number() -> None:
    # JSON Schema's "integer" takes 10.0; some JSON writers print whole numbers so.
    doc = _broken("bookings.0.grace_before_min", 10.0)
    doc["version"] = float(doc["version"])
    dataset = parse_dataset(json.dumps(doc))
    assert dataset.version == doc["version"]
    assert dataset.bookings[0].grace_before == 600


def test_a_dataset_document_naming_a_member_twice_is_refused() -> None:
    # Two JSON readers would see two datasets: one with member 0 staff, one without.
    text = json.dumps(base_dataset()).replace(
        '"status": ', '"staff": true, "staff": false, "status": ', 1
    )
    with pytest.raises(DatasetError, match=r"not JSON with unique members .*'staff' given twice"):
        parse_dataset(text)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("members.0.id", " ada"),
        ("credentials.0.value", "04000001 "),
        ("bookings.0.member_id", "m_active\n"),
        ("site.timezone", " Europe/London"),
    ],
)
def test_a_value_is_taken_as_written_in_a_change_as_in_a_snapshot_row(
    path: str, value: str
) -> None:
    # A delta's upsert once trimmed its strings and a snapshot's row did not:
    # " ada" was member "ada" by one route and refused by the other.
    doc = _broken(path, value)
    table, *index, field = path.split(".")
    data = doc[table][int(index[0])] if index else doc[table]
    change = {"op": "upsert", "entity": table.removesuffix("s"), "data": data}
    with pytest.raises(DatasetError, match=field):
        parse_changes([change])
    with pytest.raises(DatasetError, match=field):
        parse_dataset(doc)


def test_a_snapshot_row_takes_an_id_as_written_too() -> None:
    def members(member_id: str) -> bytes:
        row = [member_id, "Ada", "active", False, False]
        return zlib.compress(json.dumps({"table": "members", "rows": [row]}).encode())

    assert decode_part(members("ada"))[1][0][0] == "ada"
    with pytest.raises(DatasetError, match=r"members.rows\[0\]\[0\]"):
        decode_part(members(" ada"))


def test_a_pass_needs_somewhere_to_open() -> None:
    doc = _broken("passes.0.doors", [])
    doc["passes"][0]["door_groups"] = []
    with pytest.raises(DatasetError, match="at least one door or door group"):
        parse_dataset(doc)


def test_dataset_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset_file(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not JSON"):
        load_dataset_file(bad)


@pytest.mark.parametrize(
    ("kind", "raw", "canonical"),
    [
        (CredentialKind.NFC_UID, "04:a2:b3:c4", "04A2B3C4"),
        (CredentialKind.NFC_UID, " 04-A2-B3-C4-D5-E6-F7 ", "04A2B3C4D5E6F7"),
        (CredentialKind.WIEGAND, "012:00345", "12:345"),
        (CredentialKind.WIEGAND, "0099", "99"),
        (CredentialKind.APP_KEY, "A" * 43, "A" * 43),
    ],
)
def test_credential_values_are_canonical(kind: CredentialKind, raw: str, canonical: str) -> None:
    assert normalize(kind, raw) == canonical


def test_pins_are_never_stored_as_typed() -> None:
    read = parse_read("pin:123456", site_id="s")
    assert "123456" not in read.value
    assert read.value != parse_read("pin:123456", site_id="other").value
    with pytest.raises(CredentialFormatError, match="known site"):
        parse_read("pin:123456")
