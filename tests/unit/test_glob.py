"""Server and location patterns mean what they mean to gmid: fnmatch(3) with no flags."""

from __future__ import annotations

import ctypes
import ctypes.util
import re

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from gemfcgi.glob import glob_matches, is_well_formed, literal_end, literal_start


def _libc_fnmatch():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    function = ctypes.CDLL(name).fnmatch
    function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    return lambda pattern, text: function(pattern.encode(), text.encode(), 0) == 0


libc_fnmatch = _libc_fnmatch()


@pytest.mark.parametrize(
    "pattern, matching, not_matching",
    [
        ("[^_]*.txt", ["a.txt", "files/a.txt"], ["_a.txt"]),
        ("[!_]*.txt", ["a.txt"], ["_a.txt"]),
        ("cls/[[:digit:]]*", ["cls/1", "cls/9/x"], ["cls/a", "cls/"]),
        ("lit/\\*", ["lit/*"], ["lit/a", "lit/"]),
        ("*", ["", "a/b/.c"], []),
        ("/app/*", ["/app/", "/app/x/y"], ["/ap", "/application"]),
        ("[]a]", ["]", "a"], ["b"]),
        ("[a-]", ["a", "-"], ["b"]),
        ("[z-a]x", [], ["zx", "ax", "-x"]),
        ("[ab", ["[ab"], ["a"]),
        ("a\\", [], ["a", "a\\"]),
        ("[[:nosuchclass:]]", [], ["a", ":"]),
        ("?.gmi", ["a.gmi", "/.gmi"], [".gmi", "ab.gmi"]),
    ],
)
def test_patterns_as_the_c_function_reads_them(pattern, matching, not_matching):
    assert [glob_matches(name, pattern) for name in matching] == [True] * len(matching)
    assert [glob_matches(name, pattern) for name in not_matching] == [False] * len(not_matching)


PATTERN_PIECES = st.sampled_from(
    ["a", "b", "*", "?", "[", "]", "!", "^", "-", "\\", "/", ".", ":", "=", "[:digit:]", "[:alpha:]",
     "[.a.]", "[=b=]", "1", "[:Alpha:]", "[:al pha:]", "Z"]
)
NAME_CHARACTERS = st.sampled_from(list("ab/.-]!^\\[:=1"))


@pytest.mark.skipif(libc_fnmatch is None, reason="no C library to compare with")
@settings(max_examples=3000, deadline=None)
@given(
    pattern=st.lists(PATTERN_PIECES, max_size=8).map("".join),
    name=st.lists(NAME_CHARACTERS, max_size=6).map("".join),
)
@example(pattern="[]*[=]=", name="==")
@example(pattern="[\\b][*-", name="b[b[-")
@example(pattern="[a-[.z.]]", name="m")
@example(pattern="[+-[.z.]x]", name="]")
def test_every_well_formed_pattern_matches_exactly_what_the_c_function_matches(pattern, name):
    # A malformed bracket expression has no one meaning (see is_well_formed);
    # the check warns of those.
    assume(is_well_formed(pattern))
    assert glob_matches(name, pattern) == libc_fnmatch(pattern, name)


@settings(max_examples=1000, deadline=None)
@given(pattern=st.lists(PATTERN_PIECES, max_size=8).map("".join), data=st.data())
def test_a_name_a_pattern_matches_starts_and_ends_as_the_pattern_does_literally(pattern, data):
    # The server index compares a name only with the globs it can match by these.
    from gemfcgi.glob import translate

    expression = translate(pattern)
    assume(expression != "(?!)")
    name = data.draw(st.from_regex(expression, fullmatch=True))
    assert glob_matches(name, pattern)
    assert name.startswith(literal_start(pattern))
    assert name.endswith(literal_end(pattern))


@pytest.mark.skipif(libc_fnmatch is None, reason="no C library to compare with")
@pytest.mark.parametrize(
    "pattern, matched, unmatched",
    [
        # The C function finds "z" before the class that cannot end a
        # range, and "a" after it: for one, the expression matches...
        ("[za-[:alpha:]", "a", "z"),
        # ...and for the other, not: it stopped at the unclosed [= first.
        ("[[=a]", "a", None),
        ("[x[=a]", None, "x"),
        ("[a-[.[:Alpha:]", None, "a"),
        ("[![=*=]-b:]", "a", None),
        ("[a[:nosuchclass:]]", None, None),
    ],
)
def test_a_malformed_bracket_expression_is_told_apart(pattern, matched, unmatched):
    assert not is_well_formed(pattern)
    # What the C function makes of them depends on the name tested.
    if matched is not None:
        assert libc_fnmatch(pattern, matched)
    if unmatched is not None:
        assert not libc_fnmatch(pattern, unmatched)


@pytest.mark.parametrize(
    "pattern", ["*", "/app/*", "[^_]*.txt", "[]a]", "[a-]", "[z-a]x", "cls/[[:digit:]]*",
                "[a-[.z.]]", "[[=a=]b]", "lit/\\*", "a\\", "[[.-.]-z]"],
)
def test_patterns_a_configuration_holds_are_well_formed(pattern):
    assert is_well_formed(pattern)


@pytest.mark.parametrize("pattern, host", [
    ("*.test.", "a.test"), ("b.test.", "b.test"), ("[![:upper:]]z.test", "az.test"), ("C[A-Z].TEST", "cq.test"),
    # Written in Unicode other than as hosts come mapped: decomposed, full width, ideographic dots.
    ("*.bu\u0308cher.example", "x.xn--bcher-kva.example"), ("*.\uff54est", "x.test"),
    ("*\u3002b\u00dccher\uff0eexample", "x.xn--bcher-kva.example"),
])
def test_a_server_name_matches_hosts_as_requests_bring_them(pattern, host):
    # Lowercased, without a trailing dot: "*.test." matched no host.
    from gemfcgi.gemini.hosts import HostPattern

    assert HostPattern(pattern).matches(host)


@pytest.mark.parametrize("pattern, host, matches", [
    ("[::1]", "::1", True), ("[2001:DB8::1]", "2001:db8::1", True), ("[::1]", "1", False),
    ("[ab]x.test", "ax.test", True),
])
def test_a_server_named_by_an_ipv6_literal_in_brackets_is_that_address(pattern, host, matches):
    # "[::1]" was taken for a bracket class matching ':' or '1': every
    # request for gemini://[::1]/ got 53.
    from gemfcgi.gemini.hosts import HostPattern

    assert HostPattern(pattern).matches(host) is matches


class _CountingReads(str):
    """A pattern that counts how many times its characters are read."""

    reads = 0

    def __getitem__(self, key):
        self.reads += 1
        return str.__getitem__(self, key)


@pytest.mark.parametrize("unit, literal", [("[", "["), ("[a", "[a"), ("[!", "[!"), ("[\\]", "[]")])
def test_a_pattern_of_many_unclosed_brackets_is_read_in_one_pass(unit, literal):
    # Each unclosed [ was read on to the end of the pattern: a server name
    # of 10,000 took 45 s to check, a location of 5,000 held up the start 9 s.
    from gemfcgi.glob import translate

    count = 1000
    pattern = _CountingReads(unit * count)
    assert not is_well_formed(pattern)
    assert glob_matches(literal * count, str(pattern))
    assert not glob_matches(literal * (count - 1), str(pattern))
    expression = translate(pattern)
    assert re.fullmatch(expression, literal * count)
    assert pattern.reads < 30 * len(pattern)
