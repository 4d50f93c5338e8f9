"""
The rules gmid applies to single values, as pure functions.

Each ``check_*`` returns ``None`` when the value is fine or the message to
report; the parser attaches the file and line. Keeping them here lets the
parser read as grammar and lets each rule be tested on its own.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Optional, Union

from gemfcgi.gemini.status import MAX_META_BYTES, control_character

PREFORK_MIN, PREFORK_MAX = 1, 15  # gmid's parser rejects 16 and more
MAX_BLOCK_META = 1024
MAX_PARAM_BYTES = 510
MAX_PORT = 65535
# No value of a configuration is this long; a string that grows past it
# (joined macros doubling each other) is an error rather than a MemoryError.
MAX_STRING = 65536

BLOCK_FORMATS = frozenset("%pqPN")
LOG_STYLES = ("legacy", "common", "combined", "condensed")

# What syslog facility names gmid accepts, plus local0, which its parser
# forgets although its manual lists it.
SYSLOG_FACILITIES = frozenset(
    ["daemon", "ftp", "user"] + [f"local{n}" for n in range(8)]
)

# libtls ``tls_config_parse_protocols``: the words of a ``protocols``
# string and the versions each stands for.
_ALL_TLS = ("tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3")
_SECURE_TLS = ("tlsv1.2", "tlsv1.3")
TLS_PROTOCOL_WORDS = {
    "all": _ALL_TLS,
    "legacy": _ALL_TLS,
    "default": _SECURE_TLS,
    "secure": _SECURE_TLS,
    "tlsv1": _ALL_TLS,  # every TLS 1.x, as libtls defines TLS_PROTOCOL_TLSv1
    **{version: (version,) for version in _ALL_TLS},
}


def check_prefork(n: int) -> Optional[str]:
    if PREFORK_MIN <= n <= PREFORK_MAX:
        return None
    return f"invalid prefork number {n} (use {PREFORK_MIN} to {PREFORK_MAX})"


def check_port(n: int) -> Optional[str]:
    if 0 <= n <= MAX_PORT:
        return None
    return f"invalid port number {n} (use 0 to {MAX_PORT}, or a service name in quotes)"


def check_port_digits(text: str) -> Optional[str]:
    """``check_port`` for a port written as digits, however many (``int`` refuses past 4300)."""
    digits = text.lstrip("0") or "0"
    if len(digits) <= len(str(MAX_PORT)):
        return check_port(int(digits))
    shown = f"{text[:12]}... ({len(text)} digits)"
    return f"invalid port number {shown} (use 0 to {MAX_PORT}, or a service name in quotes)"


def check_index(index: str) -> Optional[str]:
    """Why ``index`` names no file in a directory (gmid's open would fail, or leave the root)."""
    if ".." in index.split("/") or index.startswith("/"):
        # gmid would open it relative to the directory, wherever it
        # leads; here nothing is served from outside the root.
        return f"index {index!r} must name a file inside the directory (no '..' and no leading '/')"
    if index.endswith("/"):
        # No file answers to it (gmid's open fails with ENOTDIR), so
        # every directory would get its listing or 51.
        return f"index {index!r} ends with '/': it must name a file"
    if index.rpartition("/")[2] in ("", "."):
        # The directory itself: every directory gets 51, or its listing.
        return f"index {index!r} names the directory, not a file in it"
    return None


def check_strip(n: int) -> Optional[str]:
    if n >= 1:
        return None
    return f"invalid strip number {n} (use 1 or more; leave strip out to strip nothing)"


def check_fastcgi_strip(n: int) -> Optional[str]:
    # gmid does not range-check this one; 0 is a no-op, a negative makes no sense.
    if n >= 0:
        return None
    return f"invalid fastcgi strip number {n} (use 0 or more)"


def check_block_code(code: int) -> Optional[str]:
    if 10 <= code <= 69 and not 20 <= code <= 29:
        return None
    return f"invalid block code {code} (use 10-19 or 30-69; 2x codes cannot be blocked to)"


def check_block_meta(code: int, meta: str) -> Optional[str]:
    # In bytes, as a reply counts its META: 513 "é" passed, and every
    # request then got 40.
    size = len(meta.encode("utf-8", "surrogatepass"))
    if size > MAX_BLOCK_META:
        return f"block meta is too long ({size} bytes, at most {MAX_BLOCK_META})"
    control = control_character(meta)
    if control is not None:
        # A reply's META may hold none; gmid sends it.
        return f"block meta contains the control character {control!r}"
    i = 0
    while i < len(meta):
        if meta[i] == "%":
            spec = meta[i + 1 : i + 2]
            if spec == "" or spec not in BLOCK_FORMATS:
                shown = f"%{spec}" if spec else "% at the end"
                return (
                    f"invalid format specifier {shown} in block meta "
                    "(use %% for a '%', %p path, %q query, %P port, %N server name)"
                )
            i += 2
        else:
            i += 1
    return None


# Asked at each use of a value: a $macro of 60,000 characters used 100,000
# times was looked through every time (23 s).
@lru_cache(maxsize=256)
def check_header_text(what: str, text: str, before: str = "") -> Optional[str]:
    """
    Why ``text``, which goes into replies' META after ``before`` (``lang``
    after ``text/gemini;lang=``, a media type alone), cannot: every reply
    it would go into would be ``40``.
    """
    control = control_character(text)
    if control is not None:
        return f"{what} {text!r} contains the control character {control!r}: no reply may hold it"
    size = len((before + text).encode("utf-8"))
    if size > MAX_META_BYTES:
        shown = text if len(text) <= 40 else text[:40] + "..."
        return (f"{what} {shown!r} makes a META of {size} bytes, over the {MAX_META_BYTES} a reply "
                "may hold")
    return None


def block_meta_may_be_empty(code: int, meta: str) -> Optional[str]:
    """
    Why a 1x or 3x ``block return`` whose META is empty (or only ``%q``,
    empty without a query) cannot answer as written; ``None`` if it can.
    A reply needs its prompt or its target: gemfcgi sends 40 instead (gmid
    sends the empty META).
    """
    if not (10 <= code < 20 or 30 <= code < 40) or meta.replace("%q", ""):
        return None
    needs = "a prompt" if code < 20 else "a target"
    when = "" if not meta else " when the request has no query"
    return (f'block return {code} "{meta}": status {code} needs {needs}, and this META is empty'
            f"{when}: such a request gets 40 instead")


def check_param(what: str, text: str) -> Optional[str]:
    size = len(text.encode("utf-8", "surrogateescape"))
    if size <= MAX_PARAM_BYTES:
        return None
    return f"fastcgi param {what} is too long ({size} bytes, at most {MAX_PARAM_BYTES})"


def check_absolute(directive: str, path: str) -> Optional[str]:
    if path.startswith("/"):
        return None
    return (
        f"{directive} \"{path}\": not an absolute path "
        f"({directive} is read before chroot; write the full path, starting with '/')"
    )


def protocol_words(text: str) -> list[str]:
    """The words of a ``protocols`` string, lowercased, as libtls reads them."""
    return [word for _, word in _protocol_items(text)]


def _protocol_items(text: str) -> list[tuple[str, str]]:
    """Each item of a ``protocols`` string as written, and its word."""
    return [(item, item.lstrip(" \t").lower()) for item in text.replace(":", ",").split(",")]


def tls_versions(text: str) -> frozenset[str]:
    """
    The TLS versions a ``protocols`` string allows, read as libtls reads it:
    words separated by ``,`` or ``:``, in any case, each adding its versions,
    or removing them when written after ``!`` (gemfcgi also takes ``-``). A
    removal from an empty set starts from ``all``. Raises
    ``ValueError`` with the message to report.
    """
    versions: set[str] = set()
    for item, word in _protocol_items(text):
        negated = word[:1] in ("!", "-")
        if negated:
            word = word[1:]
            if not versions:
                versions.update(_ALL_TLS)
        if word not in TLS_PROTOCOL_WORDS:
            raise ValueError(
                f'invalid protocols string "{text}": unknown protocol "{item.strip()}" '
                '(use e.g. "tlsv1.2,tlsv1.3", "tlsv1.3", "secure", "all" or "all:!tlsv1.2")'
            )
        if negated:
            versions.difference_update(TLS_PROTOCOL_WORDS[word])
        else:
            versions.update(TLS_PROTOCOL_WORDS[word])
    return frozenset(versions)


def check_protocols(text: str) -> Optional[str]:
    try:
        tls_versions(text)
    except ValueError as problem:
        return str(problem)
    return None


def check_server_protocols(text: str) -> Optional[str]:
    """A server's ``protocols`` must leave TLS 1.2 or 1.3: gemfcgi offers nothing older."""
    problem = check_protocols(text)
    if problem is None and not tls_versions(text) & set(_SECURE_TLS):
        return f'protocols "{text}" allows no TLS 1.2 or 1.3, the only versions gemfcgi offers'
    return problem


def syslog_facility(name: str) -> Optional[str]:
    """The facility ``name`` means (lower case, no ``LOG_``), or ``None``."""
    lowered = name.lower()
    if lowered.startswith("log_"):
        lowered = lowered[4:]
    return lowered if lowered in SYSLOG_FACILITIES else None


def old_host_port(text: str) -> Optional[tuple[str, str]]:
    """
    ``("host", "port")`` when ``text`` is gmid 1.8's ``host:port`` spelling.

    gmid 2.x keeps the ``:port`` as part of the host name, which never works;
    an IPv6 literal (more than one ``:``) is left alone.
    """
    host, sep, port = text.rpartition(":")
    if sep and host and ":" not in host and port.isdigit():
        return host, port
    return None


def port_number(port: Union[int, str]) -> int:
    """A port as written (a number, or a service name of /etc/services) as a number; OSError if unknown."""
    if isinstance(port, int):
        return port
    if port.isascii() and port.isdigit():
        # Leading zeros may be many (int() refuses past 4300 digits); other
        # digits ("²", Arabic-Indic) are no number here, as in the parser.
        return int(port.lstrip("0") or "0")
    return socket.getservbyname(port, "tcp")
