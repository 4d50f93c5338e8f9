"""
Gemini status codes and the one place a response header is built.

Every header that leaves the server goes through ``response_header``, so the
rules of the specification (defined codes only, META required for 1x to 3x,
at most 1024 bytes, UTF-8 without BOM, no CR or LF) are enforced once.
"""

from __future__ import annotations

INPUT = 10
SENSITIVE_INPUT = 11
SUCCESS = 20
REDIRECT_TEMPORARY = 30
REDIRECT_PERMANENT = 31
TEMPORARY_FAILURE = 40
SERVER_UNAVAILABLE = 41
CGI_ERROR = 42
PROXY_ERROR = 43
SLOW_DOWN = 44
PERMANENT_FAILURE = 50
NOT_FOUND = 51
GONE = 52
PROXY_REQUEST_REFUSED = 53
BAD_REQUEST = 59
CLIENT_CERTIFICATE_REQUIRED = 60
CERTIFICATE_NOT_AUTHORISED = 61
CERTIFICATE_NOT_VALID = 62

DEFINED_CODES = frozenset(
    {10, 11, 20, 30, 31, 40, 41, 42, 43, 44, 50, 51, 52, 53, 59, 60, 61, 62}
)

MAX_META_BYTES = 1024


class InvalidHeader(ValueError):
    """A header that the specification does not allow, with the reason."""


def meta_required(code: int) -> bool:
    """1x asks a prompt, 2x names a MIME type, 3x a target: all need META."""
    return 10 <= code < 40


def response_header(code: int, meta: str = "") -> bytes:
    """
    Build ``NN SP META CRLF`` (or ``NN CRLF`` for an empty META on 4x to 6x).

    Raises ``InvalidHeader`` rather than send something a client could
    misread; callers turn that into a ``40``/``42`` of their own.
    """
    if code not in DEFINED_CODES:
        raise InvalidHeader(f"status {code} is not defined by the Gemini specification")
    if "\r" in meta or "\n" in meta:
        raise InvalidHeader("META contains a line break")
    if meta.startswith("\ufeff"):
        raise InvalidHeader("META starts with a byte order mark")
    encoded = meta.encode("utf-8")
    if len(encoded) > MAX_META_BYTES:
        raise InvalidHeader(f"META is {len(encoded)} bytes, more than {MAX_META_BYTES}")
    if not encoded:
        if meta_required(code):
            raise InvalidHeader(f"status {code} requires a META")
        return b"%d\r\n" % code
    return b"%d %s\r\n" % (code, encoded)
