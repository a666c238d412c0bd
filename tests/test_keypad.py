"""Keypad lockout after repeated wrong PINs."""

from __future__ import annotations

from gateway.core.keypad import KeypadGuard


def test_five_wrong_pins_lock_the_keypad_for_a_minute() -> None:
    guard = KeypadGuard(max_failures=5, window=300, lockout=60)
    assert [guard.failed("kp", t) for t in (0, 10, 20, 30)] == [False] * 4
    assert guard.allowed("kp", 35)
    assert guard.failed("kp", 40) is True
    assert not guard.allowed("kp", 41)
    assert not guard.allowed("kp", 99.9)
    assert guard.allowed("kp", 100)
    assert guard.allowed("other", 41)  # per reader


def test_old_failures_age_out_and_a_right_pin_clears_them() -> None:
    guard = KeypadGuard(max_failures=3, window=60, lockout=30)
    assert not guard.failed("kp", 0)
    assert not guard.failed("kp", 10)
    assert not guard.failed("kp", 100)  # the first two are out of the window
    assert not guard.failed("kp", 110)
    guard.succeeded("kp")
    assert not guard.failed("kp", 111)
    assert not guard.failed("kp", 112)
    assert guard.failed("kp", 113)
