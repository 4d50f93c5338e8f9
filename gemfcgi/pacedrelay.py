"""
What the FastCGI relay and the proxy relay share: a reply read from a
backend connection and written to a Gemini client at the client's pace.

``PacedRelay`` is the push producer a Gemini transport pauses when its
client reads slowly: a pause stops reading the backend socket, so a reply of
any size costs a bounded amount of memory. The reply's header is decided by
a reader (``feed`` bytes in, a decision out); once it is relayed, the bytes
that follow are body, written through ``client_write``. One timer covers
the backend: until the header, and between body bytes while the client is
reading, never while it is paused (a slow client is not a stalled backend).

Subclasses say what a fault is (``_fail`` and the two ``Fault`` members it
is given here) and how a header is relayed (``_relay_header``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet import error as twisted_error
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from gemfcgi.deadlines import OneTimeout
from gemfcgi.gemini.reply import ReplyError

if TYPE_CHECKING:
    from gemfcgi.server import GeminiProtocol

# In place of a fault's detail that quotes what a backend sent, for a
# request under 'log off': the reply may echo the request's path or query.
UNSHOWN_REPLY = "what it sent is not shown (log off)"


def twisted_connect_timeout(failure: Failure) -> bool:
    """
    Whether a connect failed by Twisted's own connect timeout ("User
    timeout caused connection failure"), which races a relay's timer of
    the same length: a relay says it in the timer's words.
    """
    return bool(failure.check(twisted_error.TimeoutError)) and \
        failure.getErrorMessage().startswith("User timeout caused connection failure")


@implementer(IPushProducer)
class PacedRelay(OneTimeout):
    """The reply side of a relay; see the module's doc."""

    # The subclass's faults for a header its reader refuses and for a wait
    # that timed out.
    BAD_REPLY: Any
    REPLY_TIMEOUT: Any

    client: "GeminiProtocol"
    timeouts: Any  # with ``reply``, in seconds
    finished: bool = False
    _paused: bool = False
    # The backend is not read for a reason of the relay's own (a FastCGI
    # backend's STDERR beyond its pace), whatever the client does.
    _held: bool = False
    # The backend connection's protocol, once connected; ``None`` again once closed.
    _protocol: Any = None
    # Decides the header; ``None`` once it is relayed.
    _reader: Optional[Any] = None

    def _fail(self, fault: Any, detail: str) -> None:
        raise NotImplementedError

    def _relay_header(self, reply: Any) -> None:
        raise NotImplementedError

    def reply_data(self, data: bytes) -> None:
        """Reply bytes from the backend: header first, then body."""
        if self._reader is None:
            self.client.client_write(data)
            if not self._paused:
                self._arm(self.timeouts.reply, self._reply_timed_out)
            return
        decision = self._reader.feed(data)
        if decision is None:
            return
        if isinstance(decision, ReplyError):
            self._fail(self.BAD_REPLY, decision.message)
            return
        self._reader = None
        self._relay_header(decision)

    def _reply_timed_out(self) -> None:
        note = self._timeout_note()
        if self._reader is not None:
            self._fail(self.REPLY_TIMEOUT, f"no header after {self.timeouts.reply:g} s{note}")
        else:
            self._fail(self.REPLY_TIMEOUT, f"no body data for {self.timeouts.reply:g} s{note}")

    def _timeout_note(self) -> str:
        """What the relay itself did to the wait, said after a reply timeout's message."""
        return ""

    # -- IPushProducer, driven by the Gemini transport ---------------------

    def pauseProducing(self) -> None:
        self._paused = True
        if self._protocol is not None:
            self._protocol.transport.pauseProducing()
        if self._reader is None:
            # A client that reads slowly is not a backend that stalls.
            self._disarm()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._protocol is not None and not self._held:
            self._protocol.transport.resumeProducing()
        if self._reader is None:
            self._arm(self.timeouts.reply, self._reply_timed_out)

    def stopProducing(self) -> None:
        raise NotImplementedError

    def _arm(self, seconds: float, action: Callable[[], None]) -> None:
        if not self.finished:
            super()._arm(seconds, action)
