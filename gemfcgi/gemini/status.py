"""
Gemini status codes and the one place a response header is built.

Every header that leaves the server goes through ``response_header``, so the
rules of the specification (two digits from 10 to 69, META required for 1x
and 3x, at most 1024 bytes, UTF-8 without BOM, no CR or LF) are enforced
once, with one of ours: no control character but the tab.

Codes the specification does not name (``21``, ``45``) pass: clients act on
the first digit, and gmid relays any code from 10 to 69 that a FastCGI
application writes. gemfcgi's own handlers use the constants below, the
codes the specification defines.
"""

from __future__ import annotations

import re

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
# Control characters other than the tab: a client shows META to its user,
# and an escape sequence in it would act on the user's terminal.
# C0 but the tab, DEL and C1 (U+0085 NEL, U+009B CSI, which terminals obey).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")

# What an empty META means for 2x, in the specification's words. It is sent
# spelt out: gemcall and Agunua reject a header whose META is empty, with or
# without the space before it.
DEFAULT_SUCCESS_META = "text/gemini; charset=utf-8"
# What an empty META on a failure is sent as, for the same clients (and
# AV-98 and amfora, which show nothing useful for one): the code's name.
DEFAULT_FAILURE_META = {
    40: "temporary failure",
    41: "server unavailable",
    42: "CGI error",
    43: "proxy error",
    44: "slow down",
    50: "permanent failure",
    51: "not found",
    52: "gone",
    53: "proxy request refused",
    59: "bad request",
    60: "client certificate required",
    61: "certificate not authorised",
    62: "certificate not valid",
}


def control_character(meta: str) -> str | None:
    """The first control character other than the tab in ``meta``, which no META may hold."""
    found = _CONTROL.search(meta)
    return found.group() if found is not None else None


class InvalidHeader(ValueError):
    """A header that the specification does not allow, with the reason."""


def meta_required(code: int) -> bool:
    """1x asks a prompt and 3x names a target: without META they mean nothing."""
    return 10 <= code < 20 or 30 <= code < 40


def sent_meta(code: int, meta: str) -> str:
    """
    The META a header carries: without blanks around it, and when that
    leaves none, on 2x spelt out as what it means, on 4x to 6x as the
    code's name (clients take "20  " for a malformed header).
    """
    meta = meta.strip(" \t")
    if meta or not 20 <= code < 70 or 30 <= code < 40:
        return meta
    if code < 30:
        return DEFAULT_SUCCESS_META
    # A code the specification does not name: its class's (40, 50, 60).
    return DEFAULT_FAILURE_META.get(code) or DEFAULT_FAILURE_META[code // 10 * 10]


def response_header(code: int, meta: str = "") -> bytes:
    """
    Build ``NN SP META CRLF``, without blanks around META, an empty META
    filled in on 2x and 4x to 6x (``sent_meta``).

    Raises ``InvalidHeader`` rather than send something a client could
    misread; callers turn that into a ``40``/``42`` of their own.
    """
    if not 10 <= code <= 69:
        raise InvalidHeader(f"status {code:02d} is not defined by the Gemini specification")
    meta = sent_meta(code, meta)
    if "\r" in meta or "\n" in meta:
        raise InvalidHeader("META contains a line break")
    control = control_character(meta)
    if control is not None:
        raise InvalidHeader(f"META contains the control character {control!r}")
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
