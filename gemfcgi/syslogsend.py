"""
Lines to the local syslog daemon, the way the C library's ``syslog()``
writes them, without its process-wide state.

The C library keeps one identity and facility per process (``openlog``):
a server embedded in a program of its own would take the program's syslog
name over, and the program's ``openlog`` would take the server's. Here
each sender has its own socket, name and facility.

A line is ``<PRIORITY>Mmm dd hh:mm:ss NAME[PID]: TEXT`` (RFC 3164), sent
as one datagram to ``/dev/log`` (journald's and rsyslog's socket). The
socket is connected when the sender is made, so that a server that then
enters a chroot, where there is no ``/dev/log``, keeps it. It does not
block: should the daemon fall behind, lines are dropped rather than the
server stalling with them, and the text log says so as the spell begins,
and how many lines it cost once it ends. A daemon that restarted is
reconnected to at the next line; where there is none (a container without
syslog), a connect is tried at most once a second, not for every line.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import Callable, Optional

from twisted.logger import Logger

from gemfcgi.textlog import plural

log = Logger()

SYSLOG_SOCKET = "/dev/log"
# Seconds between two tries to connect to a socket nobody listens on.
RECONNECT_EVERY = 1.0
# The warnings of a daemon that falls behind and catches up, at most once in this.
REPORT_EVERY = 60.0


_senders: dict[tuple[str, int, str], "SyslogSender"] = {}

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def timestamp(when: float) -> str:
    """``Mmm dd hh:mm:ss`` in local time and English whatever the locale, as syslog parses it."""
    moment = time.localtime(when)
    return f"{_MONTHS[moment.tm_mon - 1]} {moment.tm_mday:2d} {time.strftime('%H:%M:%S', moment)}"


def sender_for(name: str, facility: int, path: str = SYSLOG_SOCKET) -> "SyslogSender":
    """
    This process's sender for ``name`` and ``facility`` to ``path``. A reload
    builds a new access log, which keeps the connection and what the old
    one knew of the daemon: its outage is said once, and its count of
    dropped lines runs on.
    """
    key = (name, facility, path)
    sender = _senders.get(key)
    if sender is None:
        sender = _senders[key] = SyslogSender(name, facility, path)
    return sender


class SyslogSender:
    """
    One name and facility's lines to the syslog socket at ``path``.

    ``clock`` (seconds, monotonic) paces the connects to a socket nobody
    listens on. When lines stop getting through, one warning says why, and
    one more says how many were lost once they get through again; each at
    most once in ``REPORT_EVERY`` seconds, the count carried over meanwhile.
    """

    def __init__(
        self,
        name: str,
        facility: int,
        path: str = SYSLOG_SOCKET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.facility = facility
        self.path = path
        self.clock = clock
        self.dropped = 0
        # Lines are being dropped now; when the next warning and the next
        # count of dropped lines may be said.
        self._losing = False
        self._next_warning = float("-inf")
        self._next_report = float("-inf")
        self._socket: Optional[socket.socket] = None
        self._next_try = float("-inf")
        self._why_not = ""
        self._connect()

    def _connect(self) -> bool:
        self.close()
        now = self.clock()
        if now < self._next_try:
            return False
        sock: Optional[socket.socket] = None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(self.path)
        except OSError as error:
            # No daemon (ENOENT, ECONNREFUSED), or no descriptor left.
            if sock is not None:
                sock.close()
            self._next_try = now + RECONNECT_EVERY
            self._why_not = error.strerror or str(error)
            return False
        self._socket = sock
        return True

    def send(self, priority: int, text: str) -> None:
        """Send one line now, or count it as dropped: this never blocks, nor raises."""
        data = f"<{self.facility | priority}>{timestamp(time.time())} {self.name}[{os.getpid()}]: {text}"
        encoded = data.encode("utf-8", "replace")
        sent = self._deliver(encoded)
        if sent is None and self._connect():
            # The daemon went away (restarted): once more, on a new connection.
            sent = self._deliver(encoded)
        if not sent:
            if not self._losing:
                self._losing = True
                if self.clock() >= self._next_warning:
                    # A daemon behind under load comes and goes many times
                    # a minute: said once in a while, not each time.
                    self._next_warning = self.clock() + REPORT_EVERY
                    log.warn(
                        "syslog: access lines do not reach {path} ({reason}); they are dropped "
                        "until it takes them again",
                        path=self.path,
                        reason=self._why_not,
                    )
            self.dropped += 1
            return
        self._losing = False
        if self.dropped and self.clock() >= self._next_report:
            self._next_report = self.clock() + REPORT_EVERY
            log.info(
                "syslog: access lines reach {path} again; {count} dropped",
                path=self.path,
                count=f"{self.dropped} {plural(self.dropped, 'line')}",
            )
            self.dropped = 0

    def _deliver(self, data: bytes) -> Optional[bool]:
        """``True`` if sent, ``False`` if the daemon is behind, ``None`` if the connection is gone."""
        if self._socket is None:
            return None
        try:
            self._socket.send(data)
        except BlockingIOError:
            self._why_not = "the daemon is behind"
            return False
        except OSError as error:
            self._why_not = error.strerror or str(error)
            if error.errno == errno.EMSGSIZE:
                return False
            self.close()
            return None
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
