"""
``block [return CODE ["META"]]``: a fixed reply, formatted as gmid does.

The formats are ``%%``, ``%p`` (the path after ``strip``), ``%q`` (the raw
query), ``%P`` (the listener's port) and ``%N`` (the SNI name); the config
parser rejects any other. As gmid, ``%N`` is the name in Unicode, not its
punycode (A-label) form, and an IPv6 address is in brackets (a client may
send ``::1`` as its SNI). Without SNI gmid puts the listener's address
there, which is what chose its server; here the URL's host chose it, so
``%N`` is that host, and a redirect built from it reaches the same server
again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gemfcgi.gemini import status
from gemfcgi.gemini.hosts import unicode_host
from gemfcgi.gemini.request import Request
from gemfcgi.handlers.static import iri_path, path_for_meta, strip_components
from gemfcgi.routing import PathSettings

if TYPE_CHECKING:
    from gemfcgi.server import GeminiProtocol


def format_block_meta(template: str, path: str, query: str, port: str, server_name: str) -> str:
    values = {"%": "%", "p": path, "q": query, "P": port, "N": server_name}
    out: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char == "%" and i + 1 < len(template) and template[i + 1] in values:
            out.append(values[template[i + 1]])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def serve_block(client: "GeminiProtocol", request: Request, settings: PathSettings) -> None:
    block = settings.block
    assert block is not None
    path = strip_components(request.path, settings.strip)
    port = client.listener_port
    # The host served: the SNI name, which the request's host must equal,
    # except on a TLS 1.2 session resumed from another host's handshake,
    # where OpenSSL still gives that host's name and the URL's chose.
    host = request.host
    server_name = f"[{host}]" if ":" in host else unicode_host(host)
    values = (request.query or "", "" if port is None else str(port), server_name)
    meta = format_block_meta(block.meta, path_for_meta(path, status.MAX_META_BYTES), *values)
    if len(meta.encode("utf-8")) > status.MAX_META_BYTES:
        # The path percent-encoded made it too long; as an IRI it may fit.
        meta = format_block_meta(block.meta, iri_path(path), *values)
    client.respond(block.code, meta)
