"""
Which server block a host name reaches: the first whose name or alias
matches it, found without matching every block's patterns in turn.
"""

from __future__ import annotations

import heapq
import re
from typing import Any, Callable, Generic, Iterable, Iterator, Optional, TypeVar

from gemfcgi.config.model import Server
from gemfcgi.gemini.hosts import HostPattern, glob_spellings, literal_host, normal_glob, unicode_host
from gemfcgi.glob import compile_glob, is_glob, literal_end, literal_start

_Entry = tuple[int, Server]
_Matcher = TypeVar("_Matcher")


def _star_suffix(text: str) -> Optional[str]:
    """What follows ``*.`` in a glob that is only that and a name (``*.example.org``), if it is one."""
    if text.startswith("*.") and not is_glob(text[2:]) and "xn--" not in text:
        return text[2:]
    return None


class _Affixes:
    """
    Positions filed under texts (a trie): what is filed under every text
    a name starts with is found by reading the name once, however many
    texts there are.
    """

    def __init__(self) -> None:
        # A text's node is reached by its characters; "" (no character)
        # holds what is filed under that text.
        self._root: dict[str, Any] = {}

    def file(self, text: str, position: int) -> None:
        node = self._root
        for character in text:
            node = node.setdefault(character, {})
        node.setdefault("", []).append(position)

    def under_starts_of(self, name: str) -> Iterator[list[int]]:
        """The lists filed under each start of ``name``, "" and ``name`` itself included, each in the order filed."""
        node = self._root
        for character in name:
            if "" in node:
                yield node[""]
            node = node.get(character)
            if node is None:
                return
        if "" in node:
            yield node[""]


class _Globs(Generic[_Matcher]):
    """
    Globs of server blocks in the order added, each with what matches it,
    given for a name in that order, but only those that can match it: one
    with a literal start (or end, if that is longer) only for the names
    that start (or end) with it. Trying each of them made a file of 1,000
    servers with 10 aliases like "a0.h1.*" take 28 s to check.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[int, Server, _Matcher]] = []
        self._by_start = _Affixes()
        self._by_end = _Affixes()  # under the end reversed
        self._anywhere: list[int] = []
        # Given as they are when no other glob can match a name.
        self._anywhere_entries: list[tuple[int, Server, _Matcher]] = []

    def add(self, entry: _Entry, matcher: _Matcher, spellings: Iterable[str]) -> None:
        position = len(self._entries)
        self._entries.append((*entry, matcher))
        for spelling in spellings:
            start, end = literal_start(spelling), literal_end(spelling)
            if start and len(start) >= len(end):
                self._by_start.file(start, position)
            elif end:
                self._by_end.file(end[::-1], position)
            elif self._anywhere[-1:] != [position]:
                self._anywhere.append(position)
                self._anywhere_entries.append(self._entries[position])

    def that_can_match(self, names: Iterable[str]) -> Iterable[tuple[int, Server, _Matcher]]:
        """In the order added, lazily: a caller stops at the first that matches, as before any earlier one."""
        lists = [self._anywhere]
        for name in names:
            lists += self._by_start.under_starts_of(name)
            lists += self._by_end.under_starts_of(name[::-1])
        if len(lists) == 1:
            return self._anywhere_entries
        return self._merged(lists)

    def _merged(self, lists: list[list[int]]) -> Iterator[tuple[int, Server, _Matcher]]:
        previous = -1
        for position in heapq.merge(*lists):
            if position != previous:
                yield self._entries[position]
            previous = position


class ServersByName:
    """
    Server blocks (those read so far, or all), to find the first one a
    name reaches, so that a file of thousands of servers is not millions
    of pattern matches: names that are no globs are looked up by the host
    they match (and by their text, for globs compared with them), globs
    of the usual form ``*.example.org`` by the name after ``*.``, and only
    the other globs that can match are tried, in order.
    """

    def __init__(self) -> None:
        self._by_host: dict[str, _Entry] = {}
        self._by_suffix: dict[str, _Entry] = {}
        self._globs: _Globs[HostPattern] = _Globs()
        # For a glob looked up by its text: the earlier names with no
        # wildcard by that text, the other globs (with no ? nor [ ]) as
        # patterns matched against it.
        self._by_text: dict[str, _Entry] = {}
        self._texts: _Globs["re.Pattern[str]"] = _Globs()
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
                host_pattern = HostPattern(pattern)
                self._globs.add(entry, host_pattern, host_pattern.globs)
            if "?" in pattern or "[" in pattern:
                continue
            if not is_glob(text):
                self._by_text.setdefault(text, entry)
            elif suffix is None:
                self._texts.add(entry, compile_glob(text), [text])

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
        return self._first(found, self._texts.that_can_match(spellings),
                           lambda regex: any(regex.fullmatch(text) is not None for text in spellings))

    def first_for_host(self, host: str) -> Optional[Server]:
        """The first server whose name or alias matches ``host`` (canonical, as requests bring it)."""
        names = {host, unicode_host(host)}
        found = [self._by_host.get(host), *map(self._suffix_taking, names)]
        return self._first(found, self._globs.that_can_match(names), lambda pattern: pattern.matches(host))

    def _suffix_taking(self, name: str) -> Optional[_Entry]:
        """The first ``*.NAME`` glob that ``name`` matches: one for a name it ends with after a dot."""
        taking = None
        for dot in (i for i, character in enumerate(name) if character == "."):
            entry = self._by_suffix.get(name[dot + 1:])
            if entry is not None and (taking is None or entry[0] < taking[0]):
                taking = entry
        return taking

    @staticmethod
    def _first(found: list[Optional[_Entry]], others: Iterable, takes: Callable[[Any], bool]) -> Optional[Server]:
        """The earliest server of ``found`` and of the ``others`` (in order) whose pattern ``takes``."""
        first = min((entry for entry in found if entry is not None), default=None, key=lambda e: e[0])
        for index, server, pattern in others:
            if first is not None and index > first[0]:
                break
            if takes(pattern):
                return server
        return first[1] if first is not None else None
