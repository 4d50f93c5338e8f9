"""
Giving memory the server no longer uses back to the system.

glibc's malloc keeps the pages that freed objects leave behind, for the
next allocation: after a burst of connections, or a start that read
certificates and a large configuration, the resident size stays near its
peak though Python has freed it all (100 connections at once leave about
5 MB, 400 about 20 MB). ``malloc_trim(0)`` returns the free pages at the
top of each arena and those inside it. It advises the kernel of every
free page, returned before or not, on the reactor's thread: about 0.25 ms
with little to return and 2 ms after a burst that left 15 MB, and the
pages returned are faulted in again when used. So it is done once the
reactor runs, and then a few seconds after connections have ended: at
most once per ``TRIM_AFTER`` seconds under load (well under a tenth of a
percent of the time), never on a server nobody talks to.

Where the C library has no ``malloc_trim`` (musl, macOS), nothing is done.
"""

from __future__ import annotations

import ctypes
from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

# Seconds from the first connection to end after a trim to the next trim.
TRIM_AFTER = 5.0


def libc_malloc_trim() -> Optional[Callable[[], int]]:
    """``malloc_trim(0)`` of this process's C library, or ``None`` if it has none."""
    try:
        # The symbols this process has loaded, the C library's among them
        # (find_library would run ldconfig to name it).
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryReturner:
    """Trims the C heap once the reactor runs, and after connections end."""

    def __init__(
        self,
        clock: IReactorTime,
        trim: Optional[Callable[[], int]] = None,
        after: float = TRIM_AFTER,
    ) -> None:
        self.clock = clock
        self.trim = trim
        self.after = after
        self._pending: Optional[IDelayedCall] = None

    def now(self) -> None:
        """Trim at the next reactor turn (after a start or a reload has freed what it read)."""
        self._schedule(0)

    def soon(self) -> None:
        """A connection ended: trim in ``after`` seconds, unless a trim is on its way."""
        if self._pending is None:
            self._schedule(self.after)

    def stop(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None

    def _schedule(self, delay: float) -> None:
        if self.trim is None:
            return
        if self._pending is not None and self._pending.active():
            if self._pending.getTime() <= self.clock.seconds() + delay:
                return
            self._pending.cancel()
        self._pending = self.clock.callLater(delay, self._trim)

    def _trim(self) -> None:
        self._pending = None
        assert self.trim is not None
        self.trim()
