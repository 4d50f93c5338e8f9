"""
The floor under any Gemini server on Twisted, for scale in the benchmark.

A TLS listener as Twisted gives it (``TLSMemoryBIOProtocol`` over a TCP
port, pyOpenSSL with session tickets on) and a protocol that reads one
request line and answers it with a file read into memory at start-up. It
checks nothing, logs nothing and serves nothing else, so what it costs per
connection is what Twisted and OpenSSL cost before a server does any work
of its own.

Run as a script: ``python bare_twisted.py PORT ROOT CERT KEY``; it listens
on 127.0.0.1 and serves the regular files directly inside ROOT, up to
``MAX_FILE`` bytes each (the benchmark's 1 GiB file is for other tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

from OpenSSL import crypto
from twisted.internet import reactor, ssl
from twisted.internet.protocol import Factory, Protocol

MAX_LINE = 1026  # a 1024-byte URL and its CRLF
MAX_FILE = 16 * 2**20
MIME_TYPES = {".gmi": b"text/gemini"}


class OneLine(Protocol):
    """Answers the first line it reads, then closes."""

    def __init__(self, files: dict[bytes, bytes]) -> None:
        self.files = files
        self.buffer = b""
        self.answered = False

    def dataReceived(self, data: bytes) -> None:
        if self.answered:
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n")
        if end < 0:
            if len(self.buffer) > MAX_LINE:
                self.answer(b"59 request line too long\r\n")
            return
        url = self.buffer[:end]
        path = b"/" + url.partition(b"://")[2].partition(b"/")[2].partition(b"?")[0]
        self.answer(self.files.get(path, b"51 not found\r\n"))

    def answer(self, reply: bytes) -> None:
        self.answered = True
        self.transport.write(reply)
        self.transport.loseConnection()


def replies(root: Path) -> dict[bytes, bytes]:
    """Each file's whole reply, header included, by its URL path."""
    found = {}
    for path in root.iterdir():
        if path.is_file() and path.stat().st_size <= MAX_FILE:
            mime = MIME_TYPES.get(path.suffix, b"application/octet-stream")
            found[b"/" + path.name.encode()] = b"20 " + mime + b"\r\n" + path.read_bytes()
    return found


def main(argv: list[str]) -> None:
    port, root, cert, key = int(argv[0]), Path(argv[1]), Path(argv[2]), Path(argv[3])
    options = ssl.CertificateOptions(
        privateKey=crypto.load_privatekey(crypto.FILETYPE_PEM, key.read_bytes()),
        certificate=crypto.load_certificate(crypto.FILETYPE_PEM, cert.read_bytes()),
        enableSessionTickets=True,
    )
    files = replies(root)
    factory = Factory.forProtocol(lambda: OneLine(files))
    reactor.listenSSL(port, factory, options, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
