"""
Which server answers a host, and which settings apply to a path.

Built once per configuration (at start and at each reload) so the request
path only does lookups. This is the one place that decides which location
applies, with gmid's rule: each setting comes from the first location, in
file order, that matches the path and sets it, then from the server block,
then from the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Union

from gemfcgi.config import model
from gemfcgi.config.values import port_number
from gemfcgi.gemini.hosts import HostPattern
from gemfcgi.glob import compile_glob, glob_matches, is_glob, literal_start
from gemfcgi.mime import OCTET_STREAM, MimeTable
from gemfcgi.serverindex import ServersByName


@dataclass(frozen=True)
class PathSettings:
    """The effective settings for one path of one server."""

    auto_index: bool = False
    block: Optional[model.BlockReturn] = None
    default_type: str = OCTET_STREAM
    fastcgi: Optional[model.FastCGI] = None
    index: str = "index.gmi"
    lang: Optional[str] = None
    log: bool = True
    require_client_ca: Optional[str] = None
    root: Optional[str] = None
    strip: int = 0
    # Set for a request a ``proxy`` block relays: nothing else applies then.
    proxy: Optional[model.Proxy] = None
    # gmid's root for PATH_TRANSLATED: that of the block whose ``fastcgi``
    # applies, else the server's (``root`` above is the first block's that
    # sets one, which may be another location).
    fastcgi_root: Optional[str] = None
    # A block said ``fastcgi off`` for this path: it is served as a file,
    # by decision (not for want of a ``fastcgi``).
    fastcgi_off: bool = False


_SIMPLE_SETTINGS = (
    "auto_index",
    "block",
    "default_type",
    "index",
    "lang",
    "require_client_ca",
    "root",
    "strip",
)


class VirtualHost:
    """One ``server`` block, ready to answer requests."""

    def __init__(self, server: model.Server) -> None:
        self.server = server
        self.name = server.name
        globs = [(loc.pattern[1:] if loc.pattern.startswith("/") else loc.pattern, loc.options)
                 for loc in server.locations]
        # Compiled once here: more location globs than the compiled-pattern
        # cache keeps were compiled again for each new path.
        self._locations = [(glob, compile_glob(glob), options) for glob, options in globs]
        self.settings_for = lru_cache(maxsize=2048)(self._resolve)
        self.proxy_for = lru_cache(maxsize=2048)(self._proxy_for)
        log = server.options.log is not False
        self.proxies = [
            (HostPattern(proxy.for_host), port_pattern(proxy.for_port),
             PathSettings(log=log, require_client_ca=proxy.require_client_ca, proxy=proxy))
            for proxy in server.proxies
            if glob_matches("gemini", proxy.proto.lower())
        ]

    def names_as_a_prefix(self, path: str) -> bool:
        """
        Whether a location's pattern begins with ``path`` and a slash, as
        written, before any wildcard (``"/wiki/index.php/*"`` for
        ``/wiki/index.php``): one written for the paths under that file.
        """
        wanted = (path[1:] if path.startswith("/") else path) + "/"
        return any(literal_start(glob).startswith(wanted) for glob, _, _ in self._locations)

    def _proxy_for(self, host: str, port: int) -> Optional[PathSettings]:
        """
        The settings of the first ``proxy`` block relaying requests for
        ``host`` (canonical) on ``port`` (the URL's, 1965 if it has none),
        or ``None``. A block without ``for-host`` takes every request of
        its server; with one, the port it names (1965 unless given).
        """
        for pattern, for_port, settings in self.proxies:
            if pattern.matches(host) and port_matches(port, for_port):
                return settings
        return None

    def _resolve(self, path: str) -> PathSettings:
        relative = path[1:] if path.startswith("/") else path
        matching = [opts for _, regex, opts in self._locations if regex.fullmatch(relative) is not None]
        chain = [*matching, self.server.options]
        values = {}
        for name in _SIMPLE_SETTINGS:
            for opts in chain:
                value = getattr(opts, name)
                if value is not None:
                    values[name] = value
                    break
        values["log"] = all(opts.log is not False for opts in chain)
        for opts in chain:
            fastcgi = opts.fastcgi
            if fastcgi is not None and (fastcgi.off or fastcgi.address is not None):
                values["fastcgi"] = None if fastcgi.off else fastcgi
                values["fastcgi_off"] = fastcgi.off
                values["fastcgi_root"] = opts.root if opts.root is not None else self.server.options.root
                break
        return PathSettings(**values)

    def __repr__(self) -> str:
        return f"<VirtualHost {self.name!r}>"


def port_pattern(port: Union[int, str, None]) -> Union[int, str, None]:
    """
    A ``for-host`` port as it is matched: a number (a service name looked up
    once, here), a glob, or ``None`` for any.
    """
    if not isinstance(port, str) or is_glob(port):
        return port
    try:
        return port_number(port)
    except OSError:
        return port  # unknown: the check says so; it matches no port


def port_matches(port: int, wanted: Union[int, str, None]) -> bool:
    """Whether a URL's ``port`` matches a ``port_pattern``."""
    if wanted is None or wanted == port:
        return True
    return isinstance(wanted, str) and glob_matches(str(port), wanted)


class Routes:
    """All virtual hosts of a configuration, first match wins."""

    def __init__(self, config: model.Config) -> None:
        self.config = config
        self.hosts = [VirtualHost(server) for server in config.servers]
        self.mime = MimeTable(config.types)
        self._index = ServersByName()
        for server in config.servers:
            self._index.add(server)
        self._vhosts = {id(vhost.server): vhost for vhost in self.hosts}
        self.select = lru_cache(maxsize=4096)(self._select)

    def _select(self, host: str) -> Optional[VirtualHost]:
        """
        The first server matching ``host``, whichever socket the request came
        by: as in gmid, the address does not choose among the servers. A
        host no server names, one new in each request, is looked up
        without trying every server's names in turn.
        """
        server = self._index.first_for_host(host)
        return None if server is None else self._vhosts[id(server)]
