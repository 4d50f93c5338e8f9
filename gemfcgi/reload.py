"""
SIGHUP: read the configuration again.

A configuration file with errors changes nothing: the running configuration
stays and every ``FILE:LINE`` error is logged. A good one takes effect for
new connections; requests in flight finish with the configuration they
started with (each connection holds its own ``Site``). Without a file
(quick mode, the embedded default, a program embedding gemfcgi) there is
still something to reload: the certificate and key files, renewed in place.
"""

from __future__ import annotations

import os
import signal
from typing import Callable, Optional, Sequence

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from gemfcgi.certificates import CertificateError
from gemfcgi.check import load_and_check
from gemfcgi.config import ConfigError, model
from gemfcgi.config.errors import in_file_order
from gemfcgi.service import on_signal

log = Logger()


class Reloader(Service):
    """
    On SIGHUP (or when ``reload`` is called), ``load`` a configuration and
    ``apply`` it; ``source`` names where it comes from in the log.

    ``load`` returns the configuration and its warnings, and raises
    ``ConfigError`` (its diagnostics are logged one by one) or
    ``CertificateError``, ``OSError`` or ``ValueError`` (logged in one line)
    when it cannot be used; so does ``apply``. Either way the running
    configuration stays.
    """

    def __init__(
        self,
        source: str,
        load: Callable[[], tuple[model.Config, Sequence[object]]],
        apply: Callable[[model.Config], None],
        reactor: IReactorThreads,
    ) -> None:
        self.source = source
        self.load = load
        self.apply = apply
        self.reactor = reactor
        # What gives SIGHUP back (``on_signal``): a handler shared with any
        # other Reloader of the process, each reloading its own service,
        # and with the handler that was there before, which is called too.
        self._undo: Optional[Callable[[], None]] = None
        self._restore_trigger = None
        self._stopping = False

    def privilegedStartService(self) -> None:
        """
        The handler goes in before any service starts (twistd calls this
        first): a hangup while the server starts its FastCGI programs
        reloads once the reactor runs, rather than ending the process by
        the default action and leaving them behind.
        """
        super().privilegedStartService()
        self._take_hangups()

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        if self._restore_trigger is not None:
            # Started again before the reactor stopped: the handler is still ours.
            self.reactor.removeSystemEventTrigger(self._restore_trigger)
            self._restore_trigger = None
        self._take_hangups()

    def _take_hangups(self) -> None:
        if self._undo is None:
            self._undo = on_signal(signal.SIGHUP, self.reload, self.reactor)

    def stopService(self) -> None:
        """
        The handler stays while the rest of the server stops: its siblings
        drain their requests after this returns (a ``MultiService`` stops its
        children all at once), and a hangup meanwhile must neither reload
        nor, by the default action, end the process. It is given back when
        the reactor has stopped; at once when only this Reloader is taken
        out of a program that goes on (its parent still runs), which would
        otherwise answer every hangup until then with "the server is
        stopping".
        """
        super().stopService()
        self._stopping = True
        if self._undo is None:
            return
        if self.parent is not None and self.parent.running:
            self._restore_handler()
            return
        running = getattr(self.reactor, "running", False)
        if running and hasattr(self.reactor, "addSystemEventTrigger"):
            self._restore_trigger = self.reactor.addSystemEventTrigger(
                "after", "shutdown", self._restore_handler
            )
        else:
            self._restore_handler()

    def _restore_handler(self) -> None:
        self._restore_trigger = None
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()

    def reload(self) -> bool:
        if self._stopping or (self.running and self.parent is not None and not self.parent.running):
            # The stop has begun and drains its requests: what a reload
            # would start (a spawned program, a listener) would only be
            # stopped again.
            log.info("not reloading from {source}: the server is stopping", source=self.source)
            return False
        log.info("reloading configuration from {source}", source=self.source)
        try:
            config, warnings = self.load()
            self.apply(config)
        except ConfigError as error:
            for diagnostic in error.diagnostics:
                log.error("reload failed, keeping the running configuration: {d}", d=str(diagnostic))
            return False
        except (CertificateError, OSError, ValueError) as error:
            self._failed(error)
            return False
        except Exception:
            # A bug (in gemfcgi, or in a program's own load), not a bad
            # file: said as a failed reload, with its traceback, rather
            # than as an unhandled error of the reactor.
            log.failure("reload failed: {source}", source=self.source)
            return False
        for diagnostic in in_file_order(warnings, self.source):
            log.warn("warning: {d}", d=str(diagnostic))
        log.info("configuration reloaded from {source}", source=self.source)
        return True

    def _failed(self, error: Exception) -> None:
        log.error(
            "reload failed, keeping the running configuration: {source}: {error}",
            source=getattr(error, "origin", None) or self.source,
            error=str(error),
        )


class ConfigReloader(Reloader):
    """Reloads the configuration file ``path`` (with ``-D`` ``defines``) into ``apply``."""

    def __init__(
        self,
        path: str,
        defines: Optional[dict[str, str]],
        apply: Callable[[model.Config], None],
        reactor: IReactorThreads,
        refuse: Optional[Callable[[model.Config], list]] = None,
    ) -> None:
        # Relative paths in the file name what they named at the start,
        # wherever the server has changed directory to since (--rundir).
        # ``refuse``: what ``apply`` cannot take, asked of the file as read
        # (before its paths are checked, which such a line may change).
        base = os.getcwd()
        super().__init__(path, lambda: load_and_check(path, defines, base, refuse), apply, reactor)
