"""
A FastCGI application that breaks the protocol on purpose, one way per page.

The mode is the last segment of the path (``/bad/eof-before-header``); see
``MODES``. Listens on fd 0 (as a spawned app) or ``--listen``. What it
notices of the server (an ABORT_REQUEST) goes to stderr, which a spawning
gemfcgi logs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from gemfcgi.demo.app import Request, listening_socket, serve
from gemfcgi.fastcgi.records import (
    ProtocolStatus,
    Record,
    RecordType,
    encode_end_request,
    encode_stream,
)

HEADER = b"20 text/gemini\r\n"


def stdout(data: bytes, request_id: int = 1) -> bytes:
    return encode_stream(RecordType.STDOUT, data, request_id)


def record_with_version(version: int) -> bytes:
    encoded = bytearray(Record(RecordType.STDOUT, 1, HEADER).encode())
    encoded[0] = version
    return bytes(encoded)


def wait_for_close(request: Request) -> None:
    """Hold the connection until the server closes it, reporting an abort."""
    connection = request.connection
    connection.settimeout(30)
    while True:
        data = connection.recv(4096)
        if not data:
            return
        for record in request.decoder.feed(data):
            if record.type == RecordType.ABORT_REQUEST:
                print(f"ABORT_REQUEST received for request {record.request_id}",
                      file=sys.stderr, flush=True)


def die_soon() -> None:
    time.sleep(0.05)  # the server reads what was sent before the process goes
    os._exit(1)


def stream_forever(request: Request) -> None:
    request.write(HEADER)
    block = stdout(b"y" * 65000)
    try:
        while True:
            request.connection.sendall(block)
    except OSError:
        # The server closed: what it sent before closing is still readable.
        wait_for_close(request)


MODES = {
    "eof-before-header": lambda r: r.connection.sendall(stdout(b"20 text/gem")),
    "end-before-header": lambda r: r.connection.sendall(stdout(b"20 text/gem") + encode_end_request()),
    "long-header": lambda r: r.connection.sendall(stdout(b"20 " + b"a" * 1100 + b"\r\n") + encode_end_request()),
    "bad-code": lambda r: r.connection.sendall(stdout(b"99 nope\r\n") + encode_end_request()),
    "wrong-id": lambda r: r.connection.sendall(stdout(HEADER, request_id=2) + encode_end_request()),
    "wrong-id-after-header": lambda r: r.connection.sendall(
        stdout(HEADER + b"start\n") + stdout(b"stray\n", request_id=3) + stdout(b"never\n") + encode_end_request()),
    "unknown-record": lambda r: r.connection.sendall(Record(RecordType.DATA, 1, b"hello").encode()),
    "wrong-version": lambda r: r.connection.sendall(record_with_version(2)),
    "eof-after-header": lambda r: r.connection.sendall(stdout(HEADER + b"partial body\n")),
    # A crash after much of the body: more than the client's kernel takes at once.
    "eof-after-3-mib": lambda r: r.connection.sendall(stdout(HEADER + b"z" * (3 << 20))),
    "app-status-after-header": lambda r: r.connection.sendall(
        stdout(HEADER + b"some body\n") + encode_end_request(app_status=7)),
    "overloaded": lambda r: r.connection.sendall(encode_end_request(protocol_status=ProtocolStatus.OVERLOADED)),
    "cant-mpx-conn": lambda r: r.connection.sendall(encode_end_request(protocol_status=ProtocolStatus.CANT_MPX_CONN)),
    "unknown-role": lambda r: r.connection.sendall(encode_end_request(protocol_status=ProtocolStatus.UNKNOWN_ROLE)),
    "stderr": lambda r: r.connection.sendall(
        encode_stream(RecordType.STDERR, b"something went wrong in the app\n")
        + stdout(HEADER + b"fine anyway\n") + encode_end_request()),
    "empty-meta": lambda r: r.connection.sendall(stdout(b"20 \r\n# no meta\n") + encode_end_request()),
    "bare-51": lambda r: r.connection.sendall(stdout(b"51\r\n") + encode_end_request()),
    "no-meta": lambda r: r.connection.sendall(stdout(b"20\r\n# no meta\n") + encode_end_request()),
    "code-21": lambda r: r.connection.sendall(stdout(b"21 text/gemini\r\n# 21\n") + encode_end_request()),
    # A crash on this request's input, after its header: the process dies.
    "die-after-header": lambda r: r.connection.sendall(stdout(HEADER + b"partial\n")) or die_soon(),
    # The same before a byte of its reply.
    "die-on-input": lambda r: die_soon(),
    # A whole reply, once the client has had time to go away.
    "late": lambda r: time.sleep(0.5) or r.connection.sendall(stdout(HEADER + b"late\n") + encode_end_request()),
    "silent": wait_for_close,
    "forever": stream_forever,
}


def handle(request: Request) -> None:
    mode = request.params.get("GEMINI_URL_PATH", "").rpartition("/")[2]
    action = MODES.get(mode)
    if action is None:
        request.write(b"51 no such mode\r\n")
        request.end()
        return
    action(request)
    # Give the server time to read before the close, so "EOF" cases are EOFs
    # after the data and not resets.
    time.sleep(0.05)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen")
    serve(listening_socket(parser.parse_args().listen), handle)
