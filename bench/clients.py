"""
Small Python clients for what gembench does not do.

- ``probe``: one request, to check a route works and learn its body size
  (gembench needs the exact size in ``-b``);
- ``IdleConnections``: many TLS connections that finished their handshake
  and then send nothing, as slow or idle clients do;
- ``SlowReader``: one client reading a long reply at a fixed rate, to see
  whether the server buffers what the client has not yet read.

They run in the benchmark's own process, which is pinned to the client CPU.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Optional

HOST = "127.0.0.1"


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _connect(port: int, timeout: float, receive_buffer: Optional[int] = None) -> ssl.SSLSocket:
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(timeout)
    if receive_buffer is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    try:
        raw.connect((HOST, port))
        return _context().wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


@dataclass(frozen=True)
class Reply:
    header: str
    body_size: int

    @property
    def ok(self) -> bool:
        return self.header.startswith("2")


def probe(port: int, path: str, timeout: float = 15.0) -> Reply:
    """Fetch ``gemini://localhost:PORT/path`` and return its header and body size."""
    with _connect(port, timeout) as tls:
        tls.sendall(f"gemini://localhost:{port}{path}\r\n".encode())
        data = bytearray()
        try:
            while chunk := tls.recv(65536):
                data += chunk
        except ssl.SSLEOFError:
            pass
    header, _, body = bytes(data).partition(b"\r\n")
    return Reply(header.decode("utf-8", "replace"), len(body))


class IdleConnections:
    """``count`` TLS connections, handshake done, no request sent; a context manager."""

    def __init__(self, port: int, count: int, timeout: float = 15.0) -> None:
        self.port, self.count, self.timeout = port, count, timeout
        self.sockets: list[ssl.SSLSocket] = []
        self.failed = 0
        self.seconds = 0.0

    def __enter__(self) -> "IdleConnections":
        started = time.monotonic()
        for _ in range(self.count):
            try:
                self.sockets.append(_connect(self.port, self.timeout))
            except OSError:
                self.failed += 1
        self.seconds = time.monotonic() - started
        return self

    def still_open(self) -> int:
        """How many the server has not closed yet (a closed one reads EOF at once)."""
        open_count = 0
        for tls in self.sockets:
            tls.setblocking(False)
            try:
                tls.recv(1)
            except (ssl.SSLWantReadError, BlockingIOError):
                open_count += 1
            except OSError:
                pass
        return open_count

    def __exit__(self, *exc_info: object) -> None:
        for tls in self.sockets:
            try:
                tls.close()
            except OSError:
                pass
        self.sockets.clear()


class SlowReader(threading.Thread):
    """Reads one reply at ``rate`` bytes/s for ``seconds``, then hangs up."""

    CHUNK = 16384

    def __init__(self, port: int, path: str, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.rate, self.seconds = port, path, rate, seconds
        self.received = 0
        self.header = ""
        self.error: Optional[str] = None

    def run(self) -> None:
        try:
            # A small receive buffer keeps the kernel from soaking up the reply for us.
            with _connect(self.port, 15.0, receive_buffer=64 * 1024) as tls:
                tls.sendall(f"gemini://localhost:{self.port}{self.path}\r\n".encode())
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) < self.seconds:
                    ahead = self.received / self.rate - elapsed
                    if ahead > 0:
                        time.sleep(min(ahead, self.seconds - elapsed))
                        continue
                    chunk = tls.recv(self.CHUNK)
                    if not chunk:
                        break
                    if not self.header:
                        self.header = chunk.partition(b"\r\n")[0].decode("utf-8", "replace")
                    self.received += len(chunk)
        except OSError as error:
            self.error = str(error)
