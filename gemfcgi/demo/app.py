"""
A small FastCGI application written on gemfcgi's own record codec.

Run it the way ``fastcgi spawn`` does, with its listening socket as fd 0:

    fastcgi spawn "python3 -m gemfcgi.demo.app"

or on a socket of its own: ``python3 -m gemfcgi.demo.app --listen
unix:/run/demo.sock`` (or ``tcp:127.0.0.1:9000``). It answers raw Gemini
replies: a greeting at ``.../hello`` that shows a few of the parameters
gemfcgi sends, and an input prompt at ``.../ask``. It is also the trivial
responder of the benchmark.

The functions above ``main`` are a minimal application-side toolkit (one
request per connection, a thread per connection, blocking sockets) that the
test applications reuse; they show how little a responder needs.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import unquote

from gemfcgi.fastcgi.records import (
    MAX_CONTENT_LENGTH,
    NULL_REQUEST_ID,
    BeginRequest,
    ProtocolStatus,
    RecordDecoder,
    RecordType,
    decode_pairs,
    encode_end_request,
    encode_get_values_result,
    encode_stream,
    encode_unknown_type,
)


@dataclass
class Request:
    """One request as an application sees it, and its connection."""

    connection: socket.socket
    request_id: int
    params: dict[str, str] = field(default_factory=dict)
    decoder: RecordDecoder = field(default_factory=RecordDecoder)

    def write(self, data: bytes) -> None:
        """Send ``data`` as STDOUT records."""
        self.connection.sendall(encode_stream(RecordType.STDOUT, data, self.request_id))

    def error(self, data: bytes) -> None:
        self.connection.sendall(encode_stream(RecordType.STDERR, data, self.request_id))

    def end(
        self,
        app_status: int = 0,
        protocol_status: int = ProtocolStatus.REQUEST_COMPLETE,
        data: bytes = b"",
    ) -> None:
        """
        Write ``data``, close STDOUT and end the request, in one send: the
        server then reads the whole reply in one go.
        """
        self.connection.sendall(
            encode_stream(RecordType.STDOUT, data, self.request_id, close=True)
            + encode_end_request(self.request_id, app_status, protocol_status)
        )


def read_request(connection: socket.socket) -> Optional[Request]:
    """
    Read BEGIN_REQUEST, the PARAMS stream and the STDIN stream.

    Management records are answered as the specification asks; ``None`` if
    the peer closes first.
    """
    decoder = RecordDecoder()
    request: Optional[Request] = None
    params = bytearray()
    params_done = stdin_done = False
    while not (params_done and stdin_done):
        data = connection.recv(MAX_CONTENT_LENGTH)
        if not data:
            return None
        for record in decoder.feed(data):
            if record.request_id == NULL_REQUEST_ID:
                connection.sendall(_management_reply(record.type, record.content))
            elif record.type == RecordType.BEGIN_REQUEST:
                BeginRequest.decode(record.content)
                request = Request(connection, record.request_id, decoder=decoder)
            elif record.type == RecordType.PARAMS:
                params += record.content
                params_done = not record.content
            elif record.type == RecordType.STDIN:
                stdin_done = not record.content
    assert request is not None
    request.params = {
        name.decode("utf-8", "replace"): value.decode("utf-8", "replace")
        for name, value in decode_pairs(bytes(params))
    }
    return request


def _management_reply(record_type: int, content: bytes) -> bytes:
    if record_type == RecordType.GET_VALUES:
        known = {b"FCGI_MAX_CONNS": b"100", b"FCGI_MAX_REQS": b"100", b"FCGI_MPXS_CONNS": b"0"}
        names = [name for name, _ in decode_pairs(content)]
        return encode_get_values_result((n, known[n]) for n in names if n in known)
    return encode_unknown_type(record_type)


Handler = Callable[[Request], None]


def serve(listening: socket.socket, handle: Handler, threaded: bool = True) -> None:
    """
    Accept connections for ever, one request each: in a thread each, or
    one after another (for handlers that answer at once, the cheapest).
    """
    while True:
        connection, _ = listening.accept()
        if threaded:
            threading.Thread(target=_serve_one, args=(connection, handle), daemon=True).start()
        else:
            _serve_one(connection, handle)


def _serve_one(connection: socket.socket, handle: Handler) -> None:
    with connection:
        try:
            request = read_request(connection)
            if request is not None:
                handle(request)
        except OSError:
            pass  # the server went away (client gone, ABORT_REQUEST then close)


def listening_socket(where: Optional[str]) -> socket.socket:
    """fd 0 (FCGI_LISTENSOCK_FILENO) by default, else ``unix:PATH`` or ``tcp:HOST:PORT``."""
    if where is None:
        return socket.socket(fileno=0)
    kind, _, rest = where.partition(":")
    if kind == "unix":
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening.bind(rest)
    elif kind == "tcp":
        host, _, port = rest.rpartition(":")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host.strip("[]"), int(port)))
    else:
        raise ValueError(f"--listen takes unix:PATH or tcp:HOST:PORT, not {where!r}")
    listening.listen(128)
    return listening


# The demo pages ---------------------------------------------------------------


def one_line(text: str) -> str:
    """``text`` with its line breaks and other control characters as spaces."""
    return "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in text)


def demo(request: Request) -> None:
    params = request.params
    page = params.get("GEMINI_URL_PATH", "").rstrip("/").rpartition("/")[2]
    query = params.get("QUERY_STRING", "")
    if page == "ask" and not query:
        reply = b"10 What is your name?\r\n"
    elif page in ("hello", "ask"):
        # What a visitor typed stays one heading: a line break or control
        # character in it must not start a link line of the visitor's own.
        name = one_line(unquote(query)) if page == "ask" else "visitor"
        certificate = params.get("TLS_CLIENT_HASH") or "no certificate"
        lines = [
            f"# Hello, {name}!",
            "",
            f"* client: {params.get('REMOTE_ADDR', '')}",
            f"* certificate: {certificate}",
            f"* server name: {params.get('SERVER_NAME', '')}",
            f"* query: {query or '(none)'}",
            f"* served by: {params.get('SERVER_SOFTWARE', '')}",
            "",
            "This page comes from a FastCGI application (gemfcgi.demo.app) that gemfcgi",
            "started itself and reaches over a socket, one connection per request.",
            "",
            "=> ask Tell it your name",
            "=> / Back to the start",
            "",
        ]
        reply = b"20 text/gemini\r\n" + "\n".join(lines).encode("utf-8")
    else:
        reply = b"51 not found\r\n"
    request.end(data=reply)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", help="unix:PATH or tcp:HOST:PORT (default: fd 0)")
    options = parser.parse_args(argv)
    try:
        # The demo pages are answered at once: no thread per connection.
        serve(listening_socket(options.listen), demo, threaded=False)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
