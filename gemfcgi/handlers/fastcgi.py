"""
Requests answered by a FastCGI application.

``serve_fastcgi`` gathers what the parameters are derived from (the URL, the
connection's addresses, TLS and the client certificate), encodes the
request, and hands it to a ``Relay`` that carries it to the backend and the
reply back. ``install_fastcgi`` wires this into a ``Site`` and returns the
service holding the configuration's backends; ``reconfigure_fastcgi`` does
the same for a reloaded configuration, keeping the backends that remain.
"""

from __future__ import annotations

import os
from functools import partial
from typing import TYPE_CHECKING, Optional

from twisted.logger import Logger

from gemfcgi.config import model
from gemfcgi.fastcgi.backends import FastCGIBackends
from gemfcgi.fastcgi.client import FastCGITimeouts, Relay
from gemfcgi.fastcgi.params import CERTIFICATE_PARAMS, NoSuchScript, RequestFacts, request_params
from gemfcgi.fastcgi.records import ParamTooLong, encode_request
from gemfcgi.gemini import status
from gemfcgi.gemini.hosts import ipv4_unmapped
from gemfcgi.gemini.request import Request
from gemfcgi.routing import PathSettings, VirtualHost
from gemfcgi.textlog import printable

if TYPE_CHECKING:
    from gemfcgi.server import GeminiProtocol, Site

log = Logger()


def request_facts(client: "GeminiProtocol", request: Request, settings: PathSettings) -> RequestFacts:
    """What the parameters of this request are derived from."""
    # The peer as noted when the handshake completed (behind a PROXY
    # protocol listener, the real client), not asked of the transport again.
    peer = client.peer
    host = client.transport.getHost()
    tls = client.tls
    return RequestFacts(
        path=request.path,
        query=request.query,
        host=request.url_host or request.host,
        port=request.port,
        url=request.url,
        root=settings.root,
        translated_root=settings.fastcgi_root,
        client_address=str(getattr(peer, "host", "") or ""),
        client_port=int(getattr(peer, "port", 0) or 0),
        # The server's address as an IPv4 client reached it, as REMOTE_ADDR beside it.
        server_address=ipv4_unmapped(str(getattr(host, "host", "") or "")),
        tls_version=tls.version if tls is not None else "",
        tls_cipher=tls.cipher if tls is not None else "",
        tls_cipher_strength=tls.cipher_bits if tls is not None else None,
        certificate=tls.client_certificate if tls is not None else None,
        chroot=client.site.chroot,
    )


def encode_params(params: list[tuple[str, str]]) -> bytes:
    """The whole request on the wire: BEGIN_REQUEST, PARAMS, empty STDIN."""
    # Paths and queries are valid UTF-8 by the time they get here;
    # surrogatepass only keeps a stray surrogate in a configured value from
    # failing the request.
    return encode_request(
        [(name.encode("utf-8", "surrogatepass"), value.encode("utf-8", "surrogatepass"))
         for name, value in params]
    )


def serve_fastcgi(
    client: "GeminiProtocol",
    request: Request,
    settings: PathSettings,
    backends: FastCGIBackends,
) -> None:
    """Start relaying ``request`` to the backend of its location (``Site.handlers["fastcgi"]``)."""
    fastcgi = settings.fastcgi
    assert fastcgi is not None and fastcgi.address is not None
    backend = backends.backend_for(fastcgi.address)
    facts = request_facts(client, request, settings)
    vhost = client.vhost
    try:
        if vhost is None:
            params = request_params(facts, fastcgi)
        else:
            params = request_params(
                facts, fastcgi, is_script=partial(_reaches_the_same_application, vhost, settings))
    except NoSuchScript as refused:
        log.info("{client} {url}: not sent to FastCGI backend {backend}: {why}",
                 client=client.record.client, url=client.record.url, backend=backend.name,
                 # Its reason names the path asked for.
                 why=printable(str(refused)) if client.record.enabled else "no script (log off)")
        client.respond(status.NOT_FOUND)
        return
    try:
        encoded = encode_params(params)
    except ParamTooLong as too_long:
        _refuse_too_long(client, facts, fastcgi, backend.name, too_long)
        return
    Relay(client, backend, encoded, backends.timeouts, client.clock).start()


def _reaches_the_same_application(vhost: VirtualHost, settings: PathSettings, path: str) -> bool:
    """
    Whether the file at ``path``, on the way to the requested path, may be
    the script its application runs: a request for the file alone, or for
    a path under it (where a request for the file alone names no
    application, and a location names the file: ``"/wiki/index.php/*"``),
    would reach that application (its address) and find the file under
    the same root. A file that a
    request of its own would find blocked, behind another client CA, sent
    to another application or kept from any by ``fastcgi off``, is no
    script, whatever the paths under it reach.
    """
    alone = vhost.settings_for(path)
    if alone.block is not None or not _same_ca(alone.require_client_ca, settings.require_client_ca):
        return False
    if alone.fastcgi is not None or alone.fastcgi_off:
        # Its own request goes to an application, or is served as a file
        # by a ``fastcgi off``: that decides, not a catch-all under it.
        return _reaches(alone, settings)
    # Only a location written for the paths under this very file, its
    # name spelt out ("/wiki/index.php/*"), makes it a script; one that
    # takes the paths under any file of a pattern ("/apps/*/*",
    # "/[a-z][a-z]/*") would make scripts of files that are none. And the
    # paths under it must all reach the application: one that takes a
    # name no client sends (a NUL) takes them all ("*/" takes only some).
    return vhost.names_as_a_prefix(path) and _reaches(vhost.settings_for(path + "/\0"), settings)


def _reaches(asked: PathSettings, settings: PathSettings) -> bool:
    """
    Whether a request with the settings ``asked`` would run the same file
    as one with ``settings``: the same application, ``fastcgi strip`` and
    root it looks in (a ``param DOCUMENT_ROOT``'s), unblocked, and the
    file itself the script (no ``param SCRIPT_NAME`` or SCRIPT_FILENAME
    naming another, a download script's).
    """
    fastcgi, wanted = asked.fastcgi, settings.fastcgi
    return (
        fastcgi is not None and wanted is not None and asked.block is None
        and _same_ca(asked.require_client_ca, settings.require_client_ca)
        and _same_path(_searched_root(asked), _searched_root(settings))
        and (fastcgi.strip or 0) == (wanted.strip or 0)
        and not any(name in _SCRIPT_PARAMS for name, _ in fastcgi.params)
        and _same_address(fastcgi.address, wanted.address)
    )


# Parameters that name the script a request runs, whatever its path.
_SCRIPT_PARAMS = frozenset({"SCRIPT_NAME", "SCRIPT_FILENAME"})


def _searched_root(settings: PathSettings) -> Optional[str]:
    """Where a request's script is looked for: its ``param DOCUMENT_ROOT``, else its root."""
    fastcgi = settings.fastcgi
    given = dict(fastcgi.params).get("DOCUMENT_ROOT") if fastcgi is not None else None
    return given or settings.root


def _same_path(one: Optional[str], other: Optional[str]) -> bool:
    if one is None or other is None:
        return one is other
    return os.path.normpath(one) == os.path.normpath(other)


def _same_ca(asked: Optional[str], required: Optional[str]) -> bool:
    """Whether a path behind client CA ``asked`` (or none) asks nothing more than ``required``."""
    return asked is None or _same_path(asked, required)


def _same_address(one: Optional[model.FastCGIAddress], other: Optional[model.FastCGIAddress]) -> bool:
    """Whether two addresses name one application: a unix socket by its normalised path."""
    if isinstance(one, model.FastCGISocket) and isinstance(other, model.FastCGISocket):
        return os.path.normpath(one.path) == os.path.normpath(other.path)
    return one == other


def _refuse_too_long(
    client: "GeminiProtocol", facts: RequestFacts, fastcgi: model.FastCGI, backend: str,
    too_long: ParamTooLong,
) -> None:
    """
    A parameter no record holds: from the client's certificate (its names),
    the certificate is refused with ``62``; from the configuration, ``42``.
    """
    name = too_long.name.decode("latin-1")
    from_certificate = (
        facts.certificate is not None
        and name in CERTIFICATE_PARAMS
        and name not in dict(fastcgi.params)
    )
    log.warn(
        "{client} {url}: FastCGI backend {backend}: request not sent: {problem}",
        client=client.record.client,
        url=client.record.url,
        backend=backend,
        problem=too_long,
    )
    if from_certificate:
        client.respond(status.CERTIFICATE_NOT_VALID, "certificate names too long")
    else:
        client.respond(status.CGI_ERROR, "CGI error")


def serve_without_backends(client: "GeminiProtocol", request: Request, settings: PathSettings) -> None:
    """
    A FastCGI location on a site built without its backends (wired by hand,
    without the service or ``install_fastcgi``): ``42`` and a line that says
    what is missing, not a traceback per request.
    """
    log.error(
        "{client} {url}: no FastCGI backends on this site: gemfcgi.makeService runs them "
        "(or gemfcgi.handlers.fastcgi.install_fastcgi for a site wired by hand)",
        client=client.record.client,
        url=client.record.url,
    )
    client.respond(status.CGI_ERROR, "CGI error")


def install_fastcgi(
    site: "Site",
    config: model.Config,
    reactor,
    timeouts: Optional[FastCGITimeouts] = None,
) -> FastCGIBackends:
    """
    Open a backend for every FastCGI address of ``config`` and route
    ``site``'s FastCGI requests to them.

    The result is a service: make it a child of the server's service, so
    that spawned applications start with it and stop (after draining) once
    the listeners are closed. On a reload, call ``reconfigure_fastcgi``.
    """
    backends = FastCGIBackends(reactor, timeouts)
    reconfigure_fastcgi(site, config, backends)
    return backends


def reconfigure_fastcgi(site: "Site", config: model.Config, backends: FastCGIBackends) -> None:
    """Route ``site``'s FastCGI requests to ``backends``, updated for ``config``."""
    backends.configure(config)
    site.handlers["fastcgi"] = partial(serve_fastcgi, backends=backends)
