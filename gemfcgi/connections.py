"""
The connections a server holds, so that a stop can wait for them.

A graceful stop closes the listeners first, then waits here until every
connection has finished (or the drain timeout passes and the rest are
aborted): requests in flight are never cut short by a stop or a reload.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime


class ConnectionTracker:
    def __init__(self) -> None:
        self.active: set[Any] = set()
        self._waiters: list[Deferred] = []

    def __len__(self) -> int:
        return len(self.active)

    def add(self, connection: Any) -> None:
        self.active.add(connection)

    def remove(self, connection: Any) -> None:
        self.active.discard(connection)
        if not self.active:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(True)

    def drain(self, clock: IReactorTime, timeout: float) -> Deferred:
        """
        Fires with ``True`` once no connection is left, or ``False`` after
        ``timeout`` seconds, when the stragglers are aborted.
        """
        if not self.active:
            return succeed(True)
        waiter: Deferred = Deferred()
        self._waiters.append(waiter)

        def give_up() -> None:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                for connection in list(self.active):
                    connection.transport.abortConnection()
                waiter.callback(False)

        timer = clock.callLater(timeout, give_up)

        def done(result: bool) -> bool:
            if timer.active():
                timer.cancel()
            return result

        return waiter.addBoth(done)
