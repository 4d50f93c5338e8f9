"""The one place a response header is built."""

import pytest

from gemfcgi.gemini.status import DEFINED_CODES, InvalidHeader, response_header


def test_header_is_code_space_meta_crlf():
    assert response_header(20, "text/gemini") == b"20 text/gemini\r\n"


@pytest.mark.parametrize("code, meta", [
    (40, "temporary failure"), (41, "server unavailable"), (42, "CGI error"), (43, "proxy error"),
    (44, "slow down"), (50, "permanent failure"), (51, "not found"), (52, "gone"),
    (53, "proxy request refused"), (59, "bad request"), (60, "client certificate required"),
    (61, "certificate not authorised"), (62, "certificate not valid"),
    # Codes the specification does not name: their class's.
    (45, "temporary failure"), (57, "permanent failure"), (69, "client certificate required"),
])
def test_a_failure_without_meta_is_sent_with_its_codes_name(code, meta):
    # gemcall, Agunua, AV-98 and amfora all fail on a header without one.
    assert response_header(code) == f"{code} {meta}\r\n".encode()


@pytest.mark.parametrize("code", [10, 11, 19, 30, 31, 39])
def test_meta_is_required_for_1x_and_3x(code):
    with pytest.raises(InvalidHeader):
        response_header(code, "")


@pytest.mark.parametrize("code", [20, 21, 29])
def test_an_empty_2x_meta_is_sent_as_the_mime_type_it_means(code):
    assert response_header(code, "") == b"%d text/gemini; charset=utf-8\r\n" % code


@pytest.mark.parametrize("code", sorted(set(range(10, 70)) - DEFINED_CODES))
def test_a_code_from_10_to_69_the_spec_does_not_name_is_sent(code):
    # Clients act on the first digit, and gmid relays these as they are.
    assert response_header(code, "x") == b"%d x\r\n" % code


@pytest.mark.parametrize("code", [-1, 0, 1, 5, 9, 70, 99, 100, 420])
def test_codes_outside_10_to_69_are_never_sent(code):
    with pytest.raises(InvalidHeader):
        response_header(code, "x")


def test_meta_of_1024_bytes_is_allowed_and_1025_is_not():
    assert response_header(20, "a" * 1024).endswith(b"a\r\n")
    with pytest.raises(InvalidHeader):
        response_header(20, "a" * 1025)


def test_meta_length_counts_utf8_bytes():
    with pytest.raises(InvalidHeader):
        response_header(20, "é" * 513)


def test_meta_with_line_break_or_bom_is_refused():
    with pytest.raises(InvalidHeader):
        response_header(20, "text/gemini\r\n20 x")
    with pytest.raises(InvalidHeader):
        response_header(20, "\ufefftext/gemini")


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\x07", "\x7f", "\x0b", "\x85", "\x9b"])
def test_meta_with_a_control_character_is_refused(control):
    with pytest.raises(InvalidHeader, match="control character"):
        response_header(51, f"not here{control}[2J")


def test_meta_with_a_tab_or_any_printable_character_passes():
    assert response_header(10, "Name:\tfirst, last") == "10 Name:\tfirst, last\r\n".encode()
    assert response_header(20, "text/gemini; lang=ελ") == "20 text/gemini; lang=ελ\r\n".encode()


@pytest.mark.parametrize("blanks", [" ", "  ", "\t", " \t "])
def test_a_meta_of_blanks_alone_is_no_meta(blanks):
    # gemcall raised "Received malformed header" on a relayed "51  ".
    assert response_header(20, blanks) == b"20 text/gemini; charset=utf-8\r\n"
    assert response_header(51, blanks) == b"51 not found\r\n"
    for code in (10, 30, 31):
        with pytest.raises(InvalidHeader, match="requires a META"):
            response_header(code, blanks)


def test_blanks_around_a_meta_are_not_sent():
    assert response_header(20, " text/gemini ") == b"20 text/gemini\r\n"
    assert response_header(30, "\t/elsewhere ") == b"30 /elsewhere\r\n"
