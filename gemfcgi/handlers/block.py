"""
``block [return CODE ["META"]]``: a fixed reply, formatted as gmid does.

The formats are ``%%``, ``%p`` (the path after ``strip``), ``%q`` (the raw
query), ``%P`` (the listener's port) and ``%N`` (the SNI name, or the
listener's address without SNI); the config parser rejects any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from gemfcgi.gemini.request import Request
from gemfcgi.handlers.static import URL_SAFE, strip_components
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
    path = quote(strip_components(request.path, settings.strip), safe=URL_SAFE)
    port = client.listener_port
    tls = client.tls
    if tls is not None and tls.server_name:
        server_name = tls.server_name
    else:
        server_name = getattr(client.transport.getHost(), "host", "")
    meta = format_block_meta(
        block.meta, path, request.query or "", "" if port is None else str(port), server_name
    )
    client.respond(block.code, meta)
