"""
Server and location patterns, matched as gmid matches them: ``fnmatch(3)``
with no flags.

Python's ``fnmatch`` is a different dialect: it reads ``[^a]`` as a caret or
an ``a``, knows no character classes (``[[:digit:]]``), and has no escape
(``\\*`` is a backslash and anything). A gmid.conf written for the C function
would route differently, so patterns are translated here into regular
expressions with the C function's meaning:

* ``*`` matches any run of characters, ``/`` and a leading ``.`` included,
  and ``?`` any one character;
* ``[...]`` is a bracket expression: ``!`` or ``^`` first negates it, a
  ``]`` first is literal, ``a-z`` is a range (empty when reversed), a ``-``
  first or last is literal, ``[:class:]`` is one of the POSIX classes in the
  C locale (``[.x.]`` and ``[=x=]`` are the character x; ``[.x.]`` may also
  end a range), and a ``[``
  with no closing ``]`` is a literal ``[``;
* a backslash makes the next character literal, in brackets too; a pattern
  ending in a lone backslash matches nothing, and so does one naming an
  unknown class.

Each pattern is translated once (configurations are loaded once, requests
are many).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Optional

# The POSIX classes in the C locale, as regular expression class contents.
_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "\\x21-\\x7e",
    "lower": "a-z",
    "print": "\\x20-\\x7e",
    "punct": "!-/:-@\\[-`{-~",
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "xdigit": "0-9A-Fa-f",
}

_NOTHING = "(?!)"


class _NoMatch(Exception):
    """The pattern can match nothing at all (a trailing backslash, an unknown class)."""


class _Malformed(Exception):
    """A bracket expression that only parses leniently (see ``is_well_formed``)."""


def _bracket(pattern: str, start: int, strict: bool = False,
             unclosed: Optional[set[int]] = None) -> tuple[Optional[str], int]:
    """
    The bracket expression opening at ``pattern[start]`` (a ``[``) as a
    regular expression, and the index after it; ``None`` when it is never
    closed, so the ``[`` is literal. ``strict``: raise ``_Malformed`` where
    the expression only parses leniently.

    ``unclosed`` holds the indexes from which an earlier expression of the
    same pattern was read on to the end: past its first member, where an
    expression stands depends on that index alone, so one reaching such an
    index is never closed either. Without it, each ``[`` of a pattern
    holding many unclosed ones would be read to the end again.
    """
    if unclosed is None:
        unclosed = set()
    passed: list[int] = []

    def lenient(outcome: Optional[Exception] = None) -> None:
        if strict:
            raise _Malformed
        if outcome is not None:
            raise outcome

    i = start + 1
    negated = i < len(pattern) and pattern[i] in "!^"
    if negated:
        i += 1
    items: list[str] = []
    first = True
    while True:
        if i >= len(pattern) or (not first and i in unclosed):
            lenient()
            unclosed.update(passed)
            return None, start + 1
        if not first:
            passed.append(i)
        c = pattern[i]
        if c == "]" and not first:
            i += 1
            break
        first = False
        if c == "[" and pattern.startswith("[:", i):
            # glibc reads a class name of letters a to y up to ':]'; any
            # other character first makes the '[' an ordinary member.
            end = i + 2
            while end < len(pattern) and "a" <= pattern[end] < "z":
                end += 1
            if not pattern.startswith(":]", end):
                lenient()
                low, i = c, i + 1
            else:
                name = pattern[i + 2 : end]
                if name not in _CLASSES:
                    lenient(_NoMatch())
                items.append(_CLASSES[name])
                i = end + 2
                continue
        elif c == "[" and pattern[i + 1 : i + 2] == "=":
            # An equivalence class [=x=]: in the C locale, x itself; not
            # closed right after x, the '[' is an ordinary member.
            if pattern[i + 3 : i + 5] == "=]" and i + 2 < len(pattern):
                low, i = pattern[i + 2], i + 5
                if pattern[i : i + 1] == "-" and pattern[i + 1 : i + 2] != "]":
                    lenient()  # a class cannot start a range
            else:
                lenient()
                low, i = c, i + 1
        elif c == "[" and pattern[i + 1 : i + 2] == ".":
            # A collating symbol [.x.]: in the C locale, one character.
            if pattern[i + 3 : i + 5] != ".]":
                lenient(_NoMatch())
            low, i = pattern[i + 2], i + 5
        elif c == "\\":
            if i + 1 >= len(pattern):
                lenient()
                unclosed.update(passed)
                return None, start + 1
            low, i = pattern[i + 1], i + 2
        else:
            low, i = c, i + 1
        if pattern[i : i + 1] == "-" and pattern[i + 1 : i + 2] != "]":
            high_at = i + 1
            if high_at >= len(pattern):
                lenient(_NoMatch())  # a range running into the end of the pattern
            if pattern[high_at] == "\\":
                if high_at + 1 >= len(pattern):
                    lenient(_NoMatch())
                high, i = pattern[high_at + 1], high_at + 2
            elif pattern.startswith("[.", high_at):
                # A collating symbol ends a range as it can start one.
                if pattern[high_at + 3 : high_at + 5] != ".]":
                    lenient(_NoMatch())
                high, i = pattern[high_at + 2], high_at + 5
            else:
                if pattern[high_at : high_at + 2] in ("[:", "[="):
                    lenient()  # a class cannot end a range
                high, i = pattern[high_at], high_at + 1
            if low <= high:
                items.append(f"{re.escape(low)}-{re.escape(high)}")
            continue
        items.append(re.escape(low))
    if not items:
        # Only reversed (empty) ranges: nothing, or anything when negated.
        return ("(?s:.)" if negated else _NOTHING), i
    return f"[{'^' if negated else ''}{''.join(items)}]", i


def translate(pattern: str, strict: bool = False) -> str:
    """
    The regular expression (to be matched whole) that means ``pattern``;
    ``strict``: raise ``_Malformed`` for a bracket expression that only
    parses leniently.
    """
    parts: list[str] = []
    unclosed: set[int] = set()
    i = 0
    try:
        while i < len(pattern):
            c = pattern[i]
            if c == "*":
                while i < len(pattern) and pattern[i] == "*":
                    i += 1
                parts.append("(?s:.)*")
                continue
            if c == "?":
                parts.append("(?s:.)")
            elif c == "[":
                expression, after = _bracket(pattern, i, strict, unclosed)
                if expression is not None:
                    parts.append(expression)
                    i = after
                    continue
                parts.append(re.escape(c))
            elif c == "\\":
                if i + 1 >= len(pattern):
                    raise _NoMatch
                i += 1
                parts.append(re.escape(pattern[i]))
            else:
                parts.append(re.escape(c))
            i += 1
    except _NoMatch:
        return _NOTHING
    return "".join(parts)


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> "re.Pattern[str]":
    return re.compile(translate(pattern))


def is_well_formed(pattern: str) -> bool:
    """
    Whether every bracket expression of ``pattern`` is closed and made of
    valid members (characters, ranges, known classes, ``[.x.]``, ``[=x=]``).

    The C function reads a bracket only as far as it needs to: a name
    character found before a malformed member matches, one found after it
    does not, so what a malformed expression matches depends on the
    character tested. ``translate`` reads such an expression whole, one way
    for every character: it matches as ``fnmatch`` does for well-formed
    patterns only, and the configuration check warns about the others.
    """
    try:
        translate(pattern, strict=True)
    except _Malformed:
        return False
    return True


def literal_start(pattern: str) -> str:
    """What every name ``pattern`` matches starts with: its characters before the first wildcard or escape."""
    for index, character in enumerate(pattern):
        if character in "*?[\\":
            return pattern[:index]
    return pattern


def literal_end(pattern: str) -> str:
    """What every name ``pattern`` matches ends with: its characters after the last wildcard, escape or bracket."""
    for index in range(len(pattern) - 1, -1, -1):
        if pattern[index] in "*?[]\\":
            return pattern[index + 1:]
    return pattern


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` holds a character ``fnmatch`` gives a meaning (else it matches itself only)."""
    return any(c in pattern for c in "*?[\\")


def glob_matches(name: str, pattern: str) -> bool:
    """Whether ``name`` matches ``pattern`` as ``fnmatch(pattern, name, 0)`` says."""
    return compile_glob(pattern).fullmatch(name) is not None
