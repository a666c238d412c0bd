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


def test_a_lockout_and_the_count_so_far_survive_a_restart_never_longer() -> None:
    guard = KeypadGuard(max_failures=3, window=300, lockout=60)
    for t in (100.0, 110.0, 120.0):
        guard.failed("kp-a", t)  # locked until 180 (monotonic)
    guard.failed("kp-b", 115.0)
    saved = guard.export(now=130.0, wall=1_000_130.0)
    assert saved == {
        "kp-a": ((), 1_000_180.0),
        "kp-b": ((1_000_115.0,), None),
    }
    # Back up 20 s later, on a new monotonic clock.
    again = KeypadGuard(max_failures=3, window=300, lockout=60)
    again.restore(saved, now=5.0, wall=1_000_150.0)
    assert not again.allowed("kp-a", 34.0)  # 30 s of the lockout were left
    assert again.allowed("kp-a", 35.0)
    assert again.failed("kp-b", 10.0) is False  # the second of three
    assert again.failed("kp-b", 11.0) is True
    # A wall clock stepped back cannot stretch a lockout past its length.
    stepped = KeypadGuard(max_failures=3, window=300, lockout=60)
    stepped.restore(saved, now=0.0, wall=0.0)
    assert stepped.allowed("kp-a", 60.0)
