"""
Checks over a whole ``Config`` that are about gemfcgi, not gmid's grammar.

``shadow_warnings`` points out where gemfcgi and gmid would pick different
server blocks: gmid lets the *last* matching block win, gemfcgi the *first*,
so a block every name of which an earlier glob already matches is never used.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from gemfcgi.config.errors import Diagnostic
from gemfcgi.config.model import Config, Origin, Server
from gemfcgi.gemini.hosts import HostPattern, literal_host, normal_glob, unicode_host
from gemfcgi.glob import compile_glob, is_glob


def _where(origin: Optional[Origin], config: Config) -> tuple[str, int]:
    if origin is None:
        return config.source or "<config>", 0  # no line to blame (built in Python)
    return origin.file, origin.line


def _place(origin: Optional[Origin], config: Config) -> str:
    file, line = _where(origin, config)
    return f"{file}:{line}" if line > 0 else file


_Entry = tuple[int, Server]


def _star_suffix(text: str) -> Optional[str]:
    """What follows ``*.`` in a glob that is only that and a name (``*.example.org``), if it is one."""
    if text.startswith("*.") and not is_glob(text[2:]) and "xn--" not in text:
        return text[2:]
    return None


class ServersByName:
    """
    Server blocks (those read so far, or all), to find the first one a
    name reaches, so that a file of thousands of servers is not millions
    of pattern matches: names that are no globs are looked up by the host
    they match (and by their text, for globs compared with them), globs
    of the usual form ``*.example.org`` by the name after ``*.``, and only
    the other globs are tried, in order.
    """

    def __init__(self) -> None:
        self._by_host: dict[str, _Entry] = {}
        self._by_suffix: dict[str, _Entry] = {}
        self._globs: list[tuple[int, Server, HostPattern]] = []
        # For a glob looked up by its text: the earlier names with no
        # wildcard by that text, the other globs (with no ? nor [ ]) as
        # patterns matched against it.
        self._by_text: dict[str, _Entry] = {}
        self._texts: list[tuple[int, Server, "re.Pattern[str]"]] = []
        self._count = 0

    def add(self, server: Server) -> None:
        entry = (self._count, server)
        self._count += 1
        for pattern in [server.name, *server.aliases]:
            host = literal_host(pattern)[1]
            text = normal_glob(pattern)
            suffix = _star_suffix(text)
            if host is not None:
                self._by_host.setdefault(host, entry)
            elif suffix is not None:
                self._by_suffix.setdefault(suffix, entry)
            else:
                self._globs.append((*entry, HostPattern(pattern)))
            if "?" in pattern or "[" in pattern:
                continue
            if not is_glob(text):
                self._by_text.setdefault(text, entry)
            elif suffix is None:
                self._texts.append((*entry, compile_glob(text)))

    def first_taking(self, name: str) -> Optional[Server]:
        """The first earlier server a request for ``name`` (itself possibly a glob) would pick."""
        host = literal_host(name)[1]
        if host is not None:
            # A name as requests bring it: "second.test." and "SECOND.test"
            # are "second.test", and punycode and Unicode are one name.
            found = [self._by_host.get(host), *map(self._suffix_taking, {host, unicode_host(host)})]
            return self._first(found, self._globs, lambda pattern: pattern.matches(host))
        # A glob against globs: the earlier one is matched against its text,
        # which tells only when the earlier one has no ? or [ ] ("?.test"
        # matches the text "*.test", not every host that glob takes).
        lowered = normal_glob(name)
        found = [self._by_text.get(lowered), self._suffix_taking(lowered)]
        return self._first(found, self._texts, lambda regex: regex.fullmatch(lowered) is not None)

    def _suffix_taking(self, name: str) -> Optional[_Entry]:
        """The first ``*.NAME`` glob that ``name`` matches: one for a name it ends with after a dot."""
        taking = None
        for dot in (i for i, character in enumerate(name) if character == "."):
            entry = self._by_suffix.get(name[dot + 1:])
            if entry is not None and (taking is None or entry[0] < taking[0]):
                taking = entry
        return taking

    @staticmethod
    def _first(found: list[Optional[_Entry]], others: list, takes: Callable[[Any], bool]) -> Optional[Server]:
        """The earliest server of ``found`` and of the ``others`` (in order) whose pattern ``takes``."""
        first = min((entry for entry in found if entry is not None), default=None, key=lambda e: e[0])
        for index, server, pattern in others:
            if first is not None and index > first[0]:
                break
            if takes(pattern):
                return server
        return first[1] if first is not None else None


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
