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


class EagerWriteMixin:
    """For ``twisted.internet.abstract.FileDescriptor`` subclasses."""

    def _may_write_now(self) -> bool:
        """Whether bytes may go to the socket directly (e.g. after a handshake)."""
        return True

    def _nothing_buffered(self) -> bool:
        return not self._tempDataLen and len(self.dataBuffer) == self.offset

    def write(self, data: bytes) -> None:
        if (
            data
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and self._nothing_buffered()
            and self._may_write_now()
        ):
            written = self.writeSomeData(data)
            if isinstance(written, int):
                if written == len(data):
                    return
                data = data[written:]
            # An error is left for doWrite to meet again and report, from
            # the reactor rather than from inside the caller.
        super().write(data)
