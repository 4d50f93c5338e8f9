"""
Checks over a whole ``Config`` that are about gemfcgi, not gmid's grammar.

``shadow_warnings`` points out where gemfcgi and gmid would pick different
server blocks: gmid lets the *last* matching block win, gemfcgi the *first*,
so a block every name of which an earlier glob already matches is never used.
"""

from __future__ import annotations

from typing import Optional

from gemfcgi.config.errors import Diagnostic
from gemfcgi.config.model import Config, Origin, Server
from gemfcgi.gemini.hosts import HostPattern, literal_host, normal_glob
from gemfcgi.glob import glob_matches


def _where(origin: Optional[Origin], config: Config) -> tuple[str, int]:
    if origin is None:
        return config.source or "<config>", 0  # no line to blame (built in Python)
    return origin.file, origin.line


def _place(origin: Optional[Origin], config: Config) -> str:
    file, line = _where(origin, config)
    return f"{file}:{line}" if line > 0 else file


class ServersByName:
    """
    Server blocks (those read so far, or all), to find the first one a name reaches:
    the names that are no globs by the host they match, so that a file of
    a thousand servers is not a million pattern matches.
    """

    def __init__(self) -> None:
        self._by_host: dict[str, tuple[int, Server]] = {}
        self._globs: list[tuple[int, Server, list[str], list[HostPattern]]] = []
        self._servers: list[tuple[int, Server]] = []

    def add(self, server: Server) -> None:
        index = len(self._servers)
        self._servers.append((index, server))
        globs = []
        for pattern in [server.name, *server.aliases]:
            host = literal_host(pattern)[1]
            if host is not None:
                self._by_host.setdefault(host, (index, server))
            else:
                globs.append(pattern)
        if globs:
            self._globs.append((index, server, globs, [HostPattern(glob) for glob in globs]))

    def first_taking(self, name: str) -> Optional[Server]:
        """The first earlier server a request for ``name`` (itself possibly a glob) would pick."""
        host = literal_host(name)[1]
        if host is not None:
            # A name as requests bring it: "second.test." and "SECOND.test"
            # are "second.test", and punycode and Unicode are one name.
            found = self._by_host.get(host)
            for index, server, _, patterns in self._globs:
                if found is not None and index > found[0]:
                    break
                if any(pattern.matches(host) for pattern in patterns):
                    return server
            return found[1] if found is not None else None
        # A glob against globs: the earlier one is matched against its text,
        # which tells only when the earlier one has no ? or [ ] ("?.test"
        # matches the text "*.test", not every host that glob takes).
        lowered = normal_glob(name)
        for _, server in self._servers:
            if any(glob_matches(lowered, normal_glob(pattern)) for pattern in [server.name, *server.aliases]
                   if "?" not in pattern and "[" not in pattern):
                return server
        return None


def shadow_warnings(config: Config) -> list[Diagnostic]:
    """
    A warning for every server block that earlier blocks hide completely.

    A block is hidden when its name and each alias match (case-insensitively)
    the name or an alias of some earlier block. The warning names the block
    and every earlier block that hides part of it. A block only partly
    hidden gets a warning for each of its names that an earlier block takes,
    since requests for that name never reach it.
    """
    warnings: list[Diagnostic] = []
    earlier = ServersByName()
    for server in config.servers:
        taken = [(name, earlier.first_taking(name)) for name in [server.name, *server.aliases]]
        earlier.add(server)
        file, line = _where(server.origin, config)
        if any(first is None for _, first in taken):
            for name, first in taken:
                if first is not None:
                    what = "its name" if name == server.name else f'its alias "{name}"'
                    warnings.append(Diagnostic(
                        file, line,
                        f'server "{server.name}": requests for {what} go to server "{first.name}" '
                        f"at {_place(first.origin, config)} (gemfcgi uses the first matching block)",
                        "warning"))
            continue
        shadows: list[Server] = []
        for _, first in taken:
            if all(first is not s for s in shadows):
                shadows.append(first)
        by = " and ".join(
            f'server "{s.name}" at {_place(s.origin, config)}' for s in shadows
        )
        warnings.append(
            Diagnostic(
                file,
                line,
                f'server "{server.name}" is shadowed by {by} '
                "(gemfcgi uses the first matching block)",
                "warning",
            )
        )
    return warnings
