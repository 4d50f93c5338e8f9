"""
One access-log line per request, in gmid's styles.

Every request becomes a ``twisted.logger`` event in namespace
``gemfcgi.access`` carrying its fields, so twistd's log shows it (as gmid's
``legacy`` line plus bytes sent and duration) and any observer can format
it. ``AccessLogWriter`` is such an observer: it writes the configured
``log`` style to the ``access`` file and/or syslog, as gmid does. Each
event names the service whose connection it is (``service``), so that
two services in one program each write their own requests only.

Styles, with gmid's fields; where a style has a size field it carries the
bytes sent, and the duration follows as a last field:

- ``legacy``: ``IP:PORT GET URL CODE META``
- ``common``: ``HOST IP - CN TIME "URL" CODE BYTES DURATION``
- ``combined``: ``IP - CN [TIME] "URL" CODE BYTES "-" "" DURATION``
- ``condensed``: ``RFC3339 IP CN HOST URL REQUEST_BYTES BYTES CODE META DURATION``

URL, META, HOST and CN are escaped (``textlog.printable``): a control
character, a format character such as a right-to-left override, or a
backslash shows as ``\\x1b``, ``\\u202e``, ``\\\\``, so a request cannot
write a terminal escape or a line of its own into the log.

TIME is ``dd/Mon/YYYY:HH:MM:SS +zzzz`` in local time, when the connection
was accepted: the line is written once the response has ended, but a long
download's line is dated when it was asked for, as a web server's is.
CN is the client certificate's common name or ``-``; DURATION is in
milliseconds (``12.3ms``), from the connection's accept to the end of the
response. It leaves out the wait for the client to close after it (the
linger): some clients keep the connection open until the server gives up on
them, and their requests would all read as the linger's length.
"""

from __future__ import annotations

import errno
import os
import stat
import syslog
import time
from dataclasses import dataclass
from typing import Any, Optional

from twisted.logger import ILogObserver, Logger
from zope.interface import implementer

from gemfcgi.config import model
from gemfcgi.syslogsend import SYSLOG_SOCKET, SyslogSender, sender_for
from gemfcgi.textlog import log_field, plural, printable, text_event

NAMESPACE = "gemfcgi.access"
log = Logger(namespace=NAMESPACE)
# What goes wrong with the access file is told in the server's log, not in it.
_log = Logger()

# A reader of the access file (a FIFO, a pipe to a log collector) that does
# not keep up: what is held for it in memory, and how soon it is offered
# again; beyond that, lines are dropped and counted. Waiting for it would
# stop the whole server: the reactor writes them.
HELD_FOR_READER = 1024 * 1024
OFFER_AGAIN = 0.2

FACILITIES = {
    "daemon": syslog.LOG_DAEMON,
    # Python's syslog module has no LOG_FTP; the number is the same everywhere.
    "ftp": getattr(syslog, "LOG_FTP", 11 << 3),
    "user": syslog.LOG_USER,
    **{f"local{i}": getattr(syslog, f"LOG_LOCAL{i}") for i in range(8)},
}


@dataclass
class AccessRecord:
    """What one request did, filled in as it goes."""

    client_ip: str = "-"
    client_port: int = 0
    # As the log shows it: escaped (``textlog.printable``) when it is set,
    # for every line that names the request.
    url: str = ""
    host: str = ""
    status: int = 0
    meta: str = ""
    request_bytes: int = 0
    bytes_sent: int = 0
    started: float = 0.0
    # When the whole response was handed to the connection; None while it
    # is still being written (and for good, if the client left mid-way).
    finished: Optional[float] = None
    common_name: str = "-"
    enabled: bool = True

    @property
    def client(self) -> str:
        if self.client_ip.startswith("unix"):
            return self.client_ip  # no port to show (it was logged as unix:0)
        return f"{self.client_ip}:{self.client_port}"


def emit(record: AccessRecord, now: float, service: object = None, site: object = None) -> None:
    """
    Publish the access event for ``record``, a request served by ``service``
    with the configuration of ``site``.

    Its text is the legacy line as it is (``textlog.text_event``), cheap
    for the twistd log to write, with the fields for other styles beside.
    """
    end = now if record.finished is None else record.finished
    duration_ms = (end - record.started) * 1000.0
    # What an application answered, escaped as the URL already is: no line
    # of the log is theirs to write.
    meta = printable(record.meta)
    # No request line came (a timeout, a busy server): a field all the same.
    url = record.url or "-"
    line = (
        f"{record.client} GET {url} {record.status} "
        f"{meta} {record.bytes_sent} {duration_ms:.1f}ms"
    )
    event = text_event(log, line)
    event.update(
        line=line,
        client=record.client,
        client_ip=record.client_ip,
        client_port=record.client_port,
        url=url,
        host=printable(record.host),
        status=record.status,
        meta=meta,
        request_bytes=record.request_bytes,
        bytes_sent=record.bytes_sent,
        duration_ms=duration_ms,
        started=record.started,
        common_name=log_field(record.common_name),
        service=service,
        site=site,
    )
    log.observer(event)


def _local_time(when: float, fmt: str) -> str:
    return time.strftime(fmt, time.localtime(when))


def format_line(style: str, event: dict[str, Any]) -> str:
    """A gmid-style access line for an access event."""
    # When the request came, not when its line is written (the event's
    # log_time): an event published by other code may lack it.
    when = event.get("started") or event.get("log_time") or time.time()
    duration = f"{event['duration_ms']:.1f}ms"
    cn = event["common_name"]
    if style == "common":
        return (
            f"{event['host'] or '-'} {event['client_ip']} - {cn} "
            f"{_local_time(when, '%d/%b/%Y:%H:%M:%S %z')} \"{event['url']}\" "
            f"{event['status']} {event['bytes_sent']} {duration}"
        )
    if style == "combined":
        return (
            f"{event['client_ip']} - {cn} [{_local_time(when, '%d/%b/%Y:%H:%M:%S %z')}] "
            f"\"{event['url']}\" {event['status']} {event['bytes_sent']} \"-\" \"\" {duration}"
        )
    if style == "condensed":
        stamp = _local_time(when, "%Y-%m-%dT%H:%M:%S%z")
        stamp = stamp[:-2] + ":" + stamp[-2:]
        return (
            f"{stamp} {event['client_ip']} {cn} {event['host'] or '-'} {event['url']} "
            f"{event['request_bytes']} {event['bytes_sent']} {event['status']} "
            f"{event['meta']} {duration}"
        )
    return f"{event['client']} GET {event['url']} {event['status']} {event['meta']}"


@implementer(ILogObserver)
class AccessLogWriter:
    """
    Writes access events to the configured file and/or syslog.

    Only the events of ``service`` are its own, when one is given, and of
    ``site`` (a configuration: requests in flight through a reload are
    written as their configuration says). ``reopen`` opens the file again,
    for log rotation (SIGUSR1).
    """

    def __init__(
        self,
        settings: model.LogSettings,
        path: Optional[str] = None,
        service: object = None,
        syslog_socket: str = SYSLOG_SOCKET,
        site: object = None,
        owner: Optional[tuple[int, int]] = None,
        reactor: Any = None,
    ) -> None:
        self.settings = settings
        self._reactor = reactor
        # Who a file made here belongs to (``open_for_lines``).
        self.owner = owner
        self.path = path if path is not None else settings.access
        self.service = service
        self.site = site
        # One os.write per line, on a descriptor opened for appending: a
        # line is in the file whole, or (a full disk) known not to be.
        self._fd: Optional[int] = None
        self._unwritten = 0
        self._torn = False
        # Lines a reader that does not keep up has yet to take, oldest first.
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._offer: Any = None
        self._syslog: Optional[SyslogSender] = None
        self.reopen()
        if settings.syslog:
            facility = FACILITIES.get(settings.facility, syslog.LOG_DAEMON)
            self._syslog = sender_for("gemfcgi", facility, syslog_socket)

    def reopen(self) -> bool:
        """
        Open the file by its path again; ``False`` if that failed.

        The new file is opened before the old one is closed: if it cannot
        be (a worker that has dropped its privileges may not create files
        in a directory only root may write), lines keep going to the file
        already open, and one error line says which file and why, rather
        than file logging stopping without a word. The first open, with no
        file to fall back on, raises.
        """
        if self.path is None:
            return True
        try:
            fd = open_for_lines(self.path, self.owner)
        except OSError as error:
            if self._fd is None:
                raise
            _log.error(
                "cannot reopen the access log {path}: {reason}; "
                "still writing to the file opened before",
                path=self.path,
                reason=error.strerror or str(error),
            )
            return False
        previous, self._fd = self._fd, fd
        self._torn = False
        if previous is not None:
            os.close(previous)
        return True

    def _write(self, data: bytes) -> None:
        """
        Append one line. A file that cannot take it (a full disk, an I/O
        error) is said once, with the reason, and again when it takes lines
        again, with how many it did not: not a traceback per request.

        A reader that takes no more for now (a FIFO, a pipe) gets the line
        later: it is held, up to ``HELD_FOR_READER``, and offered again
        every ``OFFER_AGAIN`` seconds.
        """
        if self._held:
            self._hold(data)
            return
        if self._torn:
            # The last line went in partly: this one starts on a line of its own.
            data = b"\n" + data
        try:
            while data:
                written = os.write(self._fd, data)
                self._torn = written < len(data)
                data = data[written:]
        except BlockingIOError:
            # The rest of the line is the reader's to take next: not torn.
            self._torn = False
            self._hold(data)
            return
        except OSError as error:
            self._lost(error.strerror or str(error))
            return
        self._written_again()

    def _lost(self, reason: str) -> None:
        if not self._unwritten:
            _log.error(
                "cannot write to the access log {path}: {reason}; "
                "its lines are lost until it can be written again",
                path=self.path,
                reason=reason,
            )
        self._unwritten += 1

    def _hold(self, data: bytes) -> None:
        if self._held_bytes + len(data) > HELD_FOR_READER:
            self._lost(f"its reader has not taken the last {self._held_bytes // 1024} KiB")
            return
        self._held.append(data)
        self._held_bytes += len(data)
        if self._offer is None:
            if self._reactor is None:
                from twisted.internet import reactor

                self._reactor = reactor
            self._offer = self._reactor.callLater(OFFER_AGAIN, self._offer_held)

    def _offer_held(self) -> None:
        """Write what is held, as much as the reader takes now."""
        self._offer = None
        held, self._held, self._held_bytes = self._held, [], 0
        if self._fd is None:
            return
        # In order: once one is held again, ``_write`` holds those after it.
        for data in held:
            self._write(data)

    def _written_again(self) -> None:
        if self._unwritten:
            _log.info(
                "the access log {path} is written again; {count} {lines} could not be",
                path=self.path,
                count=self._unwritten,
                lines=plural(self._unwritten, "line"),
            )
            self._unwritten = 0

    def close(self) -> None:
        """
        Close the file, after a last offer of the lines held for its reader;
        what it does not take then is lost, and said with the lines that
        could not be written before (a stop or a reload dropped them without
        a word).
        """
        if self._offer is not None and self._offer.active():
            self._offer.cancel()
        self._offer = None
        if self._held:
            self._offer_held()
            if self._offer is not None and self._offer.active():
                self._offer.cancel()
            self._offer = None
            self._unwritten += len(self._held)
            self._held, self._held_bytes = [], 0
        if self._unwritten:
            _log.error("the access log {path} is closed with {count} {lines} not written: its reader "
                       "took no more, or it could not be written", path=self.path, count=self._unwritten,
                       lines=plural(self._unwritten, "line"))
            self._unwritten = 0
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        # The syslog sender is the process's, kept for the next writer.
        self._syslog = None

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") != NAMESPACE or "status" not in event:
            return
        if self.service is not None and event.get("service") is not self.service:
            return
        if self.site is not None and event.get("site") is not self.site:
            return
        line = format_line(self.settings.style, event)
        if self._fd is not None:
            self._write((line + "\n").encode("utf-8", "surrogateescape"))
        if self._syslog is not None:
            self._syslog.send(syslog.LOG_NOTICE, line)


# Why an access file cannot be a unix socket (``/dev/stdout`` under systemd's journal).
UNIX_SOCKET_LOG = "a unix socket, which cannot be opened as a file (send the lines to syslog)"


def open_for_lines(path: str, owner: Optional[tuple[int, int]] = None) -> int:
    """
    ``path`` opened to append lines to, created if need be. A FIFO is
    opened without waiting for a reader, which would freeze the server as
    it starts or reopens its log: one that no process reads is refused.

    A file made here goes to ``owner`` (uid, gid): a worker opens its access
    file as root, before it becomes its ``user``, and reopens it by its path
    at each SIGUSR1 as that user. A file that was there keeps its owner.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        if owner is None:
            fd = os.open(path, flags, 0o600)
        else:
            try:
                fd = os.open(path, flags | os.O_EXCL, 0o600)
            except FileExistsError:
                fd = os.open(path, flags, 0o600)
            else:
                _give(fd, owner, path)
    except OSError as error:
        if error.errno == errno.ENXIO:
            raise OSError(error.errno, _why_not_open(path) or error.strerror, path) from None
        raise
    if stat.S_ISREG(os.fstat(fd).st_mode):
        # A file takes each line whole, or fails (a full disk).
        os.set_blocking(fd, True)
    # Anything else (a FIFO, a pipe, a terminal) stays non-blocking: a
    # reader that stalls would otherwise stop the whole server at its next
    # line; the writer holds lines for it, then drops them.
    return fd


def _give(fd: int, owner: tuple[int, int], path: str) -> None:
    try:
        os.fchown(fd, *owner)
    except OSError as error:
        # Said now; the reopen at SIGUSR1 will say it again, as it fails.
        _log.warn("cannot give the access log {path} to uid {uid}: {reason}", path=path,
                  uid=owner[0], reason=error.strerror or str(error))


def _why_not_open(path: str) -> Optional[str]:
    """What a path that ``open`` found no device behind is (ENXIO)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO that no process reads"
    if stat.S_ISSOCK(mode):
        return UNIX_SOCKET_LOG
    return None
