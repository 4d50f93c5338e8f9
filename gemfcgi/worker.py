"""
A worker process: serves on sockets its parent opened.

Started by ``gemfcgi.prefork`` as ``python -m gemfcgi.worker``; it reads
its ``WorkerPlan`` (the configuration, already checked by the parent, the
inherited sockets, and the keys as the parent read them) from standard
input, adopts the sockets, drops privileges and serves until SIGTERM, when it stops gracefully.

SIGHUP retires it: the parent's reload has a new generation serving, and
this one stops as on SIGTERM but lets its requests in flight run as long as
their own timers allow, since a reload interrupts nothing. A SIGTERM after
that (the server stops) gives them the drain timeout from then on.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
from dataclasses import dataclass, field
from typing import Collection, Optional

from gemfcgi.config import model
from gemfcgi.privileges import Identity
from gemfcgi.server import Timeouts

PR_SET_PDEATHSIG = 1


@dataclass
class WorkerPlan:
    """Everything a worker needs, handed over by its parent."""

    config: model.Config
    listen: list[str]
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_connections: Optional[int] = None
    drain_timeout: float = 30.0
    identity: Optional[Identity] = None
    number: int = 0
    # The parent's pid: a worker whose parent is gone stops.
    parent: Optional[int] = None
    # The certificate, key and OCSP files as the parent read and checked
    # them for this generation (``service.key_files``), by path.
    key_files: dict[str, bytes] = field(default_factory=dict)


def serve(plan: WorkerPlan, missed: Collection[int] = ()) -> None:
    from twisted.internet import reactor
    from twisted.logger import Logger, globalLogBeginner

    from gemfcgi.certificates import use_files
    from gemfcgi.privileges import drop_privileges
    from gemfcgi.service import GemfcgiService
    from gemfcgi.textlog import text_observer

    globalLogBeginner.beginLoggingTo([text_observer(sys.stdout)], redirectStandardIO=False)
    use_files(plan.key_files)
    # Checked by the parent before it started the workers.
    service = GemfcgiService(
        plan.config,
        listen=plan.listen,
        timeouts=plan.timeouts,
        max_connections=plan.max_connections,
        drain_timeout=plan.drain_timeout,
        reactor=reactor,
    )
    service.becomes = plan.identity
    service.startService()
    if signal.SIGUSR1 in missed:
        service.reopen_access_log()
    if plan.identity is not None:
        drop_privileges(plan.identity)
        service.entered_chroot(plan.identity.chroot)
    # Every stop signal is handled in the reactor's thread, in the order
    # they came: a SIGTERM right behind a SIGHUP limits the retirement.
    log = Logger(namespace="gemfcgi.worker")
    stopping: list[int] = []

    def stop(signum: int) -> None:
        if not stopping:
            stopping.append(signum)
            if signum == signal.SIGHUP:
                service.drain_timeout = None
                log.info("retiring: a new generation serves; the requests in flight finish first")
            else:
                log.info("received {signal}: stopping", signal=signal.Signals(signum).name)
            reactor.stop()
        elif signum == signal.SIGHUP:
            pass
        elif service.drain_timeout is None:
            service.limit_the_drain(plan.drain_timeout)
        else:
            # Twisted's own handler would ask a stopping reactor to stop
            # again, and log that failure as a critical traceback.
            log.info("received {signal} again: already stopping", signal=signal.Signals(signum).name)

    def on_signal(signum: int, frame: object) -> None:
        reactor.callFromThread(stop, signum)

    def take_the_signals() -> None:
        # Once running: the reactor installs its own handlers as it starts.
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        if signal.SIGHUP in missed:
            stop(signal.SIGHUP)

    reactor.callWhenRunning(take_the_signals)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def main() -> None:
    # The parent passes a SIGUSR1 on once this worker has written a line,
    # which may come before the service has its handler: one that comes
    # before is kept, and the access file reopened once the service is up.
    # So is a SIGHUP (retire), which must not end the process meanwhile;
    # a SIGUSR2 (count the clients) before the service is up has none to count.
    missed: set[int] = set()
    for signum in (signal.SIGUSR1, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: missed.add(signum))
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    # A parent killed outright (SIGKILL, the OOM killer) cannot stop its
    # workers: they would serve on, holding the port a restart needs. The
    # kernel sends them SIGTERM instead, and they stop as usual.
    _stop_with_the_parent()
    plan: WorkerPlan = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    if plan.parent is not None and os.getppid() != plan.parent:
        sys.exit(f"gemfcgi worker {plan.number}: the server process is gone; not starting")
    serve(plan, missed)


def _stop_with_the_parent() -> None:
    """SIGTERM when the parent dies (Linux's PR_SET_PDEATHSIG), where there is such a thing."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (AttributeError, OSError):
        pass


if __name__ == "__main__":
    main()
