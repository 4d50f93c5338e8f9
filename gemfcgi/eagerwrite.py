"""
Transports that send at once when nothing is queued.

Twisted's ``write`` only queues: the bytes leave on the next reactor turn,
after ``epoll_ctl`` has added write interest, and another ``epoll_ctl``
removes it once the queue is empty. A FastCGI request nearly always
fits the socket whole, so those two system calls and the
turn are pure cost. ``EagerWriteMixin`` tries the socket first and queues
only what it did not take; a queue that is not empty keeps its order.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet import abstract


class EagerWriteMixin:
    """For ``twisted.internet.abstract.FileDescriptor`` subclasses."""

    def _may_write_now(self) -> bool:
        """Whether bytes may go to the socket directly (e.g. after a handshake)."""
        return True

    def _nothing_buffered(self) -> bool:
        return not self._tempDataLen and len(self.dataBuffer) == self.offset

    def _send_or_queue(self, data: bytes) -> Optional[Exception]:
        """
        Send what the socket takes now (if nothing is queued ahead of it)
        and queue the rest; the error if sending failed, with nothing queued.
        """
        if self._nothing_buffered():
            written = self.writeSomeData(data)
            if not isinstance(written, int):
                return written
            if written == len(data):
                return None
            data = data[written:]
        # Twisted's buffer: write interest, and producers paused when full.
        abstract.FileDescriptor.write(self, data)
        return None

    def write(self, data: bytes) -> None:
        if (
            data
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and self._may_write_now()
            and self._send_or_queue(data) is None
        ):
            return
        # Not now, or an error: doWrite meets it again and reports it, from
        # the reactor rather than from inside the caller.
        super().write(data)
