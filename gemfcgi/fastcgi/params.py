"""
The CGI/FastCGI parameters sent to an application for one request.

``request_params`` is a pure function of the request's facts and the
location's ``fastcgi`` settings (plus one injectable file check), so every
rule below is a unit test and the relay only encodes the result.

What is sent, in this order, each name exactly once:

* gmid's set, in gmid's order and with gmid's derivations (gmid.md 2.2):
  PATH_INFO, SCRIPT_NAME, GATEWAY_INTERFACE, PATH_TRANSLATED, QUERY_STRING,
  REMOTE_ADDR, REMOTE_HOST, REQUEST_METHOD, SERVER_NAME, SERVER_PORT,
  SERVER_PROTOCOL, SERVER_SOFTWARE, GEMINI_URL_PATH, GEMINI_SEARCH_STRING
  (only for a non-empty query without ``=``), AUTH_TYPE, and with a client
  certificate REMOTE_USER, TLS_CLIENT_ISSUER, TLS_CLIENT_HASH,
  TLS_CLIENT_NOT_BEFORE, TLS_CLIENT_NOT_AFTER;
* then what gmid lacks: GEMINI_URL, DOCUMENT_ROOT, SCRIPT_FILENAME,
  REMOTE_PORT, SERVER_ADDR, TLS_VERSION, TLS_CIPHER, TLS_CIPHER_STRENGTH
  (when known) always, TLS_CLIENT_SERIAL with a certificate;
* then the user's ``param`` lines. Unlike gmid, which sends duplicates, a
  ``param`` with a built-in's name replaces its value in the built-in's
  position; other names are appended in config order, and when a name is
  given twice the last value wins.

Where the split between SCRIPT_NAME and PATH_INFO comes from, first rule
that applies:

1. ``fastcgi strip N`` removes exactly N leading components of the path
   (gmid removes one for any N). GEMINI_URL_PATH keeps the whole path.
2. ``param SCRIPT_NAME = S``, as in gmid (gmid.md 2.3): when the path is S
   (without trailing slashes) or continues it with ``/``, SCRIPT_NAME is
   that prefix and PATH_INFO the rest; otherwise SCRIPT_NAME is S and
   PATH_INFO the whole path. Unlike gmid, PATH_INFO keeps its leading ``/``.
3. The CGI convention, with a document root: the shortest leading run of
   segments that names a regular file under the root is SCRIPT_NAME
   (``/cgi/env.sh/extra`` gives ``/cgi/env.sh`` and ``/extra``). A file whose
   real path is outside the root (a symlink out) is never used.
4. Otherwise SCRIPT_NAME is empty and PATH_INFO is the whole path, as gmid.

SCRIPT_FILENAME is the file found by rule 3; else the root joined with
SCRIPT_NAME when it is set (what slowcgi and fcgiwrap expect when the user
sets ``param SCRIPT_NAME``); else the root joined with the path, which names
the requested file for applications that serve a whole tree. PATH_TRANSLATED
is the root joined with PATH_INFO, where the root is gmid's: that of the
location whose ``fastcgi`` applies, else the server's; with an empty
PATH_INFO it is not sent (RFC 3875 4.1.6; gmid sends ``root/``). A script
looked for under a root and not found names no file: neither
SCRIPT_FILENAME nor PATH_TRANSLATED is sent. Without a root, DOCUMENT_ROOT
and SCRIPT_FILENAME are not sent, and PATH_TRANSLATED is empty, as gmid
sends it.

Client input cannot add, split or forge a parameter: names are constants or
come from the configuration, the record encoding is length-prefixed, so
CR, LF or ``=`` in a value stay in that value, and no pair is split across
records (``records.ParamTooLong``; a client certificate's names are the one
client input that can grow that long). NUL is the one character
replaced (by U+FFFD, like undecodable bytes in GEMINI_SEARCH_STRING): the
request parser already refuses it in paths, but ``%00`` in a query decodes
to it, and C applications (fcgiwrap, slowcgi) would cut an environment
string there without telling anyone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional
from urllib.parse import unquote_plus

from gemfcgi._version import __version__
from gemfcgi.certificates import ClientCertificate
from gemfcgi.config.model import FastCGI
from gemfcgi.handlers.static import real_root

DEFAULT_SERVER_PORT = 1965


@dataclass(frozen=True)
class RequestFacts:
    """
    Everything about one request that a parameter is derived from.

    ``path`` is decoded and normalised and starts with ``/``; ``query`` is
    raw (percent-encoded, without ``?``) or ``None``; ``host`` and ``port``
    are as written in the URL (host lowercased); ``root`` is the document
    root of the matched location, if any. ``chroot`` is set when the server
    runs inside one: files are looked up by ``root`` (inside), while the
    file-system parameters name them as the application, which runs outside,
    sees them.
    """

    path: str
    query: Optional[str]
    host: str
    port: Optional[int]
    url: str
    root: Optional[str]
    client_address: str
    client_port: int
    server_address: str
    tls_version: str
    tls_cipher: str
    tls_cipher_strength: Optional[int] = None
    certificate: Optional[ClientCertificate] = None
    server_software: str = f"gemfcgi/{__version__}"
    chroot: Optional[str] = None
    # PATH_TRANSLATED's root, as gmid takes it: the root of the location
    # whose ``fastcgi`` applies, else the server's; ``root`` when not given.
    translated_root: Optional[str] = None


@dataclass(frozen=True)
class _Script:
    name: str
    path_info: str
    filename: Optional[str] = None


class NoSuchScript(Exception):
    """
    The request's path runs through a file that is no script of its
    application (``/static/photo.gif/x.php``), or through a link that
    leads outside the root: it names nothing, and no application sees it.
    """


def _any_file_is_a_script(request_path: str) -> bool:
    return True


def request_params(
    facts: RequestFacts,
    settings: FastCGI,
    is_file: Callable[[str], bool] = os.path.isfile,
    is_script: Callable[[str], bool] = _any_file_is_a_script,
) -> list[tuple[str, str]]:
    """
    The parameters for ``facts``, in a stable order, each name once.

    ``is_script`` says whether a file at a request path (before ``fastcgi
    strip``) is one of this application's scripts (``handlers.fastcgi``
    asks the routing). Raises ``NoSuchScript``.
    """
    user_params = dict(settings.params)
    path = _strip_components(facts.path, settings.strip or 0)
    # The application's scripts are looked for where it looks for them:
    # under the DOCUMENT_ROOT a ``param`` gives (gmid configurations for
    # fcgiwrap have one), else under the location's root; ``None`` for a
    # DOCUMENT_ROOT outside the chroot, which cannot be looked in.
    document_root = user_params.get("DOCUMENT_ROOT")
    split_root = seen_from_here(document_root, facts.chroot) if document_root else facts.root
    stripped = facts.path[: len(facts.path) - len(path)] if path != facts.path else ""
    configured = user_params.get("SCRIPT_NAME")
    if configured is None and "SCRIPT_FILENAME" in user_params:
        # The configuration names what runs (a front controller): the
        # path is not searched for a script, as in gmid.
        split_root = None
        document_root = None
    script = _split_script(
        path, configured, split_root, is_file, lambda name: is_script(stripped + name),
    )
    # Looked for and not found: nothing is named for the application to
    # search on its own (php-cgi's cgi.fix_pathinfo walks back from
    # SCRIPT_FILENAME or PATH_TRANSLATED to the first file it finds, which
    # may be one this process could not see, or one made since it looked).
    # A DOCUMENT_ROOT outside the chroot cannot be looked in at all; a
    # configured SCRIPT_NAME of "/" names no script either.
    unfound = script.filename is None and not script.name and (
        split_root is not None or bool(document_root))
    params = {
        "PATH_INFO": script.path_info,
        "SCRIPT_NAME": script.name,
        "GATEWAY_INTERFACE": "CGI/1.1",
        "PATH_TRANSLATED": _join(
            facts.root if facts.translated_root is None else facts.translated_root, script.path_info
        ),
        "QUERY_STRING": facts.query or "",
        "REMOTE_ADDR": facts.client_address,
        "REMOTE_HOST": facts.client_address,
        "REQUEST_METHOD": "GET",
        # An IPv6 literal in brackets, as RFC 3875 writes it (4.1.14): the
        # host part of a URL an application builds from it.
        "SERVER_NAME": f"[{facts.host}]" if ":" in facts.host else facts.host,
        "SERVER_PORT": str(facts.port or DEFAULT_SERVER_PORT),
        "SERVER_PROTOCOL": "GEMINI",
        "SERVER_SOFTWARE": facts.server_software,
        "GEMINI_URL_PATH": facts.path.removeprefix("/"),
    }
    if not script.path_info or unfound:
        # RFC 3875 4.1.6 (gmid sends the bare root): php-cgi with
        # cgi.fix_pathinfo=0 takes a PATH_TRANSLATED, when there is one,
        # for the script, and ran the root directory.
        del params["PATH_TRANSLATED"]
    if facts.query and "=" not in facts.query:
        params["GEMINI_SEARCH_STRING"] = unquote_plus(facts.query)
    params.update(_certificate_params(facts.certificate))
    params["GEMINI_URL"] = facts.url
    if facts.root is not None:
        # Without a root there is no file to name: gmid sends neither, and
        # fcgiwrap refuses an empty SCRIPT_FILENAME where DOCUMENT_ROOT and
        # SCRIPT_NAME from ``param`` lines would have served.
        params["DOCUMENT_ROOT"] = facts.root
        if not unfound:
            params["SCRIPT_FILENAME"] = _script_filename(script, path, facts.root)
    params.update(
        {
            "REMOTE_PORT": str(facts.client_port),
            "SERVER_ADDR": facts.server_address,
            "TLS_VERSION": facts.tls_version,
            "TLS_CIPHER": facts.tls_cipher,
        }
    )
    if facts.tls_cipher_strength is not None:
        params["TLS_CIPHER_STRENGTH"] = str(facts.tls_cipher_strength)
    if facts.certificate is not None:
        params["TLS_CLIENT_SERIAL"] = _serial_hex(facts.certificate.serial)
    if facts.chroot:
        for name in ("PATH_TRANSLATED", "DOCUMENT_ROOT", "SCRIPT_FILENAME"):
            if params.get(name):
                params[name] = _outside(facts.chroot, params[name])
    if document_root and "SCRIPT_FILENAME" not in user_params and not unfound:
        # The application's own document root (gmid configurations for
        # fcgiwrap set it): the script is named under it, as the
        # application would find it from DOCUMENT_ROOT and SCRIPT_NAME.
        params["SCRIPT_FILENAME"] = (
            _outside(facts.chroot, script.filename) if script.filename and facts.chroot
            else script.filename or _join(document_root, script.name or path)
        )
    user_params.pop("SCRIPT_NAME", None)
    params.update(user_params)
    return [(name, value.replace("\0", "\ufffd")) for name, value in params.items()]


def seen_from_here(path: Optional[str], chroot: Optional[str]) -> Optional[str]:
    """
    A path as the application sees it (outside any chroot) as this
    process sees it: inside the chroot, or ``None`` where it cannot.
    """
    if not path or not chroot:
        return path or None
    # As written: ".." and "//" must not carry a path out of the chroot,
    # nor one inside it out of the check.
    path, top = os.path.normpath(path), os.path.normpath(chroot)
    if top == "/":
        return path
    if path != top and not path.startswith(top + "/"):
        return None
    return path[len(top):] or "/"


def _outside(chroot: str, path: str) -> str:
    """
    A path inside ``chroot`` as seen from outside it: its ``..`` stop at
    the chroot's top, as they do inside it.
    """
    if not path:
        return path
    inside = os.path.normpath("/" + path.lstrip("/"))
    return chroot.rstrip("/") + ("/" if inside == "/" else inside)


def _strip_components(path: str, count: int) -> str:
    """``path`` without its first ``count`` components, still starting with ``/``."""
    if count <= 0:
        return path
    components = path.removeprefix("/").split("/")
    return "/" + "/".join(components[count:])


def _split_script(
    path: str,
    configured: Optional[str],
    root: Optional[str],
    is_file: Callable[[str], bool],
    is_script: Callable[[str], bool],
) -> _Script:
    if configured is not None:
        return _split_configured(path, configured)
    if root is not None:
        found = _find_script_file(path, root, is_file, is_script)
        if found is not None:
            return found
    return _Script("", path)


def _split_configured(path: str, configured: str) -> _Script:
    """gmid's rule for ``param SCRIPT_NAME``, with PATH_INFO keeping its ``/``."""
    prefix = configured.rstrip("/")
    if path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in ("", "/"):
        return _Script(prefix, path[len(prefix) :])
    return _Script(configured, path)


def _find_script_file(
    path: str, root: str, is_file: Callable[[str], bool], is_script: Callable[[str], bool]
) -> Optional[_Script]:
    """
    The shortest leading run of segments naming a regular file inside
    ``root``, the script; ``None`` if none does. The first file met must be
    a script of this application: an application that is handed a path
    through an image (PHP's ``cgi.fix_pathinfo``) finds the image and runs
    it. Raises ``NoSuchScript``.
    """
    resolved_root = real_root(root)
    end = 0
    while True:
        end = path.find("/", end + 1)
        name = path if end < 0 else path[:end]
        if not name.endswith("/"):
            filename = _join(root, name)
            if is_file(filename):
                real, real_name = _real_path_inside(filename, resolved_root, root)
                if real is None:
                    raise NoSuchScript(f"{name} leads outside the root")
                if not is_script(name) or (real_name != name and not is_script(real_name)):
                    # (Reached through a link, the file is judged by its
                    # own name too: a link to a blocked script is no way
                    # round the block.)
                    raise NoSuchScript(f"{name} is a file this application does not serve")
                # Named by its real path: php-cgi keeps the file it found
                # for a name, and a root switched to a new release would
                # run the old one's scripts.
                return _Script(name, path[len(name) :], real)
        if end < 0:
            return None


def _real_path_inside(
    path: str, resolved_root: str, root: str
) -> tuple[Optional[str], Optional[str]]:
    """
    ``path`` with its links followed, and its name under the root, if it
    is under the root; ``None`` if not, or if a link changes meanwhile.
    The root itself, a link, may have moved to a new release since it was
    resolved: as it is now, too.
    """
    try:
        real_path = os.path.realpath(path)
    except OSError:
        return None, None
    under = resolved_root
    if os.path.commonpath([real_path, under]) != under:
        # Resolved again only then: a realpath costs every request a few
        # system calls.
        under = os.path.realpath(root)
        if os.path.commonpath([real_path, under]) != under:
            return None, None
    return real_path, "/" + os.path.relpath(real_path, under).removeprefix(".")


def _join(root: Optional[str], path: str) -> str:
    """``root/path`` with exactly one slash between, as gmid builds PATH_TRANSLATED."""
    if root is None:
        return ""
    return root.rstrip("/") + "/" + path.lstrip("/")


def _script_filename(script: _Script, path: str, root: Optional[str]) -> str:
    if script.filename is not None:
        return script.filename
    return _join(root, script.name or path)


# What a client certificate's names and numbers give: the parameters a
# client can make as long as it likes (a subject of 100 attributes).
CERTIFICATE_PARAMS = frozenset({
    "REMOTE_USER", "TLS_CLIENT_ISSUER", "TLS_CLIENT_HASH", "TLS_CLIENT_NOT_BEFORE",
    "TLS_CLIENT_NOT_AFTER", "TLS_CLIENT_SERIAL",
})


def _certificate_params(certificate: Optional[ClientCertificate]) -> dict[str, str]:
    if certificate is None:
        return {"AUTH_TYPE": ""}
    return {
        "AUTH_TYPE": "CERTIFICATE",
        "REMOTE_USER": certificate.subject,
        "TLS_CLIENT_ISSUER": certificate.issuer,
        "TLS_CLIENT_HASH": "SHA256:" + certificate.sha256.lower(),
        "TLS_CLIENT_NOT_BEFORE": _utc_timestamp(certificate.not_before),
        "TLS_CLIENT_NOT_AFTER": _utc_timestamp(certificate.not_after),
    }


def _utc_timestamp(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _serial_hex(serial: int) -> str:
    """Upper-case hex, two digits a byte, as nginx and Apache send serials."""
    magnitude = abs(serial)
    length = max(1, (magnitude.bit_length() + 7) // 8)
    sign = "-" if serial < 0 else ""
    return sign + magnitude.to_bytes(length, "big").hex().upper()
