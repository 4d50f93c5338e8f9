"""
Hand-written upstreams for the proxy tests, each in threads of the test process.

- ``Peer(behaviour)``: a TCP server on 127.0.0.1 port 0; every accepted
  connection is handed to ``behaviour(conn, record)`` in a thread of its own,
  and ``record`` (a ``Record``) keeps what the front sent and did.
- ``mute``: accepts and never speaks (no TLS handshake ever).
- ``Blackhole()``: a port whose accept queue is full, so that connects to it hang.
- ``not_tls``: answers the ClientHello with plaintext, so the handshake fails.
- ``Scripted(cert, key)``: a Gemini server (TLS, or plain TCP without a
  certificate) that reads an optional PROXY v1 line and the request line, records
  both byte for byte, and answers as ``SCRIPT`` says for the request's path.
- ``Forwarder(path)``: a TCP port whose connections are relayed byte for byte
  to a unix socket (where a gemfcgi upstream listens, see the test module).
"""

from __future__ import annotations

import select
import socket
import struct
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

CHUNK = 65536
WAIT = 120.0  # how long a peer waits for the front before it gives up (only to avoid hanging)


@dataclass
class Record:
    """What one connection from the front did."""

    proxy_line: bytes = b""
    request: bytes = b""
    sni: str | None = None
    sent: int = 0  # body bytes written (``endless``)
    closed: threading.Event = field(default_factory=threading.Event)  # the front closed


class Peer:
    """A TCP server on 127.0.0.1 port 0 running ``behaviour`` for each connection."""

    def __init__(self, behaviour: Callable[[socket.socket, Record], None]) -> None:
        self.behaviour = behaviour
        self.records: list[Record] = []
        self._sockets: list[socket.socket] = []
        self._listening = socket.socket()
        self._listening.bind(("127.0.0.1", 0))
        self._listening.listen(64)
        self.port: int = self._listening.getsockname()[1]
        self._arrived = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listening.accept()
            except OSError:
                return  # closed
            record = Record()
            with self._arrived:
                self._sockets.append(conn)
                self.records.append(record)
                self._arrived.notify_all()
            threading.Thread(target=self._run, args=(conn, record), daemon=True).start()

    def _run(self, conn: socket.socket, record: Record) -> None:
        conn.settimeout(WAIT)
        try:
            self.behaviour(conn, record)
        except (OSError, ValueError):
            record.closed.set()
        finally:
            conn.close()

    def next_record(self, count_before: int, timeout: float = 30.0) -> Record:
        """The record of the first connection after ``count_before`` connections."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.records) <= count_before:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no connection reached the peer on port {self.port}")
                self._arrived.wait(remaining)
            return self.records[count_before]

    def close(self) -> None:
        self._listening.close()
        for conn in self._sockets:
            try:
                conn.close()
            except OSError:
                pass


class Blackhole:
    """A listening port whose accept queue one connection of ours fills: connects to it hang."""

    def __init__(self) -> None:
        self._listening = socket.socket()
        self._listening.bind(("127.0.0.1", 0))
        self._listening.listen(0)
        self.port: int = self._listening.getsockname()[1]
        self._filler = socket.create_connection(("127.0.0.1", self.port))

    def close(self) -> None:
        self._filler.close()
        self._listening.close()


def wait_for_close(sock: socket.socket, record: Record) -> None:
    """Read and drop whatever comes until the front closes the connection."""
    try:
        while sock.recv(CHUNK):
            pass
    except (OSError, ssl.SSLError):
        pass
    record.closed.set()


def keep_open(sock: socket.socket, record: Record) -> None:
    """Read past the front's close_notify, if any, then wait for its TCP close."""
    try:
        while sock.recv(CHUNK):
            pass
    except (OSError, ssl.SSLError):
        pass
    try:
        while socket.socket.recv(sock, CHUNK):  # beneath TLS: the TCP connection itself
            pass
    except OSError:
        pass
    record.closed.set()


def mute(conn: socket.socket, record: Record) -> None:
    """Accept, never speak: a TLS handshake that never ends."""
    wait_for_close(conn, record)


def not_tls(conn: socket.socket, record: Record) -> None:
    """Answer the ClientHello with a plaintext line: the handshake fails."""
    record.request = conn.recv(CHUNK)
    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nthis is not TLS\n")
    conn.shutdown(socket.SHUT_WR)
    wait_for_close(conn, record)


# -- a scripted Gemini server -------------------------------------------------------


@dataclass
class Reply:
    """Send ``data``; then end with a TLS close_notify, or cut the TCP connection without one."""

    data: bytes
    close_notify: bool = True


class Silent:
    """Read the request, never answer."""


@dataclass
class Stall:
    """Send ``data`` (a header and part of a body), then nothing more."""

    data: bytes


@dataclass
class Reset:
    """Send ``data``, then reset the TCP connection (no close_notify, no FIN)."""

    data: bytes


@dataclass
class KeepOpen:
    """
    Send ``data``, then keep the TCP connection open, answering no close_notify, until
    the front closes it: an upstream that never ends a connection on its own.
    """

    data: bytes


class Endless:
    """A ``20`` header, then a body that never ends, until the front closes."""


SCRIPT: dict[str, object] = {
    "/whole": Reply(b"20 text/plain\r\nwhole body\n"),
    "/gone": Reply(b"51 not here\r\nthis body is not to be relayed\n"),
    "/cut": Reply(b"20 text/plain\r\npartial", close_notify=False),
    "/no-crlf": Reply(b"20 " + b"x" * 2000),
    "/code-99": Reply(b"99 what\r\n"),
    "/code-09": Reply(b"09 what\r\n"),
    "/one-digit": Reply(b"2 text/gemini\r\nbody\n"),
    "/letters": Reply(b"2x text/gemini\r\nbody\n"),
    "/nothing": Reply(b""),
    "/half-header": Reply(b"20 text/ge"),
    "/silent": Silent(),
    "/stall": Stall(b"20 text/plain\r\nthe start"),
    "/gone-kept-open": KeepOpen(b"51 not here\r\n"),
    "/reset": Reset(b"20 text/plain\r\npartial"),
    "/endless": Endless(),
}


def server_context(cert: str, key: str, record_sni: Callable[[str | None], None],
                   client_ca: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)

    def sni_callback(tls, name, _context):
        record_sni(name)

    context.sni_callback = sni_callback
    return context


def read_line(sock: socket.socket, limit: int = 2048) -> bytes:
    """Bytes up to and including CRLF, read one at a time (nothing after it is consumed)."""
    line = b""
    while not line.endswith(b"\r\n") and len(line) < limit:
        byte = sock.recv(1)
        if not byte:
            break
        line += byte
    return line


def read_proxy_line(conn: socket.socket) -> bytes:
    """A PROXY v1 line, if the connection starts with one (before TLS), else ``b""``."""
    first = conn.recv(1, socket.MSG_PEEK)
    return read_line(conn, 108) if first == b"P" else b""


class Scripted(Peer):
    """
    A Gemini server answering each path as ``SCRIPT`` says; plain TCP if ``cert`` is None.
    With ``client_ca``, its TLS handshake requires a client certificate issued by that CA.
    """

    def __init__(self, cert: str | None = None, key: str | None = None,
                 client_ca: str | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        super().__init__(self._serve)

    def _serve(self, conn: socket.socket, record: Record) -> None:
        record.proxy_line = read_proxy_line(conn)
        sock: socket.socket = conn
        if self.cert is not None:
            def note(name):
                record.sni = name

            context = server_context(self.cert, self.key, note, self.client_ca)
            try:
                sock = context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):  # a client certificate it refused
                conn.close()
                record.closed.set()
                return
        record.request = read_line(sock)
        path = urlsplit(record.request.strip().decode("utf-8", "replace")).path
        action = SCRIPT.get(path, Reply(b"20 text/plain\r\nscripted " + path.encode() + b"\n"))
        if isinstance(action, Silent):
            wait_for_close(sock, record)
        elif isinstance(action, Stall):
            sock.sendall(action.data)
            wait_for_close(sock, record)
        elif isinstance(action, KeepOpen):
            sock.sendall(action.data)
            keep_open(sock, record)
        elif isinstance(action, Reset):
            sock.sendall(action.data)
            time.sleep(0.2)  # the data goes first; the reset must not overtake it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            record.closed.set()
        elif isinstance(action, Endless):
            endless(sock, record)
        else:
            assert isinstance(action, Reply)
            sock.sendall(action.data)
            end(sock, record, action.close_notify)

    def requests(self) -> list[bytes]:
        return [record.request for record in self.records]


def end(sock: socket.socket, record: Record, close_notify: bool) -> None:
    """End the reply with a close_notify (TLS) or a FIN, or cut the TCP connection without one."""
    if isinstance(sock, ssl.SSLSocket):
        if close_notify:
            try:
                sock = sock.unwrap()
            except (OSError, ssl.SSLError):
                record.closed.set()
                return
        else:
            # SSLSocket.shutdown forgets the TLS layer: a FIN, no close_notify.
            sock.shutdown(socket.SHUT_WR)
            wait_for_close(sock, record)
            return
    sock.shutdown(socket.SHUT_WR)
    wait_for_close(sock, record)


def endless(sock: socket.socket, record: Record) -> None:
    """Write a body for as long as the front takes it; note when it closes the connection."""
    sock.sendall(b"20 application/octet-stream\r\n")
    chunk = b"e" * CHUNK
    sock.settimeout(1.0)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            record.sent += sock.send(chunk)
        except (TimeoutError, ssl.SSLWantWriteError):
            continue  # the front is not reading: backpressure
        except (OSError, ssl.SSLError):
            record.closed.set()
            return
        # The front may have closed while we were writing; a readable socket says so.
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            try:
                if not sock.recv(CHUNK):
                    record.closed.set()
                    return
            except (TimeoutError, ssl.SSLWantReadError):
                pass
            except (OSError, ssl.SSLError):
                record.closed.set()
                return


# -- a byte relay to a unix socket -------------------------------------------------


class Forwarder:
    """
    A TCP port on 127.0.0.1 whose connections are relayed byte for byte to the unix socket
    ``path``. With ``proxy_header``, the PROXY v1 line a connection starts with is also kept
    in ``proxy_lines``.
    """

    def __init__(self, path: str, proxy_header: bool = False) -> None:
        self.path = path
        self.proxy_header = proxy_header
        self.proxy_lines: list[bytes] = []
        self.connections: list[tuple[socket.socket, socket.socket]] = []
        self._listening = socket.socket()
        self._listening.bind(("127.0.0.1", 0))
        self._listening.listen(64)
        self.port: int = self._listening.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                front, _ = self._listening.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(front,), daemon=True).start()

    def _relay(self, front: socket.socket) -> None:
        front.settimeout(WAIT)
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.connections.append((front, upstream))
        try:
            upstream.connect(self.path)
            if self.proxy_header:
                line = read_proxy_line(front)
                if line:
                    self.proxy_lines.append(line)
                    upstream.sendall(line)
        except OSError:
            front.close()
            upstream.close()
            return
        threading.Thread(target=_pipe, args=(upstream, front), daemon=True).start()
        _pipe(front, upstream)

    def close(self) -> None:
        self._listening.close()
        for pair in self.connections:
            for sock in pair:
                try:
                    sock.close()
                except OSError:
                    pass


def _pipe(source: socket.socket, destination: socket.socket) -> None:
    """Copy until ``source`` ends, then end ``destination`` (FIN), or close both on a reset."""
    try:
        while True:
            data = source.recv(CHUNK)
            if not data:
                destination.shutdown(socket.SHUT_WR)
                return
            destination.sendall(data)
    except OSError:
        for sock in (source, destination):
            try:
                sock.close()
            except OSError:
                pass
