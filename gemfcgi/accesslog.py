"""
One access-log line per request.

Lines are ``twisted.logger`` events in namespace ``gemfcgi.access`` with
their fields as keys, so observers (a file in gmid's styles, syslog, JSON)
format them as they need; the default text is gmid's ``legacy`` style plus
the bytes sent and the duration.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

log = Logger(namespace="gemfcgi.access")

LEGACY_FORMAT = "{client} GET {url} {status} {meta} {bytes_sent} {duration_ms:.1f}ms"


@dataclass
class AccessRecord:
    """What one request did, filled in as it goes."""

    client: str
    url: str = ""
    host: str = ""
    status: int = 0
    meta: str = ""
    bytes_sent: int = 0
    started: float = 0.0
    client_name: str = "-"
    enabled: bool = True


def emit(record: AccessRecord, now: float) -> None:
    log.info(
        LEGACY_FORMAT,
        client=record.client,
        url=record.url,
        host=record.host,
        status=record.status,
        meta=record.meta,
        bytes_sent=record.bytes_sent,
        duration_ms=(now - record.started) * 1000.0,
        client_name=record.client_name,
    )
