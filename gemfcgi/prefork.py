"""
Several worker processes on the same listening sockets.

The parent (the twistd process) opens the sockets, stays as it is (root,
outside any chroot, so it can read the configuration and keys again), and
runs ``WorkerPool``: N workers that inherit the sockets, each a complete
gemfcgi that accepts on them. Spawned FastCGI applications are started
here, once, and the workers reach them through their sockets. A worker that dies is replaced (with a
back-off, never in a tight loop). A reload starts a new generation of
workers with the new configuration and then stops the old one gracefully,
so requests in flight finish where they started. A stop forwards SIGTERM,
closes the parent's copies of the sockets at once (the workers close theirs
as their stop begins, so new connections are refused while requests in
flight finish) and waits for the workers to drain.
"""

from __future__ import annotations

import copy
import os
import pickle
import re
import signal
import sys
from typing import Any, Callable, Optional, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import Logger, LogLevel

from gemfcgi.config import model
from gemfcgi.endpoints import family_name
from gemfcgi.fastcgi.backends import fastcgi_addresses
from gemfcgi.fastcgi.spawn import SpawnedApp, without_activation
from gemfcgi.memorytrim import MemoryReturner, libc_malloc_trim
from gemfcgi.privileges import identity_for
from gemfcgi.proxyv1 import PREFIX as HAPROXY_PREFIX, split_proxied
from gemfcgi.server import Timeouts
from gemfcgi.service import (
    ListenError,
    key_files,
    listen_failed,
    on_signal,
    plan_listeners,
    opening_failed,
    listening_place,
    server_endpoint,
)
from gemfcgi.textlog import text_event
from gemfcgi.worker import WorkerPlan

log = Logger()

# A worker's log line: its time, "[namespace#level]" and the text (textlog's format).
# Twisted's legacy lines ("[-] ...", "[gemfcgi.server.GeminiFactory] ...") have no level.
_WORKER_LINE = re.compile(r"\S+ \[([^\]#]*)(?:#(\w+))?\] (.*)", re.DOTALL)
_LEVELS = {level.name: level for level in LogLevel.iterconstants()}

MIN_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
# A worker that lived less than this is "dying at start": back off.
QUICK_DEATH = 5.0
# How long a reload lets the generation it replaces serve while the new one
# starts; it stops as soon as the new one listens, and after this once any
# new worker does (never before: the port would have nobody accepting).
RETIRE_AFTER = 10.0
# Seconds past the drain timeout after which a stop kills a worker that has
# not ended: its own drain ends it at the timeout, so it is hung.
WORKER_KILL_GRACE = 10.0
# How long the last message of a read waits for its further lines.
HELD_MESSAGE_WAIT = 0.05


class _Refuse(Protocol):
    def connectionMade(self) -> None:
        self.transport.abortConnection()


class OpenSocket:
    """A socket the parent holds open for its workers (it never accepts on it)."""

    def __init__(self, description: str, port: IListeningPort, proxied: bool) -> None:
        self.description = description
        self.port = port
        self.proxied = proxied
        port.stopReading()
        # Closed here without shutdown(): that would end the socket for the
        # workers sharing it too (their accept() fails with EINVAL, and
        # what waits in its backlog is reset) while they still serve.
        port._shouldShutdown = False

    @property
    def fd(self) -> int:
        return self.port.fileno()

    def worker_description(self) -> str:
        family = family_name(self.port.socket.family)
        return f"{HAPROXY_PREFIX if self.proxied else ''}adopted:fd={self.fd}:family={family}"

    def close(self) -> Deferred:
        return self.port.stopListening() or succeed(None)


def open_socket(reactor, description: str) -> OpenSocket:
    proxied, bare = split_proxied(description)
    failures: list = []
    ports: list = []
    refuse = Factory.forProtocol(_Refuse)
    refuse.noisy = False
    server_endpoint(reactor, bare).listen(refuse).addCallbacks(
        ports.append, failures.append
    )
    if failures:
        raise listen_failed(description, failures[0])
    port = ports[0]
    log.info("listening on {where} ({description})", where=listening_place(port.getHost()),
             description=description)
    return OpenSocket(description, port, proxied)


def _messages(lines: list[bytes]) -> list[str]:
    """
    Lines as the messages they are: the log writes a message's further
    lines indented by a tab, and they join the line before them again.
    """
    messages: list[str] = []
    for line in lines:
        text = line.decode("utf-8", "replace")
        if text.startswith("\t") and messages:
            messages[-1] += "\n" + text[1:]
        else:
            messages.append(text)
    return messages


class WorkerProcess(ProcessProtocol):
    """One worker: its output goes to the parent's log, its end to the pool."""

    def __init__(self, pool: "WorkerPool", number: int, generation: int) -> None:
        self.pool = pool
        self.number = number
        self.generation = generation
        self.started = pool.reactor.seconds()
        self.ended: Deferred = Deferred()
        self._partial = b""
        # The lines of the last message read, not logged yet (``outReceived``).
        self._held: list[bytes] = []
        self._flush: Any = None
        # The namespace and level of the last line: a message's further
        # lines (tab-indented) that come in a later read go with it.
        self._last = ("gemfcgi.prefork", LogLevel.info, "gemfcgi.prefork#info")
        # Until its first line, a worker may not have its SIGUSR1 handler
        # yet (the default action ends the process): a reopen waits.
        self.ready = False
        self.reopen_when_ready = False
        # Once it says it listens, the generation before it may stop.
        self.serving = False

    def outReceived(self, data: bytes) -> None:
        # A line per request: logged as text, without the format machinery,
        # at the level the worker logged it (its "[namespace#level]").
        if not self.ready:
            self.ready = True
            if self.reopen_when_ready:
                self.pool._signal_all([self], signal.SIGUSR1)
        *lines, self._partial = (self._partial + data).split(b"\n")
        if not lines:
            return
        # The last message may go on in the next read (a traceback's
        # tab-indented lines): it waits for it, briefly, to stay one event.
        lines = self._held + lines
        start = len(lines) - 1
        while start > 0 and lines[start].startswith(b"\t"):
            start -= 1
        self._held = lines[start:]
        self._log_lines(lines[:start])
        if self._flush is not None and self._flush.active():
            self._flush.reset(HELD_MESSAGE_WAIT)  # a read per access line: no new timer each
        else:
            self._flush = self.pool.reactor.callLater(HELD_MESSAGE_WAIT, self._log_held)

    def _log_held(self) -> None:
        self._flush = None
        held, self._held = self._held, []
        self._log_lines(held)

    def _log_lines(self, lines: list[bytes]) -> None:
        for text in _messages(lines):
            found = _WORKER_LINE.match(text)
            if found is not None:
                # The worker's own namespace and level, and the parent's time
                # alone: the same line as in one process, with the worker named.
                namespace, level_name, rest = found.groups()
                level = _LEVELS.get(level_name or "info", LogLevel.info)
                # As written: Twisted's legacy lines have no level in it.
                system = f"{namespace}#{level.name}" if level_name else namespace
                self._last = (namespace, level, system)
            elif text.startswith("\t"):
                (namespace, level, system), rest = self._last, text[1:]
            else:
                log.observer(text_event(log, f"[worker {self.number}] {text}"))
                continue
            event = text_event(log, f"[worker {self.number}] {rest}", level)
            event["log_namespace"] = namespace
            event["log_system"] = system
            log.observer(event)
            if not self.serving and rest.startswith("listening on "):
                self.serving = True
                self.pool.worker_serving(self)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._log_held()
        if self._partial:
            self._log_lines([self._partial])
            self._partial = b""
        self.pool.worker_ended(self, reason)
        self.ended.callback(None)

    def connectionMade(self) -> None:
        self.pid: Optional[int] = self.transport.pid


class WorkerPool(Service):
    """The parent's side of prefork: sockets and a generation of workers."""

    def __init__(
        self,
        config: model.Config,
        workers: int,
        listen: Optional[Sequence[str]] = None,
        timeouts: Optional[Timeouts] = None,
        max_connections: Optional[int] = None,
        drain_timeout: float = 30.0,
        reactor=None,
        fixed_count: bool = False,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.count = workers
        # Set by --workers; otherwise each configuration's prefork decides.
        self.fixed_count = fixed_count
        self.listen = list(listen) if listen else None
        self.timeouts = timeouts or Timeouts()
        self.max_connections = max_connections
        self.drain_timeout = drain_timeout
        self.identity = identity_for(config)
        # Read once per generation: a worker restarted later serves these.
        self.key_files = key_files(config)
        self.sockets: dict[str, OpenSocket] = {}
        self.apps: dict[str, SpawnedApp] = {}
        # Programs a reload retired, not stopped yet; the stops begun.
        self._retired_apps: list[SpawnedApp] = []
        self._app_stops: list[Deferred] = []
        self.workers: dict[int, WorkerProcess] = {}
        # Workers of earlier generations, finishing their requests: they may
        # still use spawned programs, and log requests.
        self.draining: set[WorkerProcess] = set()
        # Of those, the ones still serving until the new generation listens.
        self._to_retire: list[WorkerProcess] = []
        self._retire_timer = None
        # RETIRE_AFTER passed with no new worker listening yet.
        self._retire_overdue = False
        self.generation = 0
        # The number the next generation's first worker gets.
        self._next_number = 0
        self._delays: dict[int, float] = {}
        self._stopping = False
        self._unwanted: list[str] = []
        self._restore_signals: list[Callable[[], None]] = []
        # The parent serves no connection: what it frees is what a start
        # or a reload read.
        self.memory = MemoryReturner(self.reactor, libc_malloc_trim())

    # -- sockets ----------------------------------------------------------

    def _open_sockets(self, config: model.Config) -> None:
        planned = plan_listeners(config, self.listen)
        wanted = [listener.description for listener in planned]
        for listener in planned:
            if listener.description not in self.sockets:
                try:
                    self.sockets[listener.description] = open_socket(self.reactor, listener.description)
                except ListenError as problem:
                    raise opening_failed(problem, listener, self.sockets) from None
        self._unwanted = [d for d in self.sockets if d not in wanted]

    def _wanted_sockets(self) -> list[OpenSocket]:
        return [s for d, s in self.sockets.items() if d not in self._unwanted]

    # -- spawned FastCGI applications, once for all workers ------------------

    def _share_apps(self, config: model.Config) -> model.Config:
        """
        Start each ``fastcgi spawn`` program here, once, and give the
        workers a copy of ``config`` that reaches it through its socket.
        The socket is made inside the chroot, and owned by the user, that
        the workers will have.
        """
        worker_config = copy.deepcopy(config)
        chroot = self.identity.chroot if self.identity else None
        owner = (self.identity.uid, self.identity.gid) if self.identity else None
        for server in worker_config.servers:
            for options in [server.options, *(loc.options for loc in server.locations)]:
                fastcgi = options.fastcgi
                if fastcgi is None or not isinstance(fastcgi.address, model.FastCGISpawn):
                    continue
                command = fastcgi.address.command
                app = self.apps.get(command)
                if app is None:
                    app = SpawnedApp(f"spawn:{command}", command, self.reactor,
                                     directory=chroot, owner=owner)
                    self.apps[command] = app
                    app.startService()
                else:
                    app.retry_now()
                path = app.socket_path
                assert path is not None
                if chroot:
                    path = "/" + os.path.relpath(path, chroot)
                # A unix socket, connected in the turn that asks
                # (``UnixSocketEndpoint``), named by the program in the log.
                fastcgi.address = model.FastCGISocket(path, name=app.name)
        return worker_config

    def _retire_apps(self, config: model.Config) -> list[SpawnedApp]:
        wanted = {
            a.command for a in fastcgi_addresses(config) if isinstance(a, model.FastCGISpawn)
        }
        return [self.apps.pop(command) for command in list(self.apps) if command not in wanted]

    def _plan(self, number: int) -> WorkerPlan:
        return WorkerPlan(
            config=self.worker_config,
            listen=[s.worker_description() for s in self._wanted_sockets()],
            timeouts=self.timeouts,
            max_connections=self.max_connections,
            drain_timeout=self.drain_timeout,
            identity=self.identity,
            number=number,
            parent=os.getpid(),
            key_files=self.key_files,
        )

    # -- workers ----------------------------------------------------------

    def _spawn(self, number: int) -> None:
        process = WorkerProcess(self, number, self.generation)
        # Only the sockets this generation serves: a socket the file no longer
        # lists must close once the old generation is gone.
        child_fds: dict[int, object] = {0: "w", 1: "r", 2: "r"}
        for held in self._wanted_sockets():
            child_fds[held.fd] = held.fd
        self.reactor.spawnProcess(
            process,
            sys.executable,
            [sys.executable, "-m", "gemfcgi.worker"],
            env=without_activation(os.environ),
            childFDs=child_fds,
        )
        process.transport.writeToChild(0, pickle.dumps(self._plan(number)))
        process.transport.closeChildFD(0)
        self.workers[number] = process
        log.info("started worker {n} (pid {pid})", n=number, pid=process.pid)

    def worker_ended(self, process: WorkerProcess, reason) -> None:
        if self.workers.get(process.number) is not process:
            self.draining.discard(process)
            if process in self._to_retire:
                self._to_retire.remove(process)
            # Its number is a new worker's now: the pid tells them apart.
            log.info("retired worker {n} (pid {pid}) ended", n=process.number, pid=process.pid)
            return
        del self.workers[process.number]
        if self._stopping:
            return
        lived = self.reactor.seconds() - process.started
        delay = self._delays.get(process.number, MIN_RESTART_DELAY)
        delay = min(delay * 2, MAX_RESTART_DELAY) if lived < QUICK_DEATH else MIN_RESTART_DELAY
        self._delays[process.number] = delay
        log.warn(
            "worker {n} (pid {pid}) ended ({reason}); restarting in {delay:.1f} s",
            n=process.number,
            pid=process.pid,
            reason=reason.value,
            delay=delay,
        )
        self.reactor.callLater(delay, self._respawn, process.number, process.generation)

    def worker_serving(self, process: WorkerProcess) -> None:
        """A worker listens: once all of its generation do, the one before stops."""
        current = self.workers
        if current.get(process.number) is not process:
            return
        if self._retire_overdue or (
            len(current) == self.count and all(worker.serving for worker in current.values())
        ):
            self._retire_now()

    def _retire_when_due(self) -> None:
        """RETIRE_AFTER after a reload: the old generation stops if a new worker serves."""
        self._retire_timer = None
        if any(worker.serving for worker in self.workers.values()):
            self._retire_now()
            return
        self._retire_overdue = True
        log.warn(
            "no worker of the new generation listens {after:.0f} s after the reload: the "
            "previous one serves on until one does",
            after=RETIRE_AFTER,
        )

    def _retire_now(self, signum: int = signal.SIGHUP) -> list[WorkerProcess]:
        """
        The generation a reload replaced stops: with SIGHUP its requests in
        flight run their course (``gemfcgi.worker``); SIGTERM when the
        server itself stops.
        """
        if self._retire_timer is not None and self._retire_timer.active():
            self._retire_timer.cancel()
        self._retire_timer = None
        self._retire_overdue = False
        leaving, self._to_retire = self._to_retire, []
        self._signal_all(leaving, signum)
        return leaving

    def _respawn(self, number: int, generation: int) -> None:
        if not self._stopping and generation == self.generation and number not in self.workers:
            self._spawn(number)

    def _kill_hung(self, processes) -> None:
        """The workers still running well past the drain timeout: hung, killed, and named."""
        hung = [p for p in processes if not p.ended.called]
        for process in hung:
            log.warn(
                "worker {n} (pid {pid}) still running {grace:g} s after the drain timeout: "
                "sending SIGKILL",
                n=process.number, pid=process.pid, grace=WORKER_KILL_GRACE,
            )
        self._signal_all(hung, signal.SIGKILL)

    def _signal_all(self, processes, signum: int) -> None:
        """
        Send ``signum`` (a number: Twisted's ``signalProcess`` names only
        HUP, STOP, INT, KILL and TERM) to each worker. One that has just
        ended is no failure; anything else is logged, and the others still
        get the signal.
        """
        for process in processes:
            try:
                process.transport.signalProcess(signum)
            except ProcessExitedAlready:
                pass
            except Exception:
                log.failure(
                    "cannot send {signal} to worker {n} (pid {pid})",
                    signal=signal.Signals(signum).name,
                    n=process.number,
                    pid=process.pid,
                )

    # -- service ----------------------------------------------------------

    def privilegedStartService(self) -> None:
        # twistd calls this before it gives up root (--uid): the sockets
        # are opened now, as in one process.
        super().privilegedStartService()
        self._open_sockets(self.config)

    def startService(self) -> None:
        super().startService()
        self._open_sockets(self.config)  # what privilegedStartService has not
        self.worker_config = self._share_apps(self.config)
        self._spawn_generation()
        if hasattr(signal, "SIGUSR1"):
            self._restore_signals = [
                on_signal(signal.SIGUSR1, self.reopen_logs, self.reactor),
                on_signal(signal.SIGUSR2, self.report_clients, self.reactor),
            ]
        self.memory.now()

    def _spawn_generation(self) -> None:
        """
        The workers of a new generation, numbered after those of the last:
        while a generation retires, its workers' log lines run on beside the
        new ones', and ``[worker 1]`` must name one process.
        """
        first, self._next_number = self._next_number, self._next_number + self.count
        for number in range(first, first + self.count):
            self._spawn(number)

    def reopen_logs(self) -> None:
        """
        SIGUSR1: each worker reopens its access log, those of earlier
        generations still finishing requests too; one just started gets the
        signal once it has written its first line (``WorkerProcess.ready``).
        """
        everyone = [*self.workers.values(), *self.draining]
        for process in everyone:
            if not process.ready:
                process.reopen_when_ready = True
        self._signal_all([p for p in everyone if p.ready], signal.SIGUSR1)

    def report_clients(self) -> None:
        """SIGUSR2: each worker says how many clients it has connected."""
        self._signal_all(
            [p for p in [*self.workers.values(), *self.draining] if p.ready], signal.SIGUSR2)

    def reload(self, config: model.Config) -> None:
        """A new generation with ``config``; the old one drains and ends."""
        identity = identity_for(config)
        files = key_files(config)
        self._open_sockets(config)
        old = list(self.workers.values())
        self.config, self.identity, self.key_files = config, identity, files
        self.worker_config = self._share_apps(config)
        retired = self._retire_apps(config)
        if not self.fixed_count and config.prefork != self.count:
            log.info("workers: {old} -> {new} (prefork)", old=self.count, new=config.prefork)
            self.count = config.prefork
        self.generation += 1
        self.workers = {}
        self._spawn_generation()
        # The generation replaced serves on until the new one listens, so
        # connections are always being accepted; one not known to listen
        # (reloads in quick succession) retires now: one that never came
        # to it ends at once, and one that listens already, its line not
        # read yet, finishes what it accepted as any retiring worker does.
        self._signal_all([p for p in old if not p.serving], signal.SIGHUP)
        self._to_retire.extend(p for p in old if p.serving)
        self._retire_overdue = False
        if self._to_retire and self._retire_timer is None:
            self._retire_timer = self.reactor.callLater(RETIRE_AFTER, self._retire_when_due)
        self.draining.update(old)
        # A retired program may serve any generation still finishing.
        users = list(self.draining)
        # A socket the file no longer lists is closed here now, and by the
        # old workers as their stop begins: new connections to it are
        # refused from then on, while its requests in flight finish.
        for description in self._unwanted:
            self.sockets.pop(description).close()
        self._unwanted = []
        if retired:
            self._retired_apps.extend(retired)
            DeferredList([p.ended for p in users]).addCallback(lambda _: self._stop_apps(retired))
        self.memory.now()

    def _stop_apps(self, retired: list[SpawnedApp]) -> None:
        """Stop retired programs once nobody uses them; a stop of the server waits for them."""
        for app in retired:
            if app in self._retired_apps:
                self._retired_apps.remove(app)
                stopping = app.stopService()
                self._app_stops.append(stopping)
                stopping.addBoth(self._app_stopped, stopping)

    def _app_stopped(self, result: Any, stopping: Deferred) -> Any:
        if stopping in self._app_stops:
            self._app_stops.remove(stopping)
        return result

    def stopService(self) -> Deferred:
        """
        Listeners close first: the parent closes its copies now and each
        worker its own as its graceful stop begins, so a new connection is
        refused at once while the requests in flight finish. The spawned
        FastCGI applications stop after the last worker, of whatever
        generation.
        """
        super().stopService()
        self._stopping = True
        self.memory.stop()
        for app in self.apps.values():
            # An application that ends while the workers drain (systemd
            # signals the whole cgroup) is not started again.
            app.stop_restarting()
        # Earlier generations, retiring without a limit or serving until
        # their successors listen, get SIGTERM too: the drain timeout holds
        # for every request from now on. All are waited for, and killed
        # with the rest if they hang.
        told = self._retire_now(signal.SIGTERM)
        processes = [*self.workers.values(), *self.draining]
        self._signal_all([p for p in processes if p not in told], signal.SIGTERM)
        closing = [s.close() for s in self.sockets.values()]
        self.sockets = {}
        killer = self.reactor.callLater(
            self.drain_timeout + WORKER_KILL_GRACE, self._kill_hung, processes
        )

        def ended(_):
            if killer.active():
                killer.cancel()
            # Only now: a SIGUSR1 while the workers drain still reaches them.
            restore, self._restore_signals = self._restore_signals, []
            for undo in restore:
                undo()
            # Programs a reload retired too: their stop may have begun as
            # their last users ended, or begins now.
            self._stop_apps(list(self._retired_apps))
            stops = [app.stopService() for app in self.apps.values()] + self._app_stops
            return DeferredList(closing + stops)

        return DeferredList([p.ended for p in processes]).addCallback(ended)
