"""
Which server block a host name reaches: the first whose name or alias
matches it, found without matching every block's patterns in turn.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from gemfcgi.config.model import Server
from gemfcgi.gemini.hosts import HostPattern, glob_spellings, literal_host, normal_glob, unicode_host
from gemfcgi.glob import compile_glob, is_glob

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
            return self.first_for_host(host)
        # A glob against globs: the earlier one is matched against its text,
        # which tells only when the earlier one has no ? or [ ] ("?.test"
        # matches the text "*.test", not every host that glob takes).
        # In either spelling: "*.xn--bcher-kva.example" is "*.bücher.example".
        spellings = glob_spellings(normal_glob(name))
        found = [entry for text in spellings for entry in (self._by_text.get(text), self._suffix_taking(text))]
        return self._first(found, self._texts,
                           lambda regex: any(regex.fullmatch(text) is not None for text in spellings))

    def first_for_host(self, host: str) -> Optional[Server]:
        """The first server whose name or alias matches ``host`` (canonical, as requests bring it)."""
        found = [self._by_host.get(host), *map(self._suffix_taking, {host, unicode_host(host)})]
        return self._first(found, self._globs, lambda pattern: pattern.matches(host))

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
