"""Keypad lockout: wrong PINs per keypad, per door and per site, cleared only by time."""

from __future__ import annotations

from gateway.core.keypad import KeypadGuard, Lockout


def test_five_wrong_pins_lock_the_keypad_for_a_minute() -> None:
    guard = KeypadGuard()
    results = [guard.failed("kp", "front", float(t)) for t in range(5)]
    assert results[:4] == [None] * 4
    # One keypad at its door: the door's budget is spent with it (the widest is said).
    assert results[4] == Lockout("door:front", 60.0, 5)
    assert not guard.allowed("kp", "front", 30.0)
    assert guard.locked_for("kp", "front", 30.0) == 34.0
    assert guard.allowed("kp", "front", 64.0)


def test_wrong_pins_expire_with_time_only_a_right_pin_does_not_clear_them() -> None:
    guard = KeypadGuard()
    # Four guesses, the guesser's own right PIN (nothing to report), four more:
    # the fifth wrong one within five minutes locks the keypad all the same.
    for t in range(4):
        guard.failed("kp", "front", float(t))
    assert guard.failed("kp", "front", 10.0) is not None
    # Spread out past the window, they never add up.
    calm = KeypadGuard()
    assert all(calm.failed("kp", "front", t * 100.0) is None for t in range(20))


def test_keypads_at_one_door_share_a_budget_and_the_site_has_one_too() -> None:
    guard = KeypadGuard(max_failures=5, site_failures=8)
    for t in range(4):
        guard.failed("kp-a", "front", float(t))
    lock = guard.failed("kp-b", "front", 4.0)  # the door's fifth, on its other keypad
    assert lock is not None
    assert lock.scope == "door:front"
    assert not guard.allowed("kp-a", "front", 5.0)
    assert guard.allowed("kp-c", "back", 5.0)
    # Going from door to door: the site's budget locks every keypad.
    for t, door in enumerate(["back", "side", "back"], start=5):
        last = guard.failed(f"kp-{door}", door, float(t))
    assert last is not None
    assert last.scope == "site"
    assert not guard.allowed("kp-elsewhere", "roof", 9.0)


def test_lockouts_escalate_while_the_guessing_goes_on() -> None:
    guard = KeypadGuard(max_failures=2, site_failures=1000, lockout=60, max_lockout=3600)
    seconds = []
    now = 0.0
    for _ in range(8):
        guard.failed("kp", "front", now)
        lock = guard.failed("kp", "front", now)
        assert lock is not None
        seconds.append(lock.seconds)
        now += lock.seconds
    assert seconds == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    # A day without a lockout: back to a minute.
    now += 86401
    guard.failed("kp", "front", now)
    lock = guard.failed("kp", "front", now)
    assert lock is not None
    assert lock.seconds == 60


def test_a_lockout_and_the_count_so_far_survive_a_restart_never_longer() -> None:
    guard = KeypadGuard(max_failures=3, window=300, lockout=60)
    for t in (100.0, 110.0, 120.0):
        guard.failed("kp-a", "front", t)  # keypad:kp-a and door:front locked until 180
    guard.failed("kp-b", "back", 115.0)
    saved = guard.export(now=130.0, wall=1_000_130.0)
    assert saved["keypad:kp-a"] == ((), 1_000_180.0, (1_000_180.0,))
    assert saved["keypad:kp-b"] == ((1_000_115.0,), None, ())
    # Back up 20 s later, on a new monotonic clock.
    again = KeypadGuard(max_failures=3, window=300, lockout=60)
    again.restore(saved, now=5.0, wall=1_000_150.0)
    assert not again.allowed("kp-a", "front", 34.0)  # 30 s of the lockout were left
    assert again.allowed("kp-a", "front", 35.0)
    assert again.failed("kp-b", "back", 10.0) is None  # the second of three
    assert again.failed("kp-b", "back", 11.0) is not None
    # The earlier lockout still counts: the next one at kp-a is doubled.
    for t in (40.0, 41.0):
        again.failed("kp-a", "front", t)
    lock = again.failed("kp-a", "front", 42.0)
    assert lock is not None
    assert lock.seconds == 120
    # A wall clock stepped back cannot stretch a lockout past its length.
    stepped = KeypadGuard(max_failures=3, window=300, lockout=60)
    stepped.restore(saved, now=0.0, wall=0.0)
    assert stepped.allowed("kp-a", "front", 3600.0)
