"""Deadlines: timeouts that fire never early and at most one RESOLUTION late."""

from __future__ import annotations

from twisted.internet.task import Clock

from gemfcgi.deadlines import RESOLUTION, Deadlines, OneTimeout, deadlines_for


class Owner:
    def __init__(self, deadlines: Deadlines, clock: Clock, then=None) -> None:
        self.deadlines, self.clock, self.then = deadlines, clock, then
        self.fired_at: list[float] = []

    def deadline_passed(self) -> None:
        self.fired_at.append(self.clock.seconds())
        if self.then is not None:
            self.then(self)


def run_until(clock: Clock, until: float) -> None:
    """Advance as a reactor's time flows: in small steps, not one jump."""
    while clock.seconds() < until:
        clock.advance(0.01)


def test_a_deadline_fires_once_never_early_and_at_most_a_resolution_late():
    clock = Clock()
    deadlines = Deadlines(clock)
    owners = []
    for start, seconds in [(0.0, 2.0), (0.13, 1.0), (0.4, 0.3)]:
        run_until(clock, start)
        owner = Owner(deadlines, clock)
        deadlines.set(owner, seconds)
        owners.append((owner, clock.seconds() + seconds))
    run_until(clock, 5)
    for owner, due in owners:
        assert len(owner.fired_at) == 1
        assert due <= owner.fired_at[0] <= due + RESOLUTION + 0.011


def test_set_again_moves_the_deadline_and_clear_removes_it():
    clock = Clock()
    deadlines = Deadlines(clock)
    moved, cleared = Owner(deadlines, clock), Owner(deadlines, clock)
    deadlines.set(moved, 1)
    deadlines.set(cleared, 1)
    deadlines.set(moved, 3)
    deadlines.clear(cleared)
    run_until(clock, 2)
    assert moved.fired_at == [] and cleared.fired_at == []
    run_until(clock, 4)
    assert len(moved.fired_at) == 1 and 3 <= moved.fired_at[0]
    assert cleared.fired_at == []


def test_an_owner_may_set_its_next_deadline_when_told():
    clock = Clock()
    deadlines = Deadlines(clock)
    again = Owner(deadlines, clock, then=lambda owner: len(owner.fired_at) < 3 and deadlines.set(owner, 1))
    deadlines.set(again, 1)
    run_until(clock, 10)
    assert len(again.fired_at) == 3


def test_one_failing_owner_does_not_keep_the_others_from_firing():
    clock = Clock()
    deadlines = Deadlines(clock)

    def fail(owner):
        raise RuntimeError("boom")

    failing, other = Owner(deadlines, clock, then=fail), Owner(deadlines, clock)
    deadlines.set(failing, 1)
    deadlines.set(other, 1)
    run_until(clock, 2)
    assert len(failing.fired_at) == 1 and len(other.fired_at) == 1
    assert len(deadlines) == 0


def test_nothing_is_scheduled_while_no_deadline_is_set():
    clock = Clock()
    deadlines = Deadlines(clock)
    assert clock.getDelayedCalls() == []
    owner = Owner(deadlines, clock)
    deadlines.set(owner, 1)
    assert len(clock.getDelayedCalls()) == 1
    run_until(clock, 2)
    assert clock.getDelayedCalls() == []


def test_each_clock_has_one_set_of_deadlines():
    first, second = Clock(), Clock()
    assert deadlines_for(first) is deadlines_for(first)
    assert deadlines_for(first) is not deadlines_for(second)


class Waiter(OneTimeout):
    def __init__(self, clock: Clock) -> None:
        self._deadlines = deadlines_for(clock)
        self.happened: list[str] = []


def test_one_timeout_runs_the_action_of_its_latest_phase_only():
    clock = Clock()
    waiter = Waiter(clock)
    waiter._arm(5, lambda: waiter.happened.append("handshake"))
    run_until(clock, 1)
    waiter._arm(2, lambda: waiter.happened.append("request"))  # the next phase
    run_until(clock, 10)
    assert waiter.happened == ["request"]
    assert len(waiter._deadlines) == 0


def test_one_timeout_disarmed_leaves_nothing_behind():
    clock = Clock()
    waiter = Waiter(clock)
    waiter._arm(5, lambda: waiter.happened.append("linger"))
    waiter._disarm()
    assert len(waiter._deadlines) == 0
    run_until(clock, 10)
    assert waiter.happened == []
    waiter._disarm()  # twice is harmless
