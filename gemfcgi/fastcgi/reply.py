"""
What a FastCGI application's STDOUT means for the Gemini client.

``ReplyHeaderReader`` is fed STDOUT bytes as they arrive, in any
fragmentation, and holds them until it can decide how the reply starts. The
decision is a value: a ``ReplyHeader`` (the Gemini header to send, and the
body bytes that followed it) or a ``ReplyError`` (a message for the log; the
client gets ``42``). Nothing here writes anything: the relay sends the header
through ``gemfcgi.gemini.status.response_header``, the one place headers are
built, so a FastCGI reply obeys the same rules as every other reply.

Two kinds of reply are understood, told apart by their first three bytes:

* **A Gemini header**, ``NN SP META CRLF`` (or ``NN CRLF``), as gmid relays
  it: two digits followed by a space or CR. It must end with CRLF within
  1029 bytes (2 + 1 + 1024 + 2), use a code from 10 to 69 (any of them, as
  gmid: clients act on the first digit, so ``21`` is a success), and carry
  META, as UTF-8, when the code is 1x or 3x. An empty META on 2x means
  ``text/gemini; charset=utf-8`` (the specification's default), and is sent
  spelt out that way, since some clients reject a header without META. A TAB
  instead of the space, a bare LF, or one digit is malformed.
* **A CGI header block** (RFC 3875 section 6): anything else. ``Name: value``
  lines separated by CRLF or LF, ended by an empty line, at most 8 KiB. Names
  are case-insensitive; ``Status``, ``Content-Type`` and ``Location`` may each
  appear once; other fields are ignored. It is translated as follows, first
  matching row wins:

  ============================================  =================================
  CGI header                                    Gemini header
  ============================================  =================================
  ``Status: 400``                               ``59 <reason>``
  ``Status: 401``                               ``60 <reason>``
  ``Status: 403``                               ``50 <reason>``
  ``Status: 404``                               ``51 <reason>``
  ``Status: 410``                               ``52 <reason>``
  ``Status: 429``                               ``44 <seconds>`` (``Retry-After``),
                                                else ``44 <reason>``
  ``Status: 503``                               ``41 <reason>``
  ``Status:`` any other 4xx                     ``50 <reason>``
  ``Status:`` any other 5xx                     ``42 <reason>``
  ``Location: L`` with ``Status: 301`` or 308   ``31 L``
  ``Location: L``, no Status or another 3xx     ``30 L``
  ``Content-Type: T``, no Status or a 2xx       ``20 T``
  ``Status: 1xx``, a 3xx without Location, a    error (``42`` to the client)
  2xx or no Status without Content-Type
  ============================================  =================================

  ``<reason>`` is the reason phrase written after the status code
  (``Status: 404 No such page`` gives ``51 No such page``), cut to the 1024
  bytes of a META where it is longer; without one it is
  the HTTP phrase of the code (``Not Found``), or ``CGI error`` for codes
  HTTP does not name. ``<seconds>`` is a ``Retry-After`` in seconds (not an
  HTTP date): Gemini's ``44`` carries the seconds to wait as its META.
  Location is ignored with a 2xx or error Status, as in HTTP. An empty
  ``Content-Type`` is an error: RFC 3875 requires a media type there.

Only a 2x reply has a body: for every other code the caller sends the header
alone and drops the rest (``ReplyHeader.sends_body``), as gmid does.
"""

from __future__ import annotations

import enum
import re
from http import HTTPStatus
from typing import Optional

from gemfcgi.gemini import status
from gemfcgi.gemini.reply import (
    ReplyDecision,
    ReplyError,
    ReplyHeader,
    decide,
    read_header,
    starts_like_a_header,
)

# The decision's types are the Gemini reply's, named here too for the relay.
__all__ = ["ReplyDecision", "ReplyError", "ReplyHeader", "ReplyHeaderReader", "MAX_CGI_HEADER_BYTES"]

MAX_CGI_HEADER_BYTES = 8192

_CGI_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CGI_STATUS = re.compile(r"([0-9]{3})(?:[ \t]+(.*))?")
_TRANSLATED_FIELDS = ("status", "content-type", "location")
# Read too, but not refused when given twice (the first counts): a 429's
# Retry-After in seconds is the META of ``44``.
_RETRY_AFTER = "retry-after"
_DELTA_SECONDS = re.compile(r"[0-9]{1,9}")

_GEMINI_CODE_OF_HTTP_ERROR = {
    400: status.BAD_REQUEST,
    401: status.CLIENT_CERTIFICATE_REQUIRED,
    403: status.PERMANENT_FAILURE,
    404: status.NOT_FOUND,
    410: status.GONE,
    429: status.SLOW_DOWN,
    503: status.SERVER_UNAVAILABLE,
}


class _State(enum.Enum):
    UNDECIDED = "undecided"
    GEMINI = "gemini"
    CGI = "cgi"
    DONE = "done"


class ReplyHeaderReader:
    """
    STDOUT bytes in, one ``ReplyDecision`` out, once enough has arrived.

    ``feed`` returns ``None`` while it needs more bytes. When the backend
    ends the request or closes before a decision, ``end`` gives the error.
    Once a decision is returned the reader is done: the bytes that follow
    are body, and belong to the caller.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = _State.UNDECIDED
        # CGI lines already parsed: where the next one starts, and the fields.
        self._next_line = 0
        self._fields: dict[str, str] = {}

    def feed(self, data: bytes) -> Optional[ReplyDecision]:
        if self._state is _State.DONE:
            raise RuntimeError("the reply header was already decided")
        self._buffer += data
        decision = self._READERS[self._state](self)
        if decision is not None:
            self._state = _State.DONE
        return decision

    def end(self, reset: bool = False) -> ReplyDecision:
        """
        The backend sent END_REQUEST or closed (``reset``: reset the
        connection): what it sent is all there is.
        """
        if self._state is _State.DONE:
            raise RuntimeError("the reply header was already decided")
        self._state = _State.DONE
        how = "connection reset by the backend" if reset else "END or EOF"
        return ReplyError(f"{how} before a complete header ({len(self._buffer)} bytes received)")

    def _read_kind(self) -> Optional[ReplyDecision]:
        """Two digits then a space or CR start a Gemini header; anything else is CGI."""
        kind = starts_like_a_header(bytes(self._buffer[:3]))
        if kind is None:
            return None
        if kind:
            self._state = _State.GEMINI
            return self._read_gemini_header()
        self._state = _State.CGI
        return self._read_cgi_header()

    def _read_gemini_header(self) -> Optional[ReplyDecision]:
        return read_header(self._buffer)

    def _read_cgi_header(self) -> Optional[ReplyDecision]:
        while True:
            newline = self._buffer.find(b"\n", self._next_line, MAX_CGI_HEADER_BYTES)
            if newline < 0:
                if len(self._buffer) >= MAX_CGI_HEADER_BYTES:
                    return ReplyError(f"CGI header over {MAX_CGI_HEADER_BYTES} bytes")
                return None
            line = bytes(self._buffer[self._next_line : newline]).removesuffix(b"\r")
            self._next_line = newline + 1
            if not line:
                return _translate_cgi(self._fields, bytes(self._buffer[newline + 1 :]))
            error = self._add_cgi_field(line)
            if error is not None:
                return error

    def _add_cgi_field(self, line: bytes) -> Optional[ReplyError]:
        name, colon, value = line.partition(b":")
        if not colon or not _CGI_FIELD_NAME.fullmatch(name):
            if not self._fields and line[:3].isdigit():
                # "200 OK": an HTTP status line, or a Gemini code of three digits.
                return ReplyError(f"malformed header {line[:40]!r}: a Gemini status has two digits")
            return ReplyError(f"malformed header line {line[:40]!r}")
        key = name.decode("ascii").lower()
        if key not in _TRANSLATED_FIELDS:
            if key == _RETRY_AFTER and key not in self._fields:
                self._fields[key] = value.decode("ascii", "replace").strip(" \t")
            return None
        if key in self._fields:
            return ReplyError(f"malformed header: {name.decode('ascii')} given twice")
        try:
            self._fields[key] = value.decode("utf-8").strip(" \t")
        except UnicodeDecodeError:
            return ReplyError(f"malformed header: {name.decode('ascii')} is not UTF-8")
        return None

    # The reader of each state, as plain functions: a table of bound methods
    # on the instance would be a reference cycle, left to the garbage
    # collector once per request.
    _READERS = {
        _State.UNDECIDED: _read_kind,
        _State.GEMINI: _read_gemini_header,
        _State.CGI: _read_cgi_header,
    }


def _translate_cgi(fields: dict[str, str], body: bytes) -> ReplyDecision:
    """Apply the table of the module docstring, first matching row wins."""
    http_status, reason = None, ""
    if "status" in fields:
        match = _CGI_STATUS.fullmatch(fields["status"])
        if match is None:
            return ReplyError(f"malformed header: invalid Status {fields['status']!r}")
        http_status, reason = int(match.group(1)), match.group(2) or ""
        if not 200 <= http_status <= 599:
            return ReplyError(f"unsupported CGI Status {http_status}")
    if http_status is not None and http_status >= 400:
        other = status.PERMANENT_FAILURE if http_status < 500 else status.CGI_ERROR
        code = _GEMINI_CODE_OF_HTTP_ERROR.get(http_status, other)
        retry_after = fields.get(_RETRY_AFTER, "")
        if code == status.SLOW_DOWN and _DELTA_SECONDS.fullmatch(retry_after):
            # Gemini's 44 carries the seconds to wait as its META.
            return decide(code, str(int(retry_after)), body)
        return decide(code, _within_a_meta(reason) or _default_reason(http_status), body)
    status_class = None if http_status is None else http_status // 100
    if "location" in fields and status_class in (None, 3):
        permanent = http_status in (301, 308)
        code = status.REDIRECT_PERMANENT if permanent else status.REDIRECT_TEMPORARY
        return decide(code, fields["location"], body)
    if status_class == 3:
        return ReplyError(f"CGI Status {http_status} without Location")
    if "content-type" in fields:
        if not fields["content-type"]:
            return ReplyError("malformed header: empty Content-Type")
        return decide(status.SUCCESS, fields["content-type"], body)
    if status_class == 2:
        return ReplyError(f"CGI Status {http_status} without Content-Type")
    return ReplyError("CGI header has none of Status, Content-Type, Location")


def _within_a_meta(reason: str) -> str:
    """
    A reason phrase cut to the bytes a META holds, at a character's end:
    words too many for a META are no reason to hide the code behind a 42.
    """
    encoded = reason.encode("utf-8")
    if len(encoded) <= status.MAX_META_BYTES:
        return reason
    return encoded[: status.MAX_META_BYTES].decode("utf-8", "ignore")


def _default_reason(http_status: int) -> str:
    try:
        return HTTPStatus(http_status).phrase
    except ValueError:
        return "CGI error"
