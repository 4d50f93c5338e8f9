"""
FastCGI applications that gemfcgi starts and supervises (``fastcgi spawn``).

The FastCGI convention (FCGI_LISTENSOCK_FILENO = 0) is that a web server
hands its application a listening socket as file descriptor 0; fcgiwrap,
php-cgi and flup all accept connections on it when started that way. So the
supervisor binds a unix socket in a private directory of its own and passes
it to the program on every start. The socket belongs to gemfcgi, not to the
program: it survives restarts, and requests that arrive while the program is
down wait in its backlog instead of failing.

A run was healthy if it lasted ``threshold`` seconds or more, or ended with
exit status 0 (a program stopping on purpose, such as php-cgi after
PHP_FCGI_MAX_REQUESTS requests, which under load comes well within a
second), or answered at least one request (the relay got anything back on a
request's connection, or saw the program read a whole request before the
connection ended, ``answered``: a program that crashes on one request's
input started). Any other run failed, and if it ended by itself (an exit
status, or a crash: SIGSEGV, SIGABRT and their kind) rather than by a signal
from outside, it failed to start: a wrong command, a missing module. Until
the next start, requests are then refused at once, and those left waiting
are failed when it ends (``failed_start``, ``on_failed_start``), so a wrong
command costs each request a ``42``, not the whole reply timeout. A run that
ended by its own exit, answered nothing, and left requests that were
waiting when it started still unread in the backlog (``untaken_requests``)
failed to start too, whatever its status: a CGI script exits 0 at once. Its socket
is closed until that start, for worker processes that reach it by its path.

Twisted's ``ProcessMonitor`` cannot pass a descriptor to its children, so
this is a small supervisor with the same semantics: after a run that failed
the program is restarted after a delay that doubles each time (0.1 s up to
30 s), so a program that cannot start costs a handful of forks a minute, not
a fork storm; after a healthy run, after the minimum delay (but never
sooner than ``threshold`` after the last start when the run's only claim to
health is its status 0). What a run leaves holding the socket once it has
ended (a command that daemonises: a process in a session of its own, out
of reach of the stop's signals, one more at each start) is stopped, and
looked for again before the next start; a run that left such processes
and answered nothing failed to start. Its stdout and
stderr lines go to the log, named after the backend and rate-limited as
FastCGI STDERR records are (with fcgiwrap they are every CGI script's
stderr). Stopping sends SIGTERM, then SIGKILL after ``kill_timeout``; once a
stop has begun (``stop_restarting``: the server drains its requests first),
a program that ends is not started again.

Programs like ``fcgiwrap -c N`` and php-cgi with PHP_FCGI_CHILDREN fork
workers that share the listening socket and the output pipes. Signalling
only the parent would leave them orphaned, still accepting requests, so
every program runs in a session of its own (started through util-linux's
``setsid``, or a few lines of Python that call it before ``exec``) and
signals go to its whole process group. The supervisor watches the parent's
exit, not the pipes, which workers may hold open after it. Should the
server die without stopping it, the program gets SIGTERM from the kernel
(the parent-death signal), rather than running on without a server. The
kernel signals the program alone, not its process group: workers it forked
end if it ends them (php-cgi does; ``fcgiwrap -c N`` leaves its own).

Programs run under the batch scheduling policy (``SCHED_BATCH``, same
nice value and CPU share) where the platform has it. A program woken by a
request's connect then does not preempt gemfcgi in the middle of writing
that request: gemfcgi finishes its turn, and the program finds the whole
request waiting in one read. On a shared core this takes a FastCGI
request from five context switches to one.

No program needs special settings. fcgiwrap and flup use fd 0 when given no
socket of their own; php-cgi does when fd 0 is a socket. Without
PHP_FCGI_CHILDREN php-cgi serves one request at a time and exits with
status 0 after PHP_FCGI_MAX_REQUESTS (default 500), which the restart
covers: requests wait in the backlog for 0.1 s. Set PHP_FCGI_CHILDREN in
gemfcgi's environment for concurrency; children are signalled with their
parent.
"""

from __future__ import annotations

import collections
import functools
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gemfcgi.fastcgi.socketdir import SOCKET_NAME, SocketDirectory, remove_abandoned
from gemfcgi.fastcgi.unixsocket import UnixSocketEndpoint
from gemfcgi.textlog import LogLimiter, plural, printable

log = Logger()

# Requests wait here while the program is down or busy; the kernel caps it
# at net.core.somaxconn.
LISTEN_BACKLOG = 1024
MIN_RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 30.0
# A run shorter than this was not healthy, unless it ended with status 0 or
# answered a request: back off before the next start.
RESTART_THRESHOLD = 1.0
# Looks for processes left on a program's socket at a stop, at most.
STOP_SWEEPS = 5
# Sockets of earlier runs looked at for processes left on them.
OLD_SOCKETS_WATCHED = 8
# Seconds between looks whether the socket's path is still there (``socket_gone``).
SOCKET_LOOK = 1.0
# Seconds within which a run that exits 0 and leaves processes on its
# socket daemonised (a daemon's parent exits as soon as it has forked).
DAEMON_WINDOW = 5.0
# Why a run that left processes on its socket failed to start.
DAEMONISED = ("left processes holding its socket: the command daemonises (or leaves workers "
              "behind), and a spawned program must stay in the foreground")
# How a run ends by itself: an exit status (no signal), or a signal a
# program brings on itself by crashing. Others come from outside.
UNTAKEN = ("a FastCGI program takes connections on its standard input (file descriptor 0) and runs "
           "on; a CGI script runs under fcgiwrap")
_OWN_END = {None, signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE,
            signal.SIGSYS, signal.SIGTRAP}
MAX_OUTPUT_LINE = 4096
# Output read and dropped (the log's window full) in one second before
# reading pauses until the next: megabytes a second is a program writing
# without end, not one with much to say.
DROPPED_OUTPUT_PER_SECOND = 1 << 20
# Runs the program as the leader of a new session and process group, to be
# sent SIGTERM should the server die (PR_SET_PDEATHSIG, where there is one).
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "except (AttributeError, OSError):\n"
    "    pass\n"
    "os.setsid()\n"
    "os.execv(sys.argv[1], sys.argv[2:])"
)


def find_program(name: str, env: Mapping[str, str]) -> Optional[str]:
    """Where ``name`` is run from with ``env``'s PATH, as a spawn runs it; ``None`` if nowhere."""
    return shutil.which(name, path=env.get("PATH", os.defpath))


def _launch_argv(executable: str, argv: list[str]) -> list[str]:
    """
    The command that runs ``argv`` as the leader of a new session, which
    gets SIGTERM when the server ends without stopping it (killed, or a
    program embedding gemfcgi that ends at a signal without a graceful
    stop): util-linux's ``setpriv --pdeathsig`` and ``setsid`` (which any
    user may run; they keep the pid), else this Python (which a program run
    as another user may not be allowed to execute). A graceful stop still
    drains first; this only keeps a program from running on for good, with
    nobody to send it requests.
    """
    where = os.defpath + ":/usr/bin:/bin"
    setsid = shutil.which("setsid", path=where)
    setpriv = shutil.which("setpriv", path=where)
    if setsid is not None and setpriv is not None and _knows_pdeathsig(setpriv):
        return [setpriv, "--pdeathsig", "TERM", "--", setsid, "--", executable, *argv[1:]]
    return [sys.executable, "-c", _LAUNCHER, executable, *argv]


@functools.lru_cache(maxsize=None)
def _knows_pdeathsig(setpriv: str) -> bool:
    """Whether this ``setpriv`` has ``--pdeathsig`` (util-linux 2.33 and later), asked once."""
    try:
        found = subprocess.run([setpriv, "--help"], capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return b"--pdeathsig" in found.stdout


def _switch_to_batch() -> bool:
    """Put the calling thread on ``SCHED_BATCH``; whether it was on the default policy and now is."""
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            return False
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        return False
    return True


@contextmanager
def _batch_scheduling() -> Iterator[None]:
    """
    Processes forked inside inherit ``SCHED_BATCH`` (see the module's doc);
    the calling thread gets the default policy back. A thread on any other
    policy, or a platform without these calls, is left alone.
    """
    switched = _switch_to_batch()
    try:
        yield
    finally:
        if switched:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


class AppNotRunning(Exception):
    """A request arrived for a spawned application that is not started."""


class _AppProcess(ProcessProtocol):
    """Relays one run of the program to its supervisor: output lines and the end."""

    def __init__(self, app: "SpawnedApp") -> None:
        self.app = app
        self._partial: dict[int, bytes] = {}
        # Known from the start: Twisted forgets it once the child is reaped.
        self.pid: Optional[int] = None
        # A program that fails at once can end inside spawnProcess itself.
        self.ended = False
        # Bytes of dropped output read in the second that began then.
        self._second_began = float("-inf")
        self._second_bytes = 0
        self._resume: Any = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if self.app.output_full_for():
            # The log takes no more lines this window: they are counted,
            # not split and decoded one by one.
            self._drop(fd, data)
            return
        lines = (self._partial.pop(fd, b"") + data).split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_OUTPUT_LINE:
            lines.append(rest)
            rest = b""
        if rest:
            self._partial[fd] = rest
        for line in lines:
            self.app.output(fd, line)

    def _drop(self, fd: int, data: bytes) -> None:
        ended = data.rfind(b"\n")
        if ended < 0:
            self._partial[fd] = (self._partial.get(fd, b"") + data)[-MAX_OUTPUT_LINE:]
        else:
            self._partial.pop(fd, None)
            self.app.output_dropped(data.count(b"\n"))
            if ended + 1 < len(data):
                self._partial[fd] = data[ended + 1 :][-MAX_OUTPUT_LINE:]
        # A program writing without end (``yes >&2``) would still have the
        # server read as fast as it writes. Past a budget no chatty program
        # comes near, reading waits for the next second, and the program
        # for room in its pipe.
        now = self.app.reactor.seconds()
        if now - self._second_began >= 1.0:
            self._second_began, self._second_bytes = now, 0
        self._second_bytes += len(data)
        if self._second_bytes > DROPPED_OUTPUT_PER_SECOND and self._resume is None:
            self.transport.pauseProducing()
            self._resume = self.app.reactor.callLater(
                self._second_began + 1.0 - now, self._read_again)

    def _read_again(self) -> None:
        # Even once it exited: its pipes end (processEnded) when read to EOF.
        self._resume = None
        self.transport.resumeProducing()

    def processExited(self, reason: Failure) -> None:
        self.ended = True
        self.app.exited(reason, self.pid)

    def processEnded(self, reason: Failure) -> None:
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None
        for fd, rest in sorted(self._partial.items()):
            self.app.output(fd, rest)
        self._partial.clear()


class SpawnedApp(Service):
    """One supervised FastCGI program and the listening socket it is given as fd 0."""

    def __init__(
        self,
        name: str,
        command: str,
        reactor: Any,
        kill_timeout: float = 5.0,
        env: Optional[dict[str, str]] = None,
        min_delay: float = MIN_RESTART_DELAY,
        max_delay: float = MAX_RESTART_DELAY,
        threshold: float = RESTART_THRESHOLD,
        directory: Optional[str] = None,
        owner: Optional[tuple[int, int]] = None,
    ) -> None:
        """
        ``directory`` is where the private socket directory is made (a
        chroot, so that workers inside it can reach the socket); ``owner``
        (uid, gid) is who the program runs as and who owns its socket.
        """
        self.name = name
        self.directory = directory
        self.owner = owner
        self.argv = shlex.split(command)
        if not self.argv:
            raise ValueError(f"{name}: empty command")
        self.reactor = reactor
        self.kill_timeout = kill_timeout
        self.env = without_activation(os.environ) if env is None else env
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.threshold = threshold
        self.socket_path: Optional[str] = None
        # Where this process connects to it: the socket in the claimed
        # directory itself (``SocketDirectory.at``); workers use the path.
        self.connect_path: Optional[str] = None
        self.starts = 0
        self._directory: Optional[SocketDirectory] = None
        self._socket: Optional[socket.socket] = None
        self._look: Optional[LoopingCall] = None
        self._process: Any = None
        self._pid: Optional[int] = None
        self._started_at = 0.0
        # Whether the current run ended a request: it works, however short it is.
        self._answered = False
        self._delay = min_delay
        self._restart: Any = None
        self._kill: Any = None
        self._stopped: Optional[Deferred] = None
        self._stopping = False
        self._output = LogLimiter(reactor, on_dropped=self._output_dropped)
        # Processes a run left on its socket, sent SIGTERM (``_end_leftovers``);
        # what the socket the last run had links to in /proc, for a daemon
        # that comes a moment after the run's end was looked at.
        self._leftovers: dict[int, Optional[str]] = {}  # pid -> its start time
        self._leftover_kills: list[Any] = []
        # Sockets earlier runs had (each failed start closes its socket):
        # a daemon forked late may sit on any of the last few.
        self._old_targets: collections.deque[str] = collections.deque(maxlen=OLD_SOCKETS_WATCHED)
        # Why the program is down after dying as it started (None while it
        # runs, or after a run that was healthy): requests are then refused
        # at once rather than left in the backlog for a run that may never
        # come. Told to ``on_failed_start`` too, for the requests waiting.
        self._failed_why: Optional[str] = None
        self.on_failed_start: Optional[Callable[[str], None]] = None
        # How many requests connected before a time still wait unread in
        # the socket's backlog (``Backend.untaken_since``): a run that ended
        # by itself leaving such requests never took them.
        self.untaken_requests: Optional[Callable[[float], int]] = None
        # A request given up on (client gone, reply timeout) while unread in
        # the backlog, since it was last seen empty (``given_up_queued``).
        self._given_up_waiting = False

    @property
    def failed_start(self) -> Optional[str]:
        """
        Why the program is down after failing to start, and when it starts
        again, as of now; ``None`` while it runs or may run.
        """
        why = self._failed_why
        if why is None:
            return None
        if self._restart is not None and self._restart.active():
            remaining = max(0.0, self._restart.getTime() - self.reactor.seconds())
            why += f"; next start in {remaining:.1f} s"
        return why

    @property
    def pid(self) -> Optional[int]:
        """The running program's pid (also its process group), or ``None``."""
        return self._pid

    def endpoint(self, timeout: float = 5) -> IStreamClientEndpoint:
        """The client endpoint for this application's socket, valid while it runs."""
        return _SpawnedAppEndpoint(self, timeout)

    # -- IService ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        remove_abandoned(self.directory)
        self._take(SocketDirectory(self.directory))
        self._look = LoopingCall(self.socket_gone)
        self._look.clock = self.reactor
        self._look.start(SOCKET_LOOK, now=False)
        self._spawn()

    def socket_gone(self) -> bool:
        """
        Whether the socket's path was removed from outside (``rm -rf`` of
        the temporary directory), or holds something else: then a socket is
        made again, and the program restarted on it. The program kept
        accepting on the socket it holds, where no connect by path could
        reach it any more: every request got 42 until the server was
        restarted; a reload and the program's own restarts (on the same
        socket) did not help.

        Looked at every ``SOCKET_LOOK`` seconds, and at once when a connect
        fails: a prefork worker knows the socket only by that path.
        """
        path, directory = self.socket_path, self._directory
        if path is None or directory is None or self._socket is None or self._stopping or not self.running:
            return False
        if directory.intact() and directory.holds_socket(SOCKET_NAME):
            return False
        log.warn("{backend}: its socket {path} was removed; it is made again, and the program "
                 "restarted on it", backend=self.name, path=path)
        self._close_socket()
        pid = self._pid
        try:
            self._open_socket()
        except OSError as error:
            reason = error.strerror or str(error)
            log.error("{backend}: cannot make its socket {path} again: {reason}", backend=self.name,
                      path=path, reason=reason)
            self._failed_to_start(f"its socket {path} was removed, and cannot be made again: {reason}")
        # The run ends (SIGKILL if it will not), and the next starts on the
        # new socket (``exited``), where requests wait meanwhile.
        self._signal(signal.SIGTERM)
        if pid is not None:
            self.reactor.callLater(self.kill_timeout, self._kill_run, pid)
        return True

    def _kill_run(self, pid: int) -> None:
        if self._pid == pid and self._stopped is None:
            log.warn("{backend}: pid {pid} still running {timeout:g} s after SIGTERM; sending SIGKILL",
                     backend=self.name, pid=pid, timeout=self.kill_timeout)
            self._signal(signal.SIGKILL)

    def _open_socket(self) -> None:
        assert self.socket_path is not None and self._directory is not None
        self._own_directory()
        directory = self._directory
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # In the claimed directory itself, and given to the program's
            # user there: not through a link another user put in its path.
            listening.bind(directory.at(SOCKET_NAME))
            listening.listen(LISTEN_BACKLOG)
            if self.owner is not None:
                directory.give(SOCKET_NAME, self.owner)
        except OSError:
            listening.close()
            raise
        self._socket = listening
        self.connect_path = directory.at(SOCKET_NAME)

    def _own_directory(self) -> None:
        """
        The socket's directory, this server's: made again at its path if it
        was removed, or anew elsewhere if something else took that path (a
        link or a directory another user planted, which would hand them
        the socket and every request).
        """
        directory = self._directory
        if directory is None or directory.intact():
            return
        try:
            directory.make_again()
        except FileExistsError:
            log.warn("{backend}: something else is at the path of its socket directory {path}; "
                     "a new directory is made", backend=self.name, path=directory.path)
            directory.close()
            directory = SocketDirectory(self.directory)
        self._take(directory)

    def _take(self, directory: SocketDirectory) -> None:
        """``directory`` as the socket's, given to the program's user (through its descriptor)."""
        self._directory = directory
        self.socket_path = os.path.join(directory.path, SOCKET_NAME)
        if self.owner is not None:
            directory.give_itself(self.owner)

    def _close_socket(self) -> None:
        """
        Refuse connections until the next start: those in the backlog are
        reset, and a connect finds no socket. This reaches the workers of a
        prefork parent too, which know the program only by its path.
        """
        listening, self._socket = self._socket, None
        self._given_up_waiting = False  # the backlog goes with the socket
        if listening is not None:
            self._old_targets.append(_socket_link(listening))
            listening.close()
        if self._directory is not None:
            self._directory.remove(SOCKET_NAME)

    def stop_restarting(self) -> None:
        """
        A stop has begun (the server drains its requests before it stops the
        program): a program that ends from now on is not started again, and
        one that is down stays down, its socket closed, so that requests
        waiting in its backlog end now instead of at the drain timeout.
        """
        self._stopping = True
        self._stop_looking()
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        self._restart = None
        if self._process is None:
            self._close_socket()

    def _stop_looking(self) -> None:
        if self._look is not None and self._look.running:
            self._look.stop()
        self._look = None

    def stopService(self) -> Deferred:
        super().stopService()
        self.stop_restarting()
        if self._process is None:
            self._end_leftovers(None, signal.SIGKILL)
            self._cleanup()
            return succeed(None)
        self._stopped = Deferred()
        self._signal(signal.SIGTERM)
        self._kill = self.reactor.callLater(self.kill_timeout, self._kill_now)
        return self._stopped

    def _kill_now(self) -> None:
        """SIGTERM did not stop it in time: SIGKILL, and the log says so."""
        log.warn(
            "{backend}: pid {pid} still running {timeout:g} s after SIGTERM; sending SIGKILL",
            backend=self.name, pid=self._pid, timeout=self.kill_timeout,
        )
        self._signal(signal.SIGKILL)

    # -- one run -------------------------------------------------------------

    def _spawn(self) -> None:
        """
        Start a run. What the system refuses for now (no descriptor left,
        no memory to fork) is a failed start, tried again with the same
        back-off: the program must not stay down once the shortage is over.
        """
        self._restart = None
        try:
            self._start_run()
        except OSError as error:
            reason = error.strerror or str(error)
            log.error("{backend}: cannot start: {reason}", backend=self.name, reason=reason)
            self._schedule_restart()
            self._failed_to_start(f"cannot start: {reason}")

    def _start_run(self) -> None:
        if self.starts:
            late = self._end_leftovers(None)
            if late:
                # Forked as the last run ended, after it was looked at.
                self._schedule_restart()
                self._failed_to_start(f"the last run {DAEMONISED}")
                return
        if self._socket is None:
            self._open_socket()
        assert self._socket is not None
        executable = find_program(self.argv[0], self.env)
        self.starts += 1
        self._started_at = self.reactor.seconds()
        self._answered = False
        if executable is None:
            # As --check says it; under twistd's --uid, a program this user
            # may not execute (in a directory only root may enter) is one.
            where = "" if "/" in self.argv[0] else " in PATH"
            missing = f"program {self.argv[0]!r} not found{where} (or not executable)"
            log.error("{backend}: {missing}", backend=self.name, missing=missing)
            self._schedule_restart()
            self._failed_to_start(missing)
            return
        self._failed_why = None
        command = _launch_argv(executable, self.argv)
        run = _AppProcess(self)
        with _batch_scheduling():
            process = self.reactor.spawnProcess(
                run,
                command[0],
                command,
                env=self.env,
                childFDs={0: self._socket.fileno(), 1: "r", 2: "r"},
                uid=self.owner[0] if self.owner else None,
                gid=self.owner[1] if self.owner else None,
            )
        if run.ended:
            # It ended before spawnProcess returned, and ``exited`` has
            # already dealt with it: there is no process to hold on to (a
            # stop would wait for its end for ever).
            return
        self._process, self._pid = process, run.pid
        log.info("{backend}: started pid {pid}", backend=self.name, pid=self._pid)

    def given_up_queued(self) -> None:
        """A request still unread in the backlog was given up on: a run may take it, answering no one."""
        self._given_up_waiting = True

    def _backlog_empty(self) -> bool:
        """Whether no connection waits in the socket's backlog (a listening socket polls readable then)."""
        if self._socket is None:
            return True
        poller = select.poll()
        poller.register(self._socket.fileno(), select.POLLIN)
        return not poller.poll(0)

    def answered(self) -> None:
        """The program read a request or sent something back on one: this run is healthy, however short."""
        if self._process is not None:
            self._answered = True

    def output(self, fd: int, line: bytes) -> None:
        """
        A line of the program's stdout or stderr, logged under the rate
        limit; a stderr line as a warning, as an application's STDERR
        record is (with fcgiwrap, it is a script's error).
        """
        if not line.rstrip(b"\r"):
            return
        allowed, _ = self._output.allow()
        if not allowed:
            return  # counted in _output_dropped
        text = printable(line.decode("utf-8", "replace").rstrip("\r"), keep="\t")
        emit = log.warn if fd == 2 else log.info
        emit(
            "{backend} {stream}: {text}",
            backend=self.name,
            stream="stderr" if fd == 2 else "stdout",
            text=text,
        )

    def output_full_for(self) -> float:
        """Seconds until the log takes the program's lines again (``LogLimiter.full_for``)."""
        return self._output.full_for()

    def output_dropped(self, count: int) -> None:
        """``count`` lines read while the log took none: said with the window's summary."""
        self._output.drop(count)

    def _output_dropped(self, count: int) -> None:
        log.info(
            "{backend}: {summary}", backend=self.name, summary=self._output.summary(count, "output lines")
        )

    def exited(self, reason: Failure, pid: Optional[int] = None) -> None:
        pid = self._pid if pid is None else pid
        # Workers it forked would go on accepting on the shared socket.
        self._signal(signal.SIGKILL)
        self._process = self._pid = None
        ran = self.reactor.seconds() - self._started_at
        if self._stopped is not None:
            if self._kill is not None and self._kill.active():
                self._kill.cancel()
            self._kill = None
            log.info("{backend}: pid {pid} stopped", backend=self.name, pid=pid)
            self._end_leftovers(pid, signal.SIGKILL)
            self._cleanup()
            stopped, self._stopped = self._stopped, None
            stopped.callback(None)
            return
        if self._stopping:
            # The stop began while it ran (systemd signals the whole cgroup):
            # what is waiting in its backlog ends with the socket.
            log.info(
                "{backend}: pid {pid} exited after {ran:.1f} s ({reason}); not restarted, "
                "the server is stopping",
                backend=self.name,
                pid=pid,
                ran=ran,
                reason=_how_it_ended(reason),
            )
            self._end_leftovers(pid, signal.SIGKILL)
            self._close_socket()
            return
        log.warn(
            "{backend}: pid {pid} exited after {ran:.1f} s ({reason})",
            backend=self.name,
            pid=pid,
            ran=ran,
            reason=_how_it_ended(reason),
        )
        ended_on_purpose = getattr(reason.value, "exitCode", None) == 0
        # What a run left on its socket is stopped, whatever the run was.
        # One that ended with status 0 (a daemon's parent does) daemonised.
        # A daemon's parent exits 0 soon after it starts; a program that
        # ran longer (one stopped from outside, its workers still ending)
        # did not daemonise, whatever it left.
        daemonised = bool(self._end_leftovers(pid)) and ended_on_purpose and not self._answered \
            and ran < DAEMON_WINDOW
        # A run that ended by its own exit, answered nothing, and left
        # requests that were waiting when it began still unread in the
        # backlog never took them: a CGI script, a script that forgot to
        # run its server. It would be started again for ever, each request
        # waiting out the reply timeout. (A run that answered, php-cgi at
        # its quota, is healthy; a prefork parent's socket has no requests
        # of its own to look at. While requests given up on may still wait
        # in the backlog, a run may have taken those, answering no one:
        # it is given the benefit of the doubt.)
        untaken = 0
        if (getattr(reason.value, "exitCode", None) is not None and not self._answered and not daemonised
                and self.untaken_requests is not None and not self._given_up_waiting):
            untaken = self.untaken_requests(self._started_at)
        if self._backlog_empty():
            self._given_up_waiting = False
        healthy = (ran >= self.threshold or ended_on_purpose or self._answered) and not daemonised \
            and not untaken
        # Status 0 at once proves little where this process sees the
        # requests and none was read or answered (a CGI script given to
        # spawn, started every second for ever, its output filling the
        # log): no failed start, but the delay grows. A prefork parent sees
        # none (php-cgi at its quota answered the workers' requests).
        proven = ran >= self.threshold or self._answered or self.untaken_requests is None
        if healthy and proven:
            self._delay = self.min_delay
        at_least = 0.0
        if ended_on_purpose and not self._answered and ran < self.threshold:
            # Status 0 at once, with no answer seen here (php-cgi's quota
            # met through prefork workers): starts stay a threshold apart.
            at_least = self.threshold - ran
        self._schedule_restart(at_least)
        if daemonised:
            self._failed_to_start(f"pid {pid} exited {ran:.1f} s after starting and {DAEMONISED}")
        elif untaken:
            self._failed_to_start(
                f"pid {pid} exited {ran:.1f} s after starting ({_how_it_ended(reason)}) without taking "
                f"{untaken} {plural(untaken, 'request')} waiting on its socket: {UNTAKEN}"
            )
        elif not healthy and getattr(reason.value, "signal", None) in _OWN_END:
            # It ended by itself, at once, before answering anything: a
            # wrong command, a missing module, a crash as it loads. One
            # killed from outside (SIGKILL, SIGTERM) was not refusing to
            # start, and its requests wait for the next run.
            self._failed_to_start(
                f"pid {pid} exited {ran:.1f} s after starting ({_how_it_ended(reason)})"
            )

    def _end_leftovers(self, pid: Optional[int], signum: int = signal.SIGTERM) -> list[int]:
        """
        Stop what a run left holding its socket, or a socket of one of the
        runs before (a daemon forked late may come after the look, and sit
        on a socket a failed start closed): processes outside this server's
        session and outside the
        process group of the run ``pid``, already sent SIGKILL. A command
        that daemonises leaves one each start, out of reach of the stop's
        signals, all accepting on the socket. They and their process groups
        get ``signum``; after SIGTERM, SIGKILL follows after the kill
        timeout, or at once if the server stops first, whether they still
        hold the socket or not. Returns those not already being stopped.

        With SIGKILL (the stop), the look is made again until it finds
        nothing, a few times at most: a process forking anew as it is
        looked for may still get away.
        """
        new: list[int] = []
        seen: set[int] = set(self._leftovers)
        if signum == signal.SIGKILL:
            self._kill_leftovers(dict(self._leftovers))  # the stop: no more grace
        for _ in range(STOP_SWEEPS if signum == signal.SIGKILL else 1):
            targets = {*self._old_targets, *filter(None, [self._target()])}
            held = holders_of(targets, killed_group=pid)
            fresh = [holder for holder in held if holder not in seen]
            if not held:
                break
            _signal_with_groups(held, signum)
            if fresh:
                log.error("{backend}: pid {pids} kept the program's socket after its run ended: the "
                          "command daemonises, or left workers behind; sent {signal}", backend=self.name,
                          pids=", ".join(map(str, fresh)), signal=signal.Signals(signum).name)
            new += fresh
            seen.update(fresh)
        if signum != signal.SIGKILL and new:
            batch = {holder: _start_time(holder) for holder in new}
            self._leftovers.update(batch)
            self._leftover_kills.append(self.reactor.callLater(self.kill_timeout, self._kill_leftovers, batch))
        return new

    def _kill_leftovers(self, batch: dict[int, Optional[str]]) -> None:
        """SIGKILL for those of ``batch``, sent SIGTERM, that have not ended (the same start time)."""
        self._leftover_kills = [call for call in self._leftover_kills if call.active()]
        for pid in batch:
            self._leftovers.pop(pid, None)
        late = [pid for pid, started in batch.items() if started is not None
                and _start_time(pid) == started]
        if late:
            log.warn("{backend}: pid {pids} still running after SIGTERM; sent SIGKILL",
                     backend=self.name, pids=", ".join(map(str, late)))
            _signal_with_groups(late, signal.SIGKILL)

    def _target(self) -> Optional[str]:
        """What a descriptor of the current socket links to in ``/proc``."""
        return None if self._socket is None else _socket_link(self._socket)

    def _failed_to_start(self, why: str) -> None:
        self._failed_why = why
        if self.on_failed_start is not None:
            failed_start = self.failed_start
            assert failed_start is not None
            self.on_failed_start(failed_start)
        self._close_socket()

    def retry_now(self) -> None:
        """
        A reload keeps this program: if it is waiting out its back-off after
        failed starts, it is started now, and the back-off starts over. The
        reload may be the operator's fix (the script mended, a module
        installed), which should not wait up to half a minute to be seen.
        """
        if self._stopping or self._restart is None or not self._restart.active():
            return
        self._restart.cancel()
        self._delay = self.min_delay
        log.info("{backend}: started again for the reload, before its back-off ends",
                 backend=self.name)
        self._spawn()

    def _schedule_restart(self, at_least: float = 0.0) -> None:
        if not self.running:
            return
        delay = max(self._delay, at_least)
        self._delay = min(self._delay * 2, self.max_delay)
        log.info("{backend}: restarting in {delay:.1f} s", backend=self.name, delay=delay)
        self._restart = self.reactor.callLater(delay, self._spawn)

    def _signal(self, signum: int) -> None:
        """Signal the program's whole process group (it leads its own session)."""
        if self._pid is None:
            return
        try:
            os.killpg(self._pid, signum)
            return
        except ProcessLookupError:
            pass  # not yet past setsid(): signal the process itself
        if self._process is not None:
            try:
                self._process.signalProcess(signum)
            except ProcessExitedAlready:
                pass

    def _cleanup(self) -> None:
        self._stop_looking()
        for call in self._leftover_kills:
            if call.active():
                call.cancel()
        self._leftover_kills = []
        self._close_socket()
        directory, self._directory = self._directory, None
        if directory is not None:
            directory.close()
        self.socket_path = self.connect_path = None


def _how_it_ended(reason: Failure) -> str:
    """Twisted's words for a process's end, with the signal's name (``signal 11 (SIGSEGV)``)."""
    said = reason.getErrorMessage()
    number = getattr(reason.value, "signal", None)
    try:
        name = signal.Signals(number).name if number is not None else None
    except ValueError:
        name = None
    return said if name is None else f"{said.rstrip('.')} ({name})."


def _start_time(pid: int) -> Optional[str]:
    """When process ``pid`` started (``/proc/PID/stat``), to know it again; ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    # After the name: state is field 3, start time field 22; a zombie has ended.
    return None if fields[0] == "Z" else fields[19]


def _socket_link(sock: socket.socket) -> str:
    """What ``/proc/PID/fd/N`` links to for a descriptor of ``sock``."""
    return f"socket:[{os.fstat(sock.fileno()).st_ino}]"


def holds(pid: int, targets: set[str]) -> bool:
    """Whether process ``pid`` has a descriptor linking to one of ``targets``."""
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                return True
        except OSError:
            pass
    return False


def holders_of(targets: set[str], killed_group: Optional[int] = None) -> list[int]:
    """
    The processes outside this server's session, and outside the process
    group ``killed_group``, with a descriptor linking to one of ``targets``
    (from ``/proc``; none where it cannot be read). Prefork workers share
    the server's session; a spawned program has one of its own.
    """
    if not targets:
        return []
    try:
        own = os.getsid(0)
        pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    except OSError:
        return []
    held = []
    for pid in pids:
        try:
            if os.getsid(pid) == own or os.getpgid(pid) == killed_group:
                continue
        except OSError:
            continue
        if holds(pid, targets):
            held.append(pid)
    return held


def _signal_with_groups(pids: list[int], signum: int) -> None:
    """``signum`` to each of ``pids`` and to its process group (never this server's)."""
    own = os.getpgid(0)
    for pid in pids:
        try:
            group = os.getpgid(pid)
            if group != own:
                os.killpg(group, signum)  # the process too, once
                continue
        except OSError:
            pass
        try:
            os.kill(pid, signum)
        except OSError:
            pass  # gone already, or not ours to signal


@implementer(IStreamClientEndpoint)
class _SpawnedAppEndpoint:
    """A unix endpoint whose path is known only once the application started."""

    def __init__(self, app: SpawnedApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout
        self._endpoint: Optional[UnixSocketEndpoint] = None

    def connect(self, factory, retried: bool = False) -> Deferred:
        path = self.app.connect_path
        if path is None or self.app.socket_path is None:
            return fail(AppNotRunning(f"{self.app.name} is not running"))
        if self.app.failed_start is not None:
            return fail(AppNotRunning(f"the application failed to start: {self.app.failed_start}"))
        endpoint = self._endpoint
        if endpoint is None or endpoint.path != path:
            endpoint = self._endpoint = UnixSocketEndpoint(self.app.reactor, path, self.timeout,
                                                           shown=self.app.socket_path)

        def socket_gone(failure: Failure) -> Any:
            # The request waits on the socket made again, for the program's new run.
            return self.connect(factory, retried=True) if not retried and self.app.socket_gone() else failure

        return endpoint.connect(factory).addErrback(socket_gone)


# What systemd's socket activation tells gemfcgi, about gemfcgi's own sockets.
ACTIVATION_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def without_activation(environment: Mapping[str, str]) -> dict[str, str]:
    """
    ``environment`` for a spawned program or a worker: the sockets socket
    activation names are gemfcgi's, not the program's, and a worker is
    handed its own (sd_listen_fds takes them out of the environment for
    the same reason).
    """
    return {name: value for name, value in environment.items() if name not in ACTIVATION_VARIABLES}
