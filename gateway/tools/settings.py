"""Changing a provisioned gateway's settings: a new release, checked before it is used.

Staff never edit ``/etc/doorgw/doorgw.toml`` in place: it is a link into
the current release (:mod:`gateway.tools.provision`), and ``sed -i`` would
replace the link with a file that later enrolments no longer change.
Instead :func:`set_setting` (``doorgw config set KEY VALUE``),
:func:`unset_setting` and :func:`edit_config` (``doorgw config edit``)
copy the current release, change its ``doorgw.toml``, run the full
preflight on the result (:mod:`gateway.tools.preflight`) and only then
switch ``current`` to it.  A change that does not pass switches nothing.

Keys are dotted: ``mqtt.heartbeat_seconds``, ``api.listen``,
``time.timezone``; a door or reader is named by its id
(``doors.front.unlock_seconds``) or its place (``doors[0].unlock_seconds``).
Values are TOML (``30``, ``true``, ``["a", "b"]``, ``"text"``); anything
that is not TOML is taken as a string (``0.0.0.0``).  Comments in
``doorgw.toml`` are not kept by ``set`` and ``unset`` (the file is
rewritten from its values; the previous release keeps the old text);
``edit`` keeps the file as the editor leaves it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from gateway.tools.preflight import preflight
from gateway.tools.provision import (
    ProvisionError,
    clean_stale,
    publish_release,
    share,
    stage,
    write_release_file,
)

_PART = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)(?:\[(\d+)\])?$")
#: Arrays of tables whose items are named by their ``id``.
_BY_ID = ("doors", "readers")


def parse_value(text: str) -> Any:
    """A command-line value: TOML if it parses as a TOML value, else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _locate(data: dict[str, Any], key: str, *, create: bool) -> tuple[dict[str, Any], str]:
    """The table holding the last part of ``key``, and that part."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ProvisionError(f"{key!r}: a setting is named like mqtt.heartbeat_seconds")
    table: dict[str, Any] = data
    i = 0
    while i < len(parts) - 1:
        m = _PART.match(parts[i])
        if m is None:
            raise ProvisionError(f"{key!r}: {parts[i]!r} is not a setting's name")
        name, index = m.group(1), m.group(2)
        item = table.get(name)
        if isinstance(item, list):
            if index is not None:
                if int(index) >= len(item):
                    raise ProvisionError(f"{key!r}: there are {len(item)} {name}")
                chosen = item[int(index)]
            elif name in _BY_ID and i + 1 < len(parts) - 1:
                i += 1
                wanted = parts[i]
                found = [x for x in item if isinstance(x, dict) and x.get("id") == wanted]
                if not found:
                    ids = ", ".join(str(x.get("id")) for x in item if isinstance(x, dict))
                    raise ProvisionError(f"{key!r}: no {name[:-1]} {wanted!r} (there is: {ids})")
                chosen = found[0]
            else:
                raise ProvisionError(f"{key!r}: say which of the {name}: {name}[0] or {name}.ID")
            if not isinstance(chosen, dict):
                raise ProvisionError(f"{key!r}: {name} holds no tables")
            table = chosen
        elif isinstance(item, dict):
            if index is not None:
                raise ProvisionError(f"{key!r}: {name} is a table, not a list")
            table = item
        elif item is None and create and index is None:
            table[name] = {}
            table = table[name]
        elif item is None:
            raise ProvisionError(f"{key!r}: there is no [{'.'.join(parts[: i + 1])}]")
        else:
            raise ProvisionError(f"{key!r}: {name} is a value, not a table")
        i += 1
    last = parts[-1]
    if _PART.match(last) is None or "[" in last:
        raise ProvisionError(f"{key!r}: {last!r} is not a setting's name")
    return table, last


def with_setting(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``data`` (a parsed config) with ``key`` set to ``value``."""
    table, last = _locate(data, key, create=True)
    table[last] = value
    return data


def without_setting(data: dict[str, Any], key: str) -> dict[str, Any]:
    """``data`` without ``key`` (back to its default)."""
    table, last = _locate(data, key, create=False)
    if last not in table:
        raise ProvisionError(f"{key!r} is not set")
    del table[last]
    return data


def _current_config(directory: Path) -> Path:
    link = directory / "doorgw.toml"
    if not link.is_symlink() or not (directory / "current").is_symlink():
        raise ProvisionError(
            f"{link} is not the link into the current release (made by `doorgw provision "
            "init`); if it was edited in place, move your file aside and restore the link "
            f"with `ln -sfn current/doorgw.toml {link}`"
        )
    return link


def _new_release(
    directory: Path, write: Callable[[Path], bool], *, keep_rejected: Path | None = None
) -> Path | None:
    """Stage a copy of the current release, let ``write`` change its doorgw.toml,
    check it, and make it current; None when ``write`` changed nothing.  A
    change that fails its check is copied to ``keep_rejected``, when given."""
    clean_stale(directory)
    current = _current_config(directory).resolve().parent
    staged = stage(directory)
    try:
        for item in current.iterdir():
            shutil.copy2(item, staged / item.name)
            share(staged / item.name, 0o640)
        if not write(staged / "doorgw.toml"):
            shutil.rmtree(staged)
            return None
        # What the current config already lacks (an [mqtt] before enrolment) is not
        # this change's doing: only problems it would bring block it.
        already = set(preflight(_current_config(directory)).problems)
        problems = [p for p in preflight(staged / "doorgw.toml").problems if p not in already]
        if problems:
            lines = "\n  ".join(problems)
            n = len(problems)
            kept = ""
            if keep_rejected is not None:
                shutil.copyfile(staged / "doorgw.toml", keep_rejected)
                kept = (
                    f"\nyour edit is kept in {keep_rejected}: go on from it with "
                    f"`doorgw config edit --from {keep_rejected}`"
                )
            raise ProvisionError(
                f"the new config has {n} problem{'s' if n != 1 else ''}, so nothing was "
                f"switched:\n  {lines}{kept}"
            )
        return publish_release(directory, staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _rewrite(change: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[Path], bool]:
    def write(path: Path) -> bool:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ProvisionError(f"the current config cannot be read: {exc}") from None
        before = tomli_w.dumps(data)
        text = tomli_w.dumps(change(data))
        if text == before:
            return False
        write_release_file(path, text.encode())
        return True

    return write


def set_setting(directory: Path, key: str, value: str) -> Path | None:
    """``doorgw config set``: the new release, or None if the value was already so."""
    parsed = parse_value(value)
    return _new_release(directory, _rewrite(lambda data: with_setting(data, key, parsed)))


def unset_setting(directory: Path, key: str) -> Path | None:
    """``doorgw config unset``: the new release (``key`` back to its default)."""
    return _new_release(directory, _rewrite(lambda data: without_setting(data, key)))


def default_editor() -> list[str]:
    """$VISUAL, $EDITOR, or Debian's sensible-editor, or vi."""
    for name in ("VISUAL", "EDITOR"):
        if os.environ.get(name):
            return shlex.split(os.environ[name])
    return ["sensible-editor"] if shutil.which("sensible-editor") else ["vi"]


def edit_config(directory: Path, editor: list[str], start: Path | None = None) -> Path | None:
    """``doorgw config edit``: edit a copy (of ``start``, default the current config);
    the new release, or None if unchanged."""

    def write(path: Path) -> bool:
        before = path.read_bytes()
        if start is not None:
            try:
                path.write_bytes(start.read_bytes())
            except OSError as exc:
                raise ProvisionError(f"{start}: cannot read: {exc.strerror}") from None
        try:
            done = subprocess.run([*editor, str(path)], check=False)  # noqa: S603 - staff's own
        except OSError as exc:
            raise ProvisionError(f"cannot run the editor {editor[0]!r}: {exc.strerror}") from None
        if done.returncode != 0:
            raise ProvisionError(
                f"the editor exited with status {done.returncode}; nothing changed"
            )
        after = path.read_bytes()
        if after == before:
            return False
        write_release_file(path, after)  # synced, and the group's, whatever the editor did
        return True

    return _new_release(directory, write, keep_rejected=directory / "doorgw.toml.rejected")
