"""
Requests relayed to another Gemini server by a ``proxy`` block.

``build_upstreams`` turns every ``proxy`` block of a configuration into an
``Upstream`` once, at load and at each reload: its TLS context (with the
client certificate read from its files) is made then, never per request.
``serve_proxy`` is the handler ``GeminiProtocol`` calls for a request that
a proxy block matched (``VirtualHost.proxy_for``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from gemfcgi.certificates import load_key_pair
from gemfcgi.config import model
from gemfcgi.config.values import port_number
from gemfcgi.gemini.request import Request
from gemfcgi.routing import PathSettings
from gemfcgi.upstream import ProxyRelay, Upstream, UpstreamTimeouts, UpstreamTLS, upstream_request_line

if TYPE_CHECKING:
    from gemfcgi.server import GeminiProtocol


def build_upstream(proxy: model.Proxy) -> Upstream:
    """The ``Upstream`` of one proxy block (reads its client certificate, if any)."""
    assert proxy.relay_to is not None
    host, port = proxy.relay_to
    tls = build_upstream_tls(proxy) if proxy.use_tls else None
    return Upstream(host, port_number(port), tls, proxy.proxy_v1)


def build_upstream_tls(proxy: model.Proxy) -> UpstreamTLS:
    """TLS towards the upstream of one proxy block, with its client certificate if it has one."""
    assert proxy.relay_to is not None
    pair = None
    if proxy.cert is not None and proxy.key is not None:
        pair = load_key_pair(proxy.cert, proxy.key)
    return UpstreamTLS(proxy.sni or proxy.relay_to[0], proxy.verifyname, pair, proxy.protocols)


def build_upstreams(config: model.Config) -> dict[int, Upstream]:
    """Every proxy block's ``Upstream``, by the block's identity."""
    return {
        id(proxy): build_upstream(proxy)
        for server in config.servers
        for proxy in server.proxies
    }


def serve_proxy(
    client: "GeminiProtocol",
    request: Request,
    settings: PathSettings,
    upstreams: dict[int, Upstream],
    timeouts: Optional[UpstreamTimeouts] = None,
) -> None:
    """
    Relay ``request`` to the upstream of its proxy block (``Site.handlers["proxy"]``),
    on the connection's reactor, as a FastCGI request is.
    """
    assert settings.proxy is not None
    upstream = upstreams[id(settings.proxy)]
    line = upstream_request_line(request, upstream.port)
    ProxyRelay(client, upstream, line, timeouts or UpstreamTimeouts(), client.clock).start()
