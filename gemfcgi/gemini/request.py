"""
The Gemini request line, parsed without any I/O.

``parse_request_line`` takes the bytes before CRLF and returns a ``Request``
or raises ``RequestError`` carrying the status the client must get. Nothing
else can escape it: the protocol turns the error into a response header.

Percent-decoding and dot-segment removal happen here, before routing, so the
path a handler sees is the only path there is: it always starts with ``/``,
never holds ``.`` or ``..`` segments, NUL or control characters, and a
leading ``..`` is dropped (it cannot climb above the root).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote_to_bytes

from gemfcgi.gemini import status
from gemfcgi.gemini.hosts import IDEOGRAPHIC_DOTS, canonical_host, is_address, unicode_host

MAX_REQUEST_BYTES = 1024
# The port a URL without one means.
DEFAULT_PORT = 1965

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# RFC 3986's port is any run of digits: leading zeros name the same port.
_PORT = re.compile(r"[0-9]+")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# C0, DEL and C1: RFC 3987 allows none of them in an IRI, even escaped here.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f]")
# What RFC 3986 allows in a path (pchar and "/", with "%" escapes) and a
# query (also "?"); any non-ASCII character is allowed too (RFC 3987 IRIs).
_NOT_IN_PATH = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/%\x80-\U0010ffff]")
_NOT_IN_QUERY = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/%?\x80-\U0010ffff]")
# The form nearly every request has: the scheme in lowercase, a host of
# lowercase letters, digits, dots and hyphens, maybe a port, and a path and
# query of plain URL characters, without escapes. Every character check of
# the general parser holds for it by construction, so this one match stands
# for them all; anything else, valid or not, takes the general parser.
_COMMON = re.compile(
    rb"gemini://([a-z0-9.\-]+)(?::([0-9]{1,5}))?"
    rb"(/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*)?"
    rb"(?:\?([A-Za-z0-9\-._~!$&'()*+,;=:@/?]*))?"
)


class RequestError(Exception):
    """A request that gets an error status instead of a response."""

    def __init__(self, code: int, meta: str) -> None:
        super().__init__(f"{code} {meta}")
        self.code = code
        self.meta = meta


@dataclass(frozen=True)
class Request:
    """
    A parsed request.

    ``host`` is canonical (lowercase A-labels, IPv6 without brackets);
    ``path`` is decoded and normalised; ``query`` is raw (still
    percent-encoded, without ``?``) or ``None`` when there was no ``?``.
    """

    url: str
    scheme: str
    host: str
    port: Optional[int]
    path: str
    query: Optional[str]
    # The host in Unicode when the URL spells it so (``host``'s Unicode
    # form, normalised as IDNA maps it), for SERVER_NAME as gmid sends it.
    url_host: Optional[str] = None


_LOG_ESCAPES = str.maketrans({" ": "%20", '"': "%22", "?": "%3F", "#": "%23", "%": "%25"})


def logged_iri(request: Request, listener_port: Optional[int] = None) -> str:
    """
    The request as gmid's access log names it: ``scheme://host/path[?query]``
    rebuilt from the parsed parts, so the host is canonical, and the path
    decoded and normalised (``/%64ir/./x/../p`` is ``/dir/p``). A space or a
    double quote in the path stays escaped (``%20``, ``%22``): the log's
    fields are separated by spaces, and the common and combined styles quote
    the URL; so do ``?`` and ``#`` (``%3F``, ``%23``), which would read as
    the start of a query or a fragment; and so does ``%`` (``%25``), or a
    file named ``a%20b`` would read as ``a b``. gmid leaves the port out; it is left out here while it is the
    ``listener_port`` (1965 for a URL without one), and written otherwise:
    then the request is refused (``53``), and the line shows why.
    """
    host = f"[{request.host}]" if ":" in request.host else request.host
    port = DEFAULT_PORT if request.port is None else request.port
    if listener_port is not None and port != listener_port:
        host = f"{host}:{port}"
    path = request.path.translate(_LOG_ESCAPES)
    query = "" if request.query is None else f"?{request.query}"
    return f"{request.scheme}://{host}{path}{query}"


def unlogged_iri(request: Request, listener_port: Optional[int] = None) -> str:
    """
    A request under ``log off`` as warnings name it: its host alone, as
    ``logged_iri`` writes it. gmid writes no line that names such a request;
    its path and query (a token, an answer to a prompt) stay out of the
    log, while a warning still says which server it was.
    """
    iri = logged_iri(request, listener_port)
    end = iri.find("/", len(request.scheme) + len("://"))
    return (iri if end < 0 else iri[:end]) + UNLOGGED_PATH


# What stands for the path and query of a request under ``log off``.
UNLOGGED_PATH = "/... (log off)"


def _bad(meta: str) -> RequestError:
    return RequestError(status.BAD_REQUEST, meta)


def _check_characters(text: str, forbidden: re.Pattern, what: str) -> None:
    found = forbidden.search(text)
    if found is not None:
        # As sent ('\\' was one backslash shown as two); what cannot be
        # shown in a META as its code point.
        character = found.group()
        shown = f"'{character}'" if character.isprintable() and character != " " else f"U+{ord(character):04X}"
        raise _bad(f"invalid character {shown} in {what}")


def _check_escapes(text: str, what: str) -> None:
    """Every ``%`` must start a two-digit hex escape."""
    if text.count("%") != len(_ESCAPE.findall(text)):
        raise _bad(f"invalid percent-escape in {what}")


def percent_decode(text: str, what: str = "path") -> str:
    """Decode escapes to UTF-8 text, refusing NUL, controls and bad UTF-8."""
    _check_escapes(text, what)
    try:
        decoded = unquote_to_bytes(text).decode("utf-8") if "%" in text else text
    except UnicodeDecodeError:
        raise _bad(f"{what} is not valid UTF-8") from None
    if _CONTROL.search(decoded):
        raise _bad(f"control character in {what}")
    return decoded


# What no request path can hold: controls, and the lone surrogates by which
# Python names a file's bytes that are not UTF-8.
_UNREACHABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def can_be_requested(name: str) -> bool:
    """
    Whether a file named ``name`` (as ``os`` gives it) can be asked for:
    ``percent_decode`` takes only UTF-8 without control characters.
    """
    return _UNREACHABLE.search(name) is None


def remove_dot_segments(path: str) -> str:
    """
    RFC 3986 dot-segment removal, also folding empty segments as gmid does.

    The result starts with ``/`` and keeps a trailing ``/`` when the input
    named a directory (``/a/``, ``/a/.``, ``/a/b/..``).
    """
    segments = path.split("/")
    output: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if output:
                output.pop()
            continue
        output.append(segment)
    normal = "/" + "/".join(output)
    if output and (path.endswith("/") or segments[-1] in (".", "..")):
        normal += "/"
    return normal


def _decoded_host(raw_host: str) -> str:
    """
    A host written with percent-escapes, decoded: RFC 3986 spells a
    non-ASCII name as its UTF-8 bytes escaped (``b%C3%BCcher.example``),
    and gmid decodes them. What the escapes hide is then checked like any
    host, so ``%2F``, ``%40`` or ``%00`` still makes it malformed (which is
    why this is not ``percent_decode``, whose control check would name it).
    """
    _check_escapes(raw_host, "host")
    try:
        return unquote_to_bytes(raw_host).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("host is not valid UTF-8") from None


def _split_authority(authority: str) -> tuple[str, Optional[int]]:
    if "@" in authority:
        raise _bad("userinfo is not allowed in Gemini URLs")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _bad("unterminated IPv6 literal")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _bad("garbage after IPv6 literal")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = authority.partition(":")
    port: Optional[int] = None
    if port_text:
        if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
            raise _bad("invalid port")
        port = int(port_text)
    return host, port


def parse_request_line(line: bytes) -> Request:
    """Parse the request line (without its CRLF) into a ``Request``."""
    common = _COMMON.fullmatch(line) if len(line) <= MAX_REQUEST_BYTES else None
    if common is None:
        return _parse_general(line)
    raw_host, port_text, raw_path, raw_query = common.groups()
    host = canonical_host(raw_host.decode("ascii"))
    port = int(port_text) if port_text is not None else None
    if host is None or (port is not None and port > 65535):
        return _parse_general(line)  # which says what is wrong
    path = raw_path.decode("ascii") if raw_path else "/"
    if "/." in path or "//" in path:
        # Without these, there is no dot segment or empty segment to remove.
        path = remove_dot_segments(path)
    query = raw_query.decode("ascii") if raw_query is not None else None
    return Request(url=line.decode("ascii"), scheme="gemini", host=host, port=port, path=path, query=query)


def _parse_general(line: bytes) -> Request:
    if len(line) > MAX_REQUEST_BYTES:
        raise _bad("request line longer than 1024 bytes")
    if not line:
        raise _bad("empty request")
    try:
        url = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("request is not valid UTF-8") from None
    if _CONTROL_OR_SPACE.search(url):
        raise _bad("space or control character in request")
    if "#" in url:
        raise _bad("fragments are not allowed in requests")
    scheme_match = _SCHEME.match(url)
    if scheme_match is None:
        raise _bad("request is not an absolute URL")
    scheme = scheme_match.group(1).lower()
    rest = url[scheme_match.end() :]
    if scheme != "gemini":
        shown = scheme if len(scheme) <= 64 else scheme[:64] + "..."
        raise RequestError(status.PROXY_REQUEST_REFUSED, f"scheme {shown} is not served")
    if not rest.startswith("//"):
        raise _bad("a gemini URL needs an authority (gemini://host/)")
    rest = rest[2:]
    split = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, rest = rest[:split], rest[split:]
    raw_host, port = _split_authority(authority)
    if not raw_host:
        raise _bad("empty host")
    escaped = "%" in raw_host and not raw_host.startswith("[")
    if escaped:
        raw_host = _decoded_host(raw_host)
    host = canonical_host(raw_host)
    if host is None:
        raise _bad("malformed host")
    # One trailing dot, as IDNA reads dots, is the root's ("127.0.0.1。" is "127.0.0.1.").
    bare = raw_host[:-1] if raw_host[-1:].translate(IDEOGRAPHIC_DOTS) == "." else raw_host
    if (escaped or not bare.isascii()) and is_address(host):
        # An IP literal is written as one (IPv6 in brackets), not escaped
        # into a name (``%3A%3A1``, ``127%2E0.0.1``) nor spelt in other
        # digits that IDNA maps to these (``１２７．０．０．１``).
        raise _bad("malformed host")
    raw_path, question, query_text = rest.partition("?")
    _check_characters(raw_path, _NOT_IN_PATH, "path")
    query: Optional[str] = None
    if question:
        _check_characters(query_text, _NOT_IN_QUERY, "query")
        _check_escapes(query_text, "query")
        query = query_text
    path = remove_dot_segments(percent_decode(raw_path))
    # A Unicode name as Unicode (gmid sends it as the URL spells it), in the
    # one form it is matched in: full-width letters, a decomposed ü and the
    # like are not handed on as the client wrote them.
    url_host = None if raw_host.isascii() else unicode_host(host)
    return Request(
        url=url, scheme=scheme, host=host, port=port, path=path, query=query, url_host=url_host
    )
