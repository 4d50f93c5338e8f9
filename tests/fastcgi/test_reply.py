"""FastCGI reply headers: Gemini headers relayed, CGI headers translated."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gemfcgi.fastcgi.reply import (
    ReplyError,
    ReplyHeader,
    ReplyHeaderReader,
)
from gemfcgi.gemini.status import response_header

DEFINED = [10, 11, 20, 30, 31, 40, 41, 42, 43, 44, 50, 51, 52, 53, 59, 60, 61, 62]
UNNAMED = [code for code in range(10, 70) if code not in DEFINED]
OUT_OF_RANGE = [code for code in range(100) if not 10 <= code <= 69]


def decide(stdout: bytes):
    """The decision for the whole of ``stdout``, or the error at END."""
    reader = ReplyHeaderReader()
    decision = reader.feed(stdout)
    return decision if decision is not None else reader.end()


def header_of(stdout: bytes) -> bytes:
    decision = decide(stdout)
    assert isinstance(decision, ReplyHeader), decision
    return decision.header


def error_of(stdout: bytes) -> str:
    decision = decide(stdout)
    assert isinstance(decision, ReplyError), decision
    return decision.message


# Gemini headers --------------------------------------------------------------


def test_gemini_success_header_is_relayed_with_its_body():
    decision = decide(b"20 text/gemini\r\n# Hello\n")
    assert decision == ReplyHeader(
        20, "text/gemini", b"20 text/gemini\r\n", b"# Hello\n"
    )
    assert decision.sends_body


@pytest.mark.parametrize("code", DEFINED)
def test_every_defined_code_is_relayed(code):
    assert header_of(b"%d meta\r\n" % code) == b"%d meta\r\n" % code


@pytest.mark.parametrize("code", UNNAMED)
def test_a_code_from_10_to_69_the_specification_does_not_name_is_relayed(code):
    # As gmid does: clients act on the first digit.
    assert header_of(b"%d meta\r\n" % code) == b"%d meta\r\n" % code


@pytest.mark.parametrize("code", OUT_OF_RANGE)
def test_code_outside_10_to_69_is_an_error(code):
    assert f"{code}" in error_of(b"%02d meta\r\n" % code)


def test_code_99_is_an_invalid_status():
    assert "status 99" in error_of(b"99 whatever\r\n")
    assert "status 05 is not defined" in error_of(b"05 whatever\r\n")


@pytest.mark.parametrize("line, said", [
    (b"200 OK", "malformed header b'200 OK': a Gemini status has two digits"),
    (b"404", "malformed header b'404': a Gemini status has two digits"),
    (b"HTTP/1.1 200 OK", "malformed header line b'HTTP/1.1 200 OK'"),
])
def test_a_status_line_of_three_digits_says_gemini_has_two(line, said):
    assert error_of(line + b"\r\nContent-Type: text/gemini\r\n\r\nbody") == said


@pytest.mark.parametrize("code", [40, 41, 42, 43, 44, 50, 51, 52, 53, 59, 60, 61, 62])
def test_failure_code_without_meta_is_relayed_with_the_codes_name(code):
    assert header_of(b"%d\r\n" % code) == response_header(code)
    assert header_of(b"%d\r\n" % code).startswith(b"%d " % code)


def test_failure_code_with_space_and_empty_meta_is_relayed_with_the_codes_name():
    assert header_of(b"51 \r\n") == b"51 not found\r\n"


@pytest.mark.parametrize("code", [10, 11, 30, 31])
def test_missing_meta_for_input_and_redirect_is_an_error(code):
    assert "requires a META" in error_of(b"%d\r\n" % code)
    assert "requires a META" in error_of(b"%d \r\n" % code)


@pytest.mark.parametrize("header", [b"20 \r\n", b"20\r\n"], ids=["space", "no-space"])
def test_success_with_an_empty_meta_is_sent_with_the_mime_type_it_means(header):
    decision = decide(header + b"# Hi\n")
    assert decision == ReplyHeader(
        20, "text/gemini; charset=utf-8", b"20 text/gemini; charset=utf-8\r\n", b"# Hi\n"
    )
    assert decision.sends_body


def test_an_unnamed_success_code_has_a_body():
    decision = decide(b"21 text/gemini\r\n# Hi\n")
    assert decision == ReplyHeader(21, "text/gemini", b"21 text/gemini\r\n", b"# Hi\n")
    assert decision.sends_body


def test_meta_of_1024_bytes_is_relayed():
    meta = b"m" * 1024
    assert header_of(b"20 " + meta + b"\r\nbody") == b"20 " + meta + b"\r\n"


def test_meta_of_1025_bytes_is_a_header_over_1029_bytes():
    assert error_of(b"20 " + b"m" * 1025 + b"\r\nbody") == "header over 1029 bytes"


def test_header_without_crlf_in_1029_bytes_is_an_error_before_more_arrives():
    reader = ReplyHeaderReader()
    assert reader.feed(b"20 " + b"m" * 1025) is None
    assert reader.feed(b"m") == ReplyError("header over 1029 bytes")


def test_meta_of_1024_multibyte_utf8_bytes_is_relayed():
    meta = "é" * 512
    decision = decide(b"20 " + meta.encode() + b"\r\n")
    assert isinstance(decision, ReplyHeader)
    assert decision.meta == meta


def test_meta_that_is_not_utf8_is_an_error():
    assert "UTF-8" in error_of(b"20 text/\xff\r\n")


def test_tab_instead_of_space_is_an_error():
    assert "malformed header" in error_of(b"20\ttext/gemini\r\nbody\n")


def test_bare_cr_after_the_code_is_an_error():
    assert "malformed header" in error_of(b"51\rx\r\n")


@pytest.mark.parametrize("stdout", [
    b"51 gone\x1b[2J\r\n", b"30 /x\x00y\r\n", b"Status: 404 Not\x07Found\r\n\r\n",
])
def test_a_control_character_in_meta_is_an_error(stdout):
    assert "control character" in error_of(stdout)


@pytest.mark.parametrize("stdout", [b"20 text/gemini\nX: y\r\n", b"20 text/gemini\n# body\n", b"20 \n"])
def test_a_gemini_header_ended_by_a_bare_lf_is_an_error_as_soon_as_it_comes(stdout):
    # No header holds a LF: the first one ends it, whatever follows.
    decision = ReplyHeaderReader().feed(stdout)
    assert decision == ReplyError("malformed header: it ends with a bare LF, not CRLF")


def test_one_digit_code_is_an_error():
    assert "malformed header" in error_of(b"5 oops\r\n")


def test_non_success_reply_does_not_send_its_body():
    decision = decide(b"30 /elsewhere\r\nignored body")
    assert isinstance(decision, ReplyHeader)
    assert decision.header == b"30 /elsewhere\r\n"
    assert not decision.sends_body


@pytest.mark.parametrize("code", [20, 21, 29])
def test_only_2x_replies_send_a_body(code):
    assert ReplyHeader(code, "x", b"").sends_body


@pytest.mark.parametrize("code", [10, 30, 42, 51, 60])
def test_other_replies_send_no_body(code):
    assert not ReplyHeader(code, "x", b"").sends_body


def test_gemini_header_split_over_many_feeds_is_decided_at_crlf():
    reply = b"20 text/plain\r\nhello"
    reader = ReplyHeaderReader()
    for byte in reply[:14]:
        assert reader.feed(bytes([byte])) is None
    decision = reader.feed(reply[14:])
    assert decision == ReplyHeader(20, "text/plain", b"20 text/plain\r\n", b"hello")


def test_empty_feeds_change_nothing():
    reader = ReplyHeaderReader()
    assert reader.feed(b"") is None
    assert reader.feed(b"2") is None
    assert reader.feed(b"") is None
    assert reader.feed(b"0 a/b\r\n") == ReplyHeader(20, "a/b", b"20 a/b\r\n")


def test_end_before_any_byte_is_an_error():
    assert ReplyHeaderReader().end() == ReplyError(
        "END or EOF before a complete header (0 bytes received)"
    )


def test_end_in_the_middle_of_a_header_is_an_error():
    reader = ReplyHeaderReader()
    assert reader.feed(b"20 text/gem") is None
    message = reader.end().message
    assert message == "END or EOF before a complete header (11 bytes received)"


def test_feeding_after_the_decision_is_a_programming_error():
    reader = ReplyHeaderReader()
    assert reader.feed(b"51\r\n") is not None
    with pytest.raises(RuntimeError):
        reader.feed(b"more")
    with pytest.raises(RuntimeError):
        reader.end()


# CGI headers -------------------------------------------------------------------


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_cgi_content_type_becomes_20(newline):
    decision = decide(b"Content-Type: text/gemini" + newline + newline + b"# Hi")
    assert decision == ReplyHeader(20, "text/gemini", b"20 text/gemini\r\n", b"# Hi")


@pytest.mark.parametrize("status", [b"200", b"200 OK", b"203 Non-Authoritative"])
def test_cgi_content_type_with_2xx_status_becomes_20(status):
    stdout = (
        b"Status: " + status + b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nx"
    )
    assert header_of(stdout) == b"20 text/plain; charset=utf-8\r\n"


def test_cgi_location_becomes_30():
    assert (
        header_of(b"Location: gemini://example.org/\n\n")
        == b"30 gemini://example.org/\r\n"
    )


@pytest.mark.parametrize("status", [b"302 Found", b"303", b"307"])
def test_cgi_location_with_other_3xx_status_becomes_30(status):
    assert header_of(b"Status: " + status + b"\nLocation: /new\n\n") == b"30 /new\r\n"


@pytest.mark.parametrize("status", [b"301", b"308 Permanent Redirect"])
def test_cgi_location_with_status_301_or_308_becomes_31(status):
    assert header_of(b"Status: " + status + b"\nLocation: /new\n\n") == b"31 /new\r\n"


def test_a_cgi_location_that_is_no_uri_reference_is_refused():
    # A tab went through (a META may hold one), where a space got 42.
    decision = decide(b"Location: /a\tb<c>\r\n\r\n")
    assert decision == ReplyError("invalid header: redirect to '/a\\tb<c>': it holds '\\t', which no URI may")


def test_cgi_redirect_sends_no_body():
    decision = decide(b"Location: /new\nContent-Type: text/html\n\n<html>")
    assert isinstance(decision, ReplyHeader)
    assert decision.header == b"30 /new\r\n"
    assert not decision.sends_body


@pytest.mark.parametrize(
    ("http_status", "gemini_code"),
    [
        (400, 59),
        (401, 60),
        (403, 50),
        (404, 51),
        (410, 52),
        (429, 44),
        (503, 41),
        (402, 50),
        (405, 50),
        (418, 50),
        (499, 50),
        (500, 42),
        (502, 42),
        (504, 42),
        (599, 42),
    ],
)
def test_cgi_error_status_is_translated(http_status, gemini_code):
    decision = decide(
        b"Status: %d Reason here\r\nContent-Type: text/html\r\n\r\n<p>" % http_status
    )
    assert decision == ReplyHeader(
        gemini_code, "Reason here", b"%d Reason here\r\n" % gemini_code, b"<p>"
    )
    assert not decision.sends_body


def test_cgi_status_404_becomes_51_with_its_reason_phrase():
    assert header_of(b"Status: 404 No such page\n\n") == b"51 No such page\r\n"


@pytest.mark.parametrize(("retry_after", "header"), [
    (b"Retry-After: 30\r\n", b"44 30\r\n"),
    (b"retry-after:  007 \r\nRetry-After: 9\r\n", b"44 7\r\n"),  # the first counts
    # An HTTP date, or none: the reason phrase, as for any other code.
    (b"Retry-After: Fri, 07 Nov 2036 23:59:59 GMT\r\n", b"44 Too Many Requests\r\n"),
    (b"", b"44 Too Many Requests\r\n"),
])
def test_cgi_status_429_becomes_44_with_the_seconds_retry_after_gives(retry_after, header):
    # Gemini's 44 (slow down) carries the seconds to wait as its META.
    assert header_of(b"Status: 429 Too Many Requests\r\n" + retry_after + b"\r\n") == header


def test_retry_after_on_other_codes_changes_nothing():
    assert header_of(b"Status: 503\r\nRetry-After: 5\r\n\r\n") == b"41 Service Unavailable\r\n"
    assert header_of(b"Content-Type: text/gemini\r\nRetry-After: 5\r\n\r\n") == b"20 text/gemini\r\n"


def test_a_reason_phrase_longer_than_a_meta_is_cut_to_fit_not_a_42():
    # The 404 was hidden behind "42 CGI error" ("META is 3000 bytes").
    assert header_of(b"Status: 404 " + b"r" * 3000 + b"\n\n") == b"51 " + b"r" * 1024 + b"\r\n"
    # Cut at a character's end: "\u00e9" is two bytes, the 1024th its first.
    assert header_of(b"Status: 404 r" + "\u00e9".encode() * 600 + b"\n\n") == (
        b"51 r" + "\u00e9".encode() * 511 + b"\r\n")


def test_cgi_status_404_without_reason_becomes_51_not_found():
    assert header_of(b"Status: 404\n\n") == b"51 Not Found\r\n"


def test_cgi_status_503_without_reason_becomes_41_service_unavailable():
    assert header_of(b"Status: 503\n\n") == b"41 Service Unavailable\r\n"


def test_cgi_status_unknown_to_http_without_reason_becomes_cgi_error():
    assert header_of(b"Status: 599\n\n") == b"42 CGI error\r\n"


def test_cgi_error_status_wins_over_location():
    assert header_of(b"Location: /x\nStatus: 500 Broken\n\n") == b"42 Broken\r\n"


def test_cgi_header_names_are_case_insensitive():
    assert (
        header_of(b"content-TYPE: text/plain\nSTATUS: 200\n\n") == b"20 text/plain\r\n"
    )


def test_cgi_values_are_trimmed_of_surrounding_whitespace():
    assert header_of(b"Content-Type:\t text/plain  \n\n") == b"20 text/plain\r\n"


def test_cgi_other_headers_are_ignored():
    stdout = (
        b"X-Powered-By: PHP\r\nSet-Cookie: a=b\r\nContent-Type: text/plain\r\n\r\nok"
    )
    assert decide(stdout) == ReplyHeader(20, "text/plain", b"20 text/plain\r\n", b"ok")


def test_cgi_mixed_line_endings_are_accepted():
    assert header_of(b"Status: 200\nContent-Type: a/b\r\n\nbody") == b"20 a/b\r\n"


def test_cgi_header_split_over_many_feeds_is_decided_at_the_empty_line():
    reply = b"Status: 200 OK\r\nContent-Type: text/gemini\r\n\r\nbody"
    reader = ReplyHeaderReader()
    end_of_header = reply.index(b"\r\n\r\n") + 3
    for byte in reply[:end_of_header]:
        assert reader.feed(bytes([byte])) is None
    assert reader.feed(reply[end_of_header:]) == ReplyHeader(
        20, "text/gemini", b"20 text/gemini\r\n", b"body"
    )


def test_cgi_header_block_longer_than_a_gemini_header_is_accepted():
    padding = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 100) for i in range(40))
    assert len(padding) > 1029
    assert (
        header_of(padding + b"Content-Type: text/plain\r\n\r\n") == b"20 text/plain\r\n"
    )


def test_cgi_header_block_over_8192_bytes_is_an_error():
    filler = b"X-Filler: " + b"f" * 200 + b"\n"
    assert (
        error_of(filler * 50 + b"Content-Type: a/b\n\n") == "CGI header over 8192 bytes"
    )


def test_cgi_line_without_colon_is_a_malformed_header():
    assert "malformed header" in error_of(b"Content-Type text/plain\n\n")


def test_cgi_malformed_line_is_reported_before_the_header_ends():
    reader = ReplyHeaderReader()
    decision = reader.feed(b"Hello world\n")
    assert isinstance(decision, ReplyError)
    assert "malformed header" in decision.message


def test_cgi_name_with_space_is_a_malformed_header():
    assert "malformed header" in error_of(b"Content Type: text/plain\n\n")


def test_cgi_continuation_line_is_a_malformed_header():
    assert "malformed header" in error_of(b"Content-Type: text/plain\n  more\n\n")


def test_cgi_duplicate_status_is_a_malformed_header():
    assert "twice" in error_of(b"Status: 200\nStatus: 404\nContent-Type: a/b\n\n")


@pytest.mark.parametrize("value", [b"abc", b"20", b"2000", b"404Not Found", b""])
def test_cgi_status_that_is_not_three_digits_is_an_error(value):
    assert "invalid Status" in error_of(
        b"Status: " + value + b"\nContent-Type: a/b\n\n"
    )


@pytest.mark.parametrize("value", [b"100", b"199", b"600", b"999"])
def test_cgi_status_outside_200_to_599_is_an_error(value):
    assert "unsupported CGI Status" in error_of(b"Status: " + value + b"\n\n")


def test_cgi_3xx_status_without_location_is_an_error():
    assert error_of(b"Status: 302 Found\n\n") == "CGI Status 302 without Location"


def test_cgi_2xx_status_without_content_type_is_an_error():
    assert error_of(b"Status: 200 OK\n\nbody") == "CGI Status 200 without Content-Type"


def test_cgi_location_with_2xx_status_is_not_a_redirect():
    assert (
        header_of(b"Status: 201\nLocation: /x\nContent-Type: a/b\n\n") == b"20 a/b\r\n"
    )


def test_cgi_header_without_any_known_field_is_an_error():
    assert "none of Status, Content-Type, Location" in error_of(b"X-Foo: bar\n\n")


def test_cgi_empty_header_block_is_an_error():
    assert "none of" in error_of(b"\r\nbody")


def test_cgi_empty_content_type_is_an_error():
    assert "empty Content-Type" in error_of(b"Content-Type:\n\n")


def test_cgi_value_that_is_not_utf8_is_an_error():
    assert "not UTF-8" in error_of(b"Content-Type: text/\xff\n\n")


def test_cgi_header_ended_by_eof_without_empty_line_is_incomplete():
    assert error_of(b"Content-Type: text/plain\n").startswith(
        "END or EOF before a complete header"
    )


def test_cgi_content_type_over_1024_bytes_is_an_error():
    assert "more than 1024" in error_of(b"Content-Type: a/" + b"b" * 1030 + b"\n\n")


# Properties ------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.tuples(
        st.sampled_from(
            [b"", b"20 ", b"51", b"5", b"Content-Type: a/b\n", b"Status: 4"]
        ),
        st.binary(max_size=3000),
    ).map(b"".join),
    st.lists(st.integers(min_value=1, max_value=200), max_size=20),
)
def test_random_bytes_never_raise_and_give_the_same_decision_in_any_fragmentation(
    data, sizes
):
    whole = decide(data)
    reader = ReplyHeaderReader()
    decision = None
    offset = 0
    for size in [*sizes, len(data)]:
        decision = reader.feed(data[offset : offset + size])
        offset += size
        if decision is not None:
            break
    if decision is None:
        decision = reader.end()
    if isinstance(decision, ReplyHeader):
        # The body given with the decision, then whatever was not fed yet.
        decision = ReplyHeader(
            decision.code, decision.meta, decision.header, decision.body + data[offset:]
        )
    assert decision == whole


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(DEFINED),
    st.text(
        alphabet=st.characters(blacklist_categories=["Cc", "Cs"]),
        min_size=1,
        max_size=200,
    ),
    st.binary(max_size=100),
)
def test_any_valid_gemini_header_is_relayed_unchanged_with_its_body(code, meta, body):
    assume(meta == meta.strip(" \t"))  # blanks around META are dropped (tests/gemini)
    reply = b"%d %s\r\n" % (code, meta.encode())
    decision = decide(reply + body)
    if meta.startswith("\ufeff"):
        assert isinstance(decision, ReplyError)
    elif 30 <= code <= 39 and (
        re.search(r'[ \t"<>\\^`{|}]|%(?![0-9A-Fa-f]{2})', meta) or meta.count("#") > 1
    ):
        # A redirect must name a URI reference: one with a character no URI
        # holds, a bare '%' or two fragments is refused (tests/gemini).
        assert isinstance(decision, ReplyError)
    elif 30 <= code <= 39 and ("[" in meta or "]" in meta):
        # Or with a bracket that urlsplit cannot take.
        assert isinstance(decision, (ReplyError, ReplyHeader))
    else:
        assert decision == ReplyHeader(code, meta, reply, body)
