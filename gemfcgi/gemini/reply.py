"""
A Gemini reply header, read from bytes that arrive in any fragmentation.

A FastCGI application that writes a raw Gemini header and an upstream
Gemini server behind a ``proxy`` block answer in the same form: ``NN SP
META CRLF`` (or ``NN CRLF``), ending within 1029 bytes (2 + 1 + 1024 + 2),
with a code from 10 to 69 (any of them, as gmid relays them: clients act on
the first digit, so ``21`` is a success) and, for 1x and 3x, a META in
UTF-8. An empty META on 2x means ``text/gemini; charset=utf-8``, and is sent
spelt out that way, since some clients reject a header without one. A TAB
instead of the space, a bare LF, or one digit is malformed.

The decision is a value: a ``ReplyHeader`` (the header to send, built and
checked by ``status.response_header`` like every other header, and the body
bytes that came with it) or a ``ReplyError`` (a message for the log). Nothing
here writes anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union
from urllib.parse import urlsplit

from gemfcgi.gemini import status

MAX_HEADER_BYTES = 1029

_DIGITS = b"0123456789"


@dataclass(frozen=True)
class ReplyHeader:
    """
    The Gemini header a reply starts with, and the body bytes after it.

    ``header`` is already built and checked by ``status.response_header``.
    """

    code: int
    meta: str
    header: bytes
    body: bytes = b""

    @property
    def sends_body(self) -> bool:
        """Only 2x replies carry a body; the rest is dropped, as gmid does."""
        return 20 <= self.code <= 29


@dataclass(frozen=True)
class ReplyError:
    """A reply that cannot be relayed, with what was wrong with it."""

    message: str


ReplyDecision = Union[ReplyHeader, ReplyError]


def decide(code: int, meta: str, body: bytes) -> ReplyDecision:
    """The header for ``code`` and ``meta``, or why the rules forbid it."""
    meta = status.sent_meta(code, meta)
    try:
        header = status.response_header(code, meta)
    except status.InvalidHeader as reason:
        return ReplyError(f"invalid header: {reason}")
    if 30 <= code <= 39:
        wrong = _not_a_uri_reference(meta)
        if wrong is not None:
            return ReplyError(f"invalid header: redirect to {meta[:80]!r}: {wrong}")
    return ReplyHeader(code, meta, header, body)


# The ASCII characters RFC 3986 leaves out of every URI (the space apart),
# and a '%' that starts no percent-encoding.
_NOT_IN_A_URI = re.compile(r'[\t"<>\\^`{|}]')
_BARE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _not_a_uri_reference(meta: str) -> Optional[str]:
    """
    Why a redirect's META is no URI reference (as the specification wants
    it), so that no client is sent somewhere it cannot parse; ``None`` if
    it is one (an IRI's non-ASCII letters are let through, as clients send
    them).
    """
    # Other blanks but the tab are controls, refused before; an IRI may
    # hold the non-ASCII ones (U+00A0, U+3000: RFC 3987's ucschar).
    if " " in meta:
        return "it holds a space"
    outside = _NOT_IN_A_URI.search(meta)
    if outside is not None:
        return f"it holds {outside.group()!r}, which no URI may"
    if _BARE_PERCENT.search(meta):
        return "a '%' not followed by two hexadecimal digits"
    if meta.count("#") > 1:
        return "it holds more than one '#'"
    try:
        urlsplit(meta).port  # a port out of range is found only when asked for
    except ValueError as error:
        return str(error)
    return None


def starts_like_a_header(start: bytes) -> Optional[bool]:
    """
    Whether ``start`` (a reply's first bytes) begins with two digits and a
    space or CR; ``None`` while fewer than three bytes tell nothing against it.
    """
    for index, byte in enumerate(start[:3]):
        expected = b" \r" if index == 2 else _DIGITS
        if byte not in expected:
            return False
    return True if len(start) >= 3 else None


def read_header(buffer: Union[bytes, bytearray]) -> Optional[ReplyDecision]:
    """The header at the start of ``buffer``; ``None`` while it may still come whole."""
    kind = starts_like_a_header(bytes(buffer[:3]))
    if kind is False:
        return ReplyError(f"malformed header {bytes(buffer[:40])!r}: not two digits and a space")
    # No header holds a LF: the first one ends it, and must follow a CR.
    newline = buffer.find(b"\n", 0, MAX_HEADER_BYTES)
    if newline < 0:
        if len(buffer) >= MAX_HEADER_BYTES:
            return ReplyError(f"header over {MAX_HEADER_BYTES} bytes")
        return None
    if buffer[newline - 1] != 0x0D:
        return ReplyError("malformed header: it ends with a bare LF, not CRLF")
    end = newline - 1
    line = bytes(buffer[:end])
    body = bytes(buffer[end + 2 :])
    code, rest = int(line[:2]), line[2:]
    if rest and not rest.startswith(b" "):
        return ReplyError(f"malformed header {line[:40]!r}: no space after the code")
    try:
        meta = rest[1:].decode("utf-8")
    except UnicodeDecodeError:
        return ReplyError("malformed header: META is not valid UTF-8")
    return decide(code, meta, body)


class GeminiReplyReader:
    """
    Reply bytes in, one ``ReplyDecision`` out, once enough has arrived.

    ``feed`` returns ``None`` while it needs more bytes; ``end`` gives the
    error for a peer that closed before a whole header. Once a decision is
    returned the bytes that follow are body, and belong to the caller.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._done = False

    def feed(self, data: bytes) -> Optional[ReplyDecision]:
        if self._done:
            raise RuntimeError("the reply header was already decided")
        self._buffer += data
        decision = read_header(self._buffer)
        if decision is not None:
            self._done = True
        return decision

    @property
    def received(self) -> int:
        """Bytes fed so far."""
        return len(self._buffer)

    def end(self) -> ReplyError:
        """The peer closed: what it sent is all there is."""
        self._done = True
        if b"\n" in self._buffer[:MAX_HEADER_BYTES]:
            return ReplyError("malformed header: it ends with a bare LF, not CRLF")
        return ReplyError(f"closed before a complete header ({len(self._buffer)} bytes received)")
