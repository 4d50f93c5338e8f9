"""
twistd's text log, line for line, at a lower cost per event.

Every request ends in an access event, and twistd's default observer
(``textFileLogObserver``) builds a timezone and a datetime to format each
event's timestamp and runs the format-string machinery even for a format
without fields. Under load that cost about 70 microseconds a request, an
eighth of its CPU time. This observer writes the same bytes: the timestamp
of each second is formatted once, and events whose text is final
(``text_event``: access lines, and the workers' lines a prefork parent
relays) skip the formatter. Every other event goes through Twisted's own
formatting.
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import stat
import sys
import time
from typing import IO, Any, Callable, Mapping, Optional

from twisted.application.service import MultiService, Service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile


def text_event(logger: Logger, text: str, level: LogLevel = LogLevel.info) -> dict[str, Any]:
    """
    An event whose text is ``text`` as it is, for lines logged per request.

    ``format_event`` writes it without the format-string machinery (the
    ``log_text`` key); its format is the same text with braces escaped, so
    any other observer shows it alike, and its system is the one Twisted
    would derive. Publish it with ``logger.observer(event)``, as
    ``Logger.emit`` would.
    """
    return {
        "log_logger": logger,
        "log_level": level,
        "log_namespace": logger.namespace,
        "log_system": f"{logger.namespace}#{level.name}",
        "log_source": None,
        "log_format": text.replace("{", "{{").replace("}", "}}"),
        "log_time": time.time(),
        "log_text": text,
    }


def printable(text: str, keep: str = "") -> str:
    """
    ``text`` with every character a terminal or a log reader would act on
    written as an escape: controls (an escape sequence, a line feed that
    would start a forged line), format characters (a right-to-left override
    that reorders what is shown), separators other than the space, and the
    backslash, so that an escape in the text cannot pass for one of ours.
    Characters in ``keep`` stay as they are.

    Request URLs, client certificate names and what applications write
    reach the log through it; a text with nothing to escape is returned as
    it is, after one scan.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        char if (char.isprintable() and char != "\\") or char in keep else _escape(char)
        for char in text
    )


# Lines an application writes to its log (FastCGI STDERR records, a spawned
# program's own output), logged per backend per window; the rest are
# counted, so a chatty or hostile application cannot flood the server's log.
LINES_PER_WINDOW = 20
LINES_WINDOW = 10.0


class MonotonicClock:
    """A clock for a rate limit that no reactor reaches (``LogLimiter`` without ``on_dropped``)."""

    seconds = staticmethod(time.monotonic)


class LogLimiter:
    """
    At most ``limit`` log events per ``window`` seconds; says what it
    dropped. Without ``on_dropped``, the count comes with the next event it
    lets through (``allow``). With it, the count goes to ``on_dropped`` when
    the window that dropped them ends, so that a burst followed by silence
    is not left unsaid (``clock`` must then schedule calls, as a reactor
    does); ``summary`` words it.
    """

    def __init__(self, clock: IReactorTime, limit: int = LINES_PER_WINDOW,
                 window: float = LINES_WINDOW,
                 on_dropped: Optional[Callable[[int], None]] = None) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.on_dropped = on_dropped
        self._window_start = float("-inf")
        self._count = 0
        self._report: Any = None
        self.dropped = 0

    def allow(self) -> tuple[bool, int]:
        """Whether to log now, and how many events were dropped before this one."""
        now = self.clock.seconds()
        if now - self._window_start >= self.window:
            if self._report is not None:
                # The last window's count, had its report not run yet.
                self._report.cancel()
                self._window_over()
            self._window_start = now
            self._count = 0
        if self._count >= self.limit:
            self.drop(1)
            return False, 0
        self._count += 1
        dropped, self.dropped = self.dropped, 0
        return True, dropped

    def drop(self, count: int) -> None:
        """``count`` events dropped while this window is full (``full_for``)."""
        if count <= 0:
            return
        self.dropped += count
        if self.on_dropped is not None and self._report is None:
            self._report = self.clock.callLater(
                max(0.0, self._window_start + self.window - self.clock.seconds()), self._window_over
            )

    def full_for(self) -> float:
        """Seconds until this window takes events again; 0 if it takes them now."""
        left = self._window_start + self.window - self.clock.seconds()
        return left if self._count >= self.limit and left > 0 else 0.0

    @staticmethod
    def dropped_note(dropped: int) -> str:
        """What a line that ``allow`` let through says of the ``dropped`` before it."""
        if not dropped:
            return ""
        return f" ({dropped} more such {plural(dropped, 'failure')} not logged)"

    def summary(self, count: int, what: str) -> str:
        """``count`` dropped ``what``, as the log says it."""
        return f"{count} {what} not logged (over {self.limit} in {self.window:g} s)"

    def say_dropped_now(self) -> None:
        """
        Report what this window dropped at once (``on_dropped``), not when
        it ends: for a process or a listener that stops before then.
        """
        if self._report is not None and self._report.active():
            self._report.cancel()
            self._window_over()

    def _window_over(self) -> None:
        self._report = None
        dropped, self.dropped = self.dropped, 0
        if dropped and self.on_dropped is not None:
            self.on_dropped(dropped)


def log_field(text: str) -> str:
    """
    ``text`` as one field of a log line whose fields are separated by
    spaces, some of them in double quotes (the common and combined styles):
    ``printable``, and the space and the double quote escaped too, so that
    what a client sends cannot split a field or close a quoted one.
    """
    text = printable(text)
    if " " in text or '"' in text:
        text = text.replace(" ", "\\x20").replace('"', "\\x22")
    return text


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:
        # A byte that was not UTF-8, kept by the "surrogateescape" decoding.
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class SecondsFormatter:
    """
    ``formatTime`` for a timestamp, remembered for the second it falls in.

    The formats twistd uses stop at whole seconds, so every timestamp of one
    second formats alike; the offset from UTC can only change on a whole
    second too. The second is the one ``datetime`` sees: it rounds a
    timestamp to microseconds (half to even) first, so 1.9999999 is in 2.
    """

    def __init__(self, time_format: Optional[str] = timeFormatRFC3339) -> None:
        self.time_format = time_format
        self._second: Optional[int] = None
        self._text = ""

    def __call__(self, when: Optional[float]) -> str:
        if when is None or self.time_format is None:
            return formatTime(when, self.time_format)
        fraction, whole = math.modf(when)
        microseconds = round(fraction * 1e6)
        second = int(whole) + (microseconds >= 1_000_000) - (microseconds < 0)
        if second != self._second:
            self._text = formatTime(second, self.time_format)
            self._second = second
        return self._text


def format_event(format_time: Callable[[Optional[float]], str]) -> Callable[[Mapping[str, Any]], Optional[str]]:
    """A formatter giving ``formatEventAsClassicLogText``'s text for every event."""

    def text_of(event: Mapping[str, Any]) -> Optional[str]:
        text, system = event.get("log_text"), event.get("log_system")
        if text is None or system is None or "log_failure" in event:
            return formatEventAsClassicLogText(event, formatTime=format_time)
        if not text:
            return None
        if "\n" in text:
            text = text.replace("\n", "\n\t")
        return f"{format_time(event.get('log_time'))} [{system}] {text}\n"

    return text_of


def plural(count: int, noun: str) -> str:
    """``noun`` as a log line says it after ``count``: one connection, two connections."""
    return noun if count == 1 else f"{noun}s"


def text_observer(out: IO[Any], time_format: Optional[str] = timeFormatRFC3339) -> ILogObserver:
    """An observer writing what ``textFileLogObserver(out, time_format)`` would."""
    return FileLogObserver(out, format_event(SecondsFormatter(time_format)))


def twistd_observer(twistd_options: Mapping[str, Any]) -> Optional[ILogObserver]:
    """
    The observer twistd would make from its own options, or None to leave it to twistd.

    Syslog, a ``--logger`` of the user's choice and anything unusual stay
    twistd's; a file (rotated on SIGUSR1 as twistd does) or standard output
    gets the cheaper observer.
    """
    if "nodaemon" not in twistd_options:
        # Not twistd's options (``twist gemfcgi``): its runner has a log of its own.
        return None
    if twistd_options.get("syslog") or twistd_options.get("logger"):
        return None
    path = twistd_options.get("logfile") or ""
    nodaemon = bool(twistd_options.get("nodaemon"))
    if path == "-" or (nodaemon and not path):
        if not nodaemon:
            return None
        return text_observer(sys.stdout)
    from twisted.internet import reactor

    if not rotatable(path or "twistd.log"):
        # ``--logfile=/dev/stderr``: twistd's file would seek in a pipe (a
        # traceback at the start), and its rotation at SIGUSR1 or at 1 MB
        # renamed /dev/stderr itself. Written to as it is, never renamed.
        try:
            out = _open_to_append(path)
        except OSError:
            # A socket cannot be opened again through /proc (systemd's
            # journal as standard error): standard error itself is written.
            if not _is_standard_error(os.stat(path)):
                raise
            out = sys.stderr
        return text_observer(out)
    log_file = AppendingLogFile.fromFullPath(path or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):
        signal.signal(signal.SIGUSR1, lambda number, frame: reactor.callFromThread(log_file.rotate))
    return text_observer(log_file)


def _open_to_append(path: str) -> IO[str]:
    """
    ``path`` opened to append text lines to. A FIFO is opened without
    waiting for a reader (the start hung, saying nothing): one that no
    process reads is an error (ENXIO), then written as a pipe is.
    """
    # The access file's opener (imported here: that module logs through this one).
    from gemfcgi.accesslog import open_for_lines

    descriptor = open_for_lines(path)
    os.set_blocking(descriptor, True)
    return open(descriptor, "a", encoding="utf-8", errors="backslashreplace", buffering=1)


class AppendingLogFile(LogFile):
    """
    twistd's log file, written at its end wherever that is now (O_APPEND):
    logrotate's ``copytruncate``, which the README advises, cut the file,
    and the next line went in at the old offset, after as many NUL bytes.
    A file removed (by hand) is made anew at ``SIGUSR1``, where twistd's
    rotation went on writing to the removed one without a word; see
    ``rotate`` for how the new file is made.
    """

    def _openFile(self) -> None:
        super()._openFile()
        descriptor = self._file.fileno()
        fcntl.fcntl(descriptor, fcntl.F_SETFL, fcntl.fcntl(descriptor, fcntl.F_GETFL) | os.O_APPEND)

    def shouldRotate(self) -> bool:
        if self.rotateLength and self.size >= self.rotateLength:
            # What was written since the open, not the file's size once a
            # copytruncate has cut it: asked of the file before rotating.
            self.size = self._file.tell()
        return super().shouldRotate()

    def rotate(self) -> None:
        """
        twistd's rotation (``FILE`` to ``FILE.1``, the others one up), or,
        for a file removed, none; then a new ``FILE``, created here or not
        at all: ``O_EXCL`` follows no link another user put in its place
        (twistd's open truncated the file the link led to and wrote the log
        into it, at every SIGUSR1 and every 1 MB a client could fill). The
        file open until now is written on if the new one cannot be made.
        """
        if os.path.islink(self.path) and not os.access(self.path, os.W_OK):
            # A link leading nowhere this process may write, put at the name
            # (after a rotation had renamed the file written now): it goes,
            # and that file keeps its name. Left, it stopped every rotation
            # for good, the file growing without a word.
            try:
                os.unlink(self.path)
            except OSError:
                return
        elif os.path.lexists(self.path):
            if not (os.access(self.directory, os.W_OK) and os.access(self.path, os.W_OK)):
                return
            for number in reversed(self.listLogs()):
                older = f"{self.path}.{number}"
                if self.maxRotatedFiles is not None and number >= self.maxRotatedFiles:
                    os.remove(older)
                else:
                    os.rename(older, f"{self.path}.{number + 1}")
            os.rename(self.path, f"{self.path}.1")
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                                 0o644 if self.defaultMode is None else self.defaultMode)
        except OSError:
            return
        previous, self._file = self._file, open(descriptor, "rb+", 0)
        self.size = 0
        previous.close()


def rotatable(path: str) -> bool:
    """
    Whether a log file at ``path`` may be rotated (renamed, and made anew):
    not a device or a pipe, nor a name in ``/dev`` or ``/proc`` or a link
    that leads there (``/dev/stderr``, ``/dev/fd/2``).
    """
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        if current.startswith(("/dev/", "/proc/")):
            return False
        if not os.path.islink(current):
            break
        current = os.path.abspath(os.path.join(os.path.dirname(current), os.readlink(current)))
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # not made yet (twistd makes it), or not to be told here
        return True


def logs_to_the_terminal(twistd_options: Optional[Mapping[str, Any]]) -> bool:
    """
    Whether the log goes where standard error does, the terminal or the
    service manager's journal (``twistd -n`` without a log file, or
    ``twist``), so that what is printed there at the start is in the log
    too. Not for a log file, syslog or a logger of the user's choice.
    """
    if twistd_options is None:
        return True
    if "nodaemon" not in twistd_options:
        # ``twist``: its ``--log-file``, standard output unless given.
        log_file = twistd_options.get("logFile", sys.stdout)
        if log_file is sys.stderr:
            return True
        try:
            return _is_standard_error(os.fstat(log_file.fileno()))
        except (AttributeError, OSError, ValueError):  # no file of its own
            return False
    if twistd_options.get("syslog") or twistd_options.get("logger"):
        return False
    path = twistd_options.get("logfile") or ""
    if not twistd_options.get("nodaemon"):
        return False  # a daemon's standard error is /dev/null
    if path in ("", "-"):
        # Standard output: where standard error goes too, unless they were
        # sent apart (``>out 2>err``).
        try:
            return _is_standard_error(os.fstat(sys.stdout.fileno()))
        except (AttributeError, OSError, ValueError):
            return True
    # ``--logfile=/dev/stderr``, or a file standard error is sent to too.
    try:
        return _is_standard_error(os.stat(path))
    except (OSError, ValueError):  # not made yet: twistd makes it
        return False


def _is_standard_error(status: os.stat_result) -> bool:
    """Whether ``status`` is that of the file standard error writes to."""
    try:
        error = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # closed, or replaced by no file
        return False
    return (status.st_dev, status.st_ino) == (error.st_dev, error.st_ino)


class WithTwistdLog(MultiService):
    """
    The service twistd runs, bringing its log observer to twistd's application.

    twistd asks the application for an ``ILogObserver`` before it makes its
    own, and a plugin only returns a service: so the service sets that
    component when twistd gives it the application as its parent.
    """

    def __init__(self, service: Service, observer: ILogObserver) -> None:
        super().__init__()
        self.observer = observer
        service.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(ILogObserver, self.observer)
