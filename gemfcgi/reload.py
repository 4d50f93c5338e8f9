"""
SIGHUP: read the configuration file again.

A file with errors changes nothing: the running configuration stays and
every ``FILE:LINE`` error is logged. A good file takes effect for new
connections; requests in flight finish with the configuration they started
with (each connection holds its own ``Site``).
"""

from __future__ import annotations

import signal
from typing import Callable, Optional

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from gemfcgi.certificates import CertificateError
from gemfcgi.check import load_and_check
from gemfcgi.config import ConfigError, model

log = Logger()


class ConfigReloader(Service):
    """Reloads ``path`` into ``apply`` on SIGHUP (or when ``reload`` is called)."""

    def __init__(
        self,
        path: str,
        defines: Optional[dict[str, str]],
        apply: Callable[[model.Config], None],
        reactor: IReactorThreads,
    ) -> None:
        self.path = path
        self.defines = defines
        self.apply = apply
        self.reactor = reactor
        self._previous_handler = None

    def startService(self) -> None:
        super().startService()
        self._previous_handler = signal.signal(signal.SIGHUP, self._on_signal)

    def stopService(self) -> None:
        super().stopService()
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None

    def _on_signal(self, signum, frame) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        log.info("reloading configuration from {path}", path=self.path)
        try:
            config, warnings = load_and_check(self.path, self.defines)
        except ConfigError as error:
            for diagnostic in error.diagnostics:
                log.error("reload failed, keeping the running configuration: {d}", d=str(diagnostic))
            return False
        try:
            self.apply(config)
        except (CertificateError, OSError, ValueError) as error:
            log.error(
                "reload failed, keeping the running configuration: {path}: {error}",
                path=self.path,
                error=str(error),
            )
            return False
        for diagnostic in warnings:
            log.warn("warning: {d}", d=str(diagnostic))
        log.info("configuration reloaded from {path}", path=self.path)
        return True
