"""
Helpers for integration tests: a real gemfcgi process and real TLS clients.

The server runs as ``twistd -n gemfcgi`` in a child process, listening on
127.0.0.1 port 0; its log tells which port it got. Clients are the stdlib
``ssl`` module here; other tests drive openssl s_client and PyPI clients.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (\[[^\]]+\]|[^ ]+):(\d+) ")


class ServerProcess:
    """A gemfcgi server in a child process; ``stop()`` ends it with SIGTERM."""

    def __init__(
        self, command: Sequence[str], env: Optional[dict] = None, max_files: Optional[int] = None
    ) -> None:
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.command = list(command)

        def limit_files() -> None:
            if max_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            preexec_fn=limit_files,
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ports: list[int] = []

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self._lines.append(raw.decode("utf-8", "replace"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_for_log(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match:
        """The first match of ``pattern`` in the log from character ``since`` (``len(log)`` earlier)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search("".join(self._lines)[since:])
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"log never matched {pattern!r}:\n{''.join(self._lines)[since:]}")
                self._changed.wait(min(remaining, 0.2))

    def wait_listening(self, count: int = 1, timeout: float = 15.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            ports = [int(m.group(2)) for m in LISTENING.finditer(self.log)]
            if len(ports) >= count:
                self.ports = ports
                return ports
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"server did not start listening:\n{self.log}")
            time.sleep(0.05)

    @property
    def port(self) -> int:
        return self.ports[0]

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._reader.join(5)


TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def start_command(
    command: Sequence[str],
    env: Optional[dict] = None,
    listeners: int = 1,
    max_files: Optional[int] = None,
) -> ServerProcess:
    """Run ``command`` and wait until it logs ``listeners`` listening sockets."""
    server = ServerProcess(command, env=env, max_files=max_files)
    try:
        server.wait_listening(listeners)
    except AssertionError:
        server.stop()
        raise
    return server


def start_server(
    *args: str,
    env: Optional[dict] = None,
    listeners: int = 1,
    twistd_args: Sequence[str] = (),
    max_files: Optional[int] = None,
) -> ServerProcess:
    """``twistd -n gemfcgi ARGS`` in a child process, once it listens."""
    command = [*TWISTD, "-n", "--pidfile=", *twistd_args, "gemfcgi", *args]
    return start_command(command, env=env, listeners=listeners, max_files=max_files)


@dataclass
class Reply:
    header: bytes
    body: bytes
    clean_close: bool
    tls_version: str = ""
    session_reused: bool = False
    session: Optional[ssl.SSLSession] = None

    @property
    def status(self) -> int:
        return int(self.header[:2])

    @property
    def meta(self) -> str:
        return self.header[3:].decode("utf-8")


def pyopenssl_client(raw: socket.socket, timeout: float = 10):
    """
    A pyOpenSSL client on ``raw``, its handshake done: what Python's ssl
    module cannot do, a TLS close_notify with the socket kept (its
    ``shutdown()``). Blocking, each read for at most ``timeout`` seconds
    (pyOpenSSL takes a socket with a Python timeout for a non-blocking one).
    """
    from OpenSSL import SSL

    raw.settimeout(None)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(timeout), 0))
    tls = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), raw)
    tls.set_tlsext_host_name(b"localhost")
    tls.set_connect_state()
    tls.do_handshake()
    return tls


def client_context(
    cert: Optional[str] = None,
    key: Optional[str] = None,
    minimum: Optional[ssl.TLSVersion] = None,
    maximum: Optional[ssl.TLSVersion] = None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def memory_tls(raw: socket.socket):
    """A TLS client on memory BIOs over ``raw``, handshaken: (the object, its incoming BIO, its outgoing one)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            incoming.write(raw.recv(65536))
    raw.sendall(outgoing.read())
    return tls, incoming, outgoing



def served_certificate(port: int, name: str = "localhost") -> bytes:
    """The DER certificate the server at ``port`` presents for ``name``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_context().wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert(binary_form=True)


def read_to_end(
    tls: ssl.SSLSocket, data: bytes = b"", chunk_size: int = 65536, pause: float = 0.0
) -> tuple[bytes, bool]:
    """
    Everything until the server closes, appended to ``data``, and whether
    it closed with a TLS close_notify. ``pause`` makes a slow reader.
    """
    # A close without close_notify must raise, not read as an ordinary end
    # (Python's default hides it, and the test could not see a cut reply).
    tls.suppress_ragged_eofs = False
    try:
        while True:
            if pause:
                time.sleep(pause)
            chunk = tls.recv(chunk_size)
            if not chunk:
                return data, True
            data += chunk
    except (ssl.SSLError, OSError):
        return data, False


def raw_exchange(
    port: int,
    payload: bytes,
    sni: Optional[str] = "localhost",
    address: str = "127.0.0.1",
    context: Optional[ssl.SSLContext] = None,
    timeout: float = 10.0,
    session: Optional[ssl.SSLSession] = None,
) -> tuple[bytes, bool, dict]:
    """Send ``payload`` over TLS and read to the end; returns (bytes, clean close, facts)."""
    context = context or client_context()
    raw = socket.create_connection((address, port), timeout=timeout)
    tls = context.wrap_socket(raw, server_hostname=sni, session=session)
    facts = {"version": tls.version() or "", "reused": tls.session_reused, "session": None}
    tls.sendall(payload)
    data, clean = read_to_end(tls)
    facts["session"] = tls.session
    tls.close()
    return data, clean, facts


def fetch(port: int, url: str, **kwargs) -> Reply:
    """One Gemini request: ``url`` plus CRLF, the reply split into header and body."""
    data, clean, facts = raw_exchange(port, url.encode("utf-8") + b"\r\n", **kwargs)
    header, _, body = data.partition(b"\r\n")
    return Reply(header, body, clean, facts["version"], facts["reused"], facts["session"])


def file_with(path: Path, text: str, timeout: float = 5.0) -> str:
    """The file's content once it holds ``text`` (servers write their logs asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content or time.monotonic() > deadline:
            return content
        time.sleep(0.02)


def refused_soon(port: int, timeout: float = 3.0) -> bool:
    """Whether connections to ``port`` are refused within ``timeout`` (a port closes asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        time.sleep(0.02)
    return False


def held_from(*roots) -> list:
    """
    What ``roots`` hold, through instances and containers (not through
    classes, functions or modules, which reach everything).
    """
    import gc
    import types

    seen = {id(root) for root in roots}
    found, todo = list(roots), list(roots)
    while todo:
        for held in gc.get_referents(todo.pop()):
            if id(held) in seen or isinstance(held, (type, types.ModuleType, types.FunctionType)):
                continue
            seen.add(id(held))
            found.append(held)
            todo.append(held)
    return found
