"""
Connection and FastCGI request timeouts, checked a few times a second.

Every Gemini connection arms a timeout when it opens, moves it when the
handshake completes, drops it when the request is in, and arms another for
the close; a FastCGI request arms one when its backend connects and moves
it at the header and at every body record. Twisted's ``callLater`` would
make each of those a ``DelayedCall`` in the reactor's heap, which keeps its
order with comparisons written in Python and is cleared of cancelled calls
by rebuilding it. Under load that cost a connection about 20 microseconds
of CPU, more than its whole request line parsing and static file handling.

Here a deadline is one dictionary entry, and a single reactor call per
clock, running only while some deadline is set, fires those that have
passed every ``RESOLUTION`` seconds. A timeout therefore fires between its
time and ``RESOLUTION`` later, never early; the timeouts it serves are
seconds long.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Optional, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

# How often passed deadlines are looked for, in seconds.
RESOLUTION = 0.25


class Timed(Protocol):
    """What a deadline belongs to: told once its deadline has passed."""

    def deadline_passed(self) -> None: ...


class Deadlines:
    """The deadlines of one clock; see the module's doc."""

    def __init__(self, clock: IReactorTime, resolution: float = RESOLUTION) -> None:
        self.clock = clock
        self.resolution = resolution
        self._due: dict[Timed, float] = {}
        self._check: Optional[IDelayedCall] = None

    def __len__(self) -> int:
        return len(self._due)

    def set(self, owner: Timed, seconds: float) -> None:
        """``owner.deadline_passed()`` in ``seconds`` (replacing its earlier deadline)."""
        self._due[owner] = self.clock.seconds() + seconds
        if self._check is None:
            self._check = self.clock.callLater(self.resolution, self._fire_passed)

    def clear(self, owner: Timed) -> None:
        self._due.pop(owner, None)

    def left(self, owner: Timed) -> Optional[float]:
        """Seconds until ``owner``'s deadline (``None`` if it has none)."""
        due = self._due.get(owner)
        return None if due is None else due - self.clock.seconds()

    def _fire_passed(self) -> None:
        self._check = None
        now = self.clock.seconds()
        passed = [owner for owner, deadline in self._due.items() if deadline <= now]
        for owner in passed:
            del self._due[owner]
        for owner in passed:
            try:
                owner.deadline_passed()  # which may set a new one
            except Exception:
                log.failure("a timeout of {owner!r} failed", owner=owner)
        if self._due and self._check is None:
            self._check = self.clock.callLater(self.resolution, self._fire_passed)


class OneTimeout:
    """
    A mixin for what waits on one thing at a time (a connection, a FastCGI
    request): a single deadline on ``self._deadlines``, moved from phase to
    phase, with the action its phase chose.
    """

    _deadlines: Deadlines
    _on_timeout: Optional[Callable[[], None]] = None

    def _arm(self, seconds: float, action: Callable[[], None]) -> None:
        self._on_timeout = action
        self._deadlines.set(self, seconds)

    def deadline_passed(self) -> None:
        action, self._on_timeout = self._on_timeout, None
        if action is not None:
            action()

    def _disarm(self) -> None:
        if self._on_timeout is not None:
            self._on_timeout = None
            self._deadlines.clear(self)


_BY_CLOCK: "weakref.WeakKeyDictionary[Any, Deadlines]" = weakref.WeakKeyDictionary()


def deadlines_for(clock: IReactorTime) -> Deadlines:
    """The one ``Deadlines`` of ``clock`` (the reactor, or a test's ``Clock``)."""
    deadlines = _BY_CLOCK.get(clock)
    if deadlines is None:
        deadlines = _BY_CLOCK[clock] = Deadlines(clock)
    return deadlines
