"""A Gemini reply header read from an upstream, in any fragmentation."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemfcgi.gemini.reply import GeminiReplyReader, ReplyError, ReplyHeader, read_header


def read(*chunks: bytes):
    reader = GeminiReplyReader()
    for chunk in chunks:
        decision = reader.feed(chunk)
        if decision is not None:
            return decision
    return reader.end()


def test_a_header_and_the_start_of_the_body():
    decision = read(b"20 text/gemini\r\n# Title\n")
    assert decision == ReplyHeader(20, "text/gemini", b"20 text/gemini\r\n", b"# Title\n")
    assert decision.sends_body


def test_an_empty_success_meta_is_spelt_out():
    assert read(b"20\r\n").header == b"20 text/gemini; charset=utf-8\r\n"


def test_blanks_around_meta_are_dropped_and_blanks_alone_are_no_meta():
    assert read(b"20   \r\n") == ReplyHeader(
        20, "text/gemini; charset=utf-8", b"20 text/gemini; charset=utf-8\r\n", b"")
    assert read(b"20  text/plain \r\nx") == ReplyHeader(20, "text/plain", b"20 text/plain\r\n", b"x")
    assert read(b"51  \r\n").header == b"51 not found\r\n"


@pytest.mark.parametrize("code", [10, 31, 44, 51, 62])
def test_other_codes_carry_no_body(code):
    assert not read(b"%d meta\r\nrest" % code).sends_body


@pytest.mark.parametrize("reply, message", [
    (b"200 OK\r\n", "malformed header b'200 OK\\r\\n': not two digits and a space"),
    (b"HTTP/1.1 200 OK\r\n", "not two digits and a space"),
    (b"2 x\r\n", "not two digits and a space"),
    (b"20\ttext/gemini\r\n", "not two digits and a space"),
    (b"20 text/gemini\n", "malformed header: it ends with a bare LF, not CRLF"),
    (b"20 text/gem", "closed before a complete header (11 bytes received)"),
    (b"70 nope\r\n", "status 70 is not defined"),
    (b"09 nope\r\n", "status 09 is not defined"),
    (b"30 \r\n", "status 30 requires a META"),
    (b"30  \t\r\n", "status 30 requires a META"),
    (b"20 \xff\r\n", "META is not valid UTF-8"),
    (b"20 a\x1b[2Jb\r\n", "control character"),
    (b"", "closed before a complete header (0 bytes received)"),
])
def test_malformed_replies_are_named(reply, message):
    decision = read(reply)
    assert isinstance(decision, ReplyError)
    assert message in decision.message


def test_no_crlf_within_1029_bytes_is_an_error_at_once():
    reader = GeminiReplyReader()
    assert reader.feed(b"20 " + b"x" * 1024) is None  # 1027 bytes: its CRLF may still come
    decision = reader.feed(b"xx")
    assert decision == ReplyError("header over 1029 bytes")


def test_the_longest_header_passes():
    meta = "x" * 1024
    assert read(f"20 {meta}\r\n".encode()).meta == meta


@given(
    code=st.integers(10, 69),
    meta=st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=40),
    body=st.binary(max_size=64),
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_fragmentation_changes_nothing(code, meta, body, cuts):
    reply = f"{code} {meta}\r\n".encode() + body
    whole = read(reply)
    points = sorted({min(cut, len(reply)) for cut in cuts})
    chunks = [reply[a:b] for a, b in zip([0, *points], [*points, len(reply)])]
    reader = GeminiReplyReader()
    for index, chunk in enumerate(chunks):
        decision = reader.feed(chunk)
        if decision is not None:
            break
    if isinstance(whole, ReplyError):  # a META starting with a byte order mark
        assert decision == whole
        return
    # What follows the chunk that decided is body too, the caller's to relay.
    later = b"".join(chunks[index + 1:])
    assert decision == replace(whole, body=whole.body[: len(whole.body) - len(later)])
    assert decision.body + later == whole.body


@pytest.mark.parametrize("meta, wrong", [
    ("not a url at all", "it holds a space"),
    ("gemini://[::1", "Invalid IPv6 URL"),
    ("gemini://example.org:99999/", "Port out of range 0-65535"),
    ("gemini://example.org/a b", "it holds a space"),
    # Relayed as they were (a tab is allowed in any META).
    ("/a\tb", "it holds '\\t', which no URI may"),
    ("/a<b>", "it holds '<', which no URI may"),
    ('/a"b', "it holds '\"', which no URI may"),
    ("/a{b}", "it holds '{', which no URI may"),
    ("/a\\b", "it holds '\\\\', which no URI may"),
    ("/a%zz", "a '%' not followed by two hexadecimal digits"),
    ("/x%4", "a '%' not followed by two hexadecimal digits"),
    ("/x#a#b", "it holds more than one '#'"),
])
def test_a_redirect_to_what_is_no_uri_reference_is_refused(meta, wrong):
    # Relayed as they were, a client had a redirect it could not follow.
    decision = read_header(f"30 {meta}\r\n".encode())
    assert isinstance(decision, ReplyError) and decision.message.endswith(wrong)


@pytest.mark.parametrize("meta", [
    "gemini://example.org/a%20b?q=1", "/local/path", "../up", "caf\u00e9.gmi", "gemini://[::1]:1965/",
    "/a%2F%c3%A9#frag", "gemini://example.org/?q=a;b=c&d=e+f~g!h*'(i):@$,",
    "/\u00a0x\u3000y",
])
def test_a_redirect_to_a_uri_or_iri_reference_is_relayed(meta):
    assert read_header(f"31 {meta}\r\n".encode()).meta == meta
