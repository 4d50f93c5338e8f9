"""The request line parser: bytes in, a Request or a status out."""

import pytest
from hypothesis import given, settings, strategies as st

from gemfcgi.gemini import request as request_module
from gemfcgi.gemini.hosts import unicode_host
from gemfcgi.gemini.request import RequestError, logged_iri, parse_request_line, remove_dot_segments


def refusal(line: bytes) -> tuple[int, str]:
    """The status and META a request line is refused with."""
    with pytest.raises(RequestError) as refused:
        parse_request_line(line)
    return refused.value.code, refused.value.meta


def status_of(line: bytes) -> int:
    try:
        parse_request_line(line)
    except RequestError as error:
        return error.code
    return 20


def test_uri_of_1024_bytes_is_accepted():
    line = b"gemini://localhost/" + b"a" * (1024 - len(b"gemini://localhost/"))
    assert len(line) == 1024
    assert parse_request_line(line).path == "/" + "a" * (1024 - 19)


def test_uri_of_1025_bytes_gets_59():
    line = b"gemini://localhost/" + b"a" * (1025 - len(b"gemini://localhost/"))
    assert status_of(line) == 59


@pytest.mark.parametrize(
    "line",
    [
        b"gemini://localhost/\x00",
        b"gemini://localhost/\xff\xfe",
        b"",
        b"/",
        b"//localhost/",
        b"garbage",
        b"gemini:localhost",
        b"gemini://",
        b"gemini://localhost/ spaced",
        b"gemini://localhost/\t",
        b"gemini://localhost:99999/",
        b"gemini://localhost:12a/",
        b"gemini://[::1/",
    ],
)
def test_malformed_requests_get_59(line):
    assert status_of(line) == 59


def test_userinfo_gets_59():
    assert status_of(b"gemini://u@localhost/") == 59


def test_fragment_gets_59():
    assert status_of(b"gemini://localhost/page#x") == 59


@pytest.mark.parametrize("line", [b"https://localhost/", b"gopher://localhost/", b"mailto:x@y"])
def test_other_scheme_gets_53(line):
    assert status_of(line) == 53


def test_scheme_is_case_insensitive():
    assert parse_request_line(b"GEMINI://localhost/").scheme == "gemini"


def test_empty_path_and_slash_are_the_same_path():
    assert parse_request_line(b"gemini://localhost").path == "/"
    assert parse_request_line(b"gemini://localhost/").path == "/"


def test_host_is_lowercased_and_idn_aware():
    unicode_form = parse_request_line("gemini://Bücher.Example/".encode())
    punycode_form = parse_request_line(b"gemini://XN--bcher-kva.example/")
    assert unicode_form.host == punycode_form.host == "xn--bcher-kva.example"


def test_the_url_spelling_of_a_unicode_host_is_kept_for_server_name():
    # gmid's SERVER_NAME is the URL's host, lowercased and decoded, not converted.
    assert parse_request_line("gemini://Bücher.Example/".encode()).url_host == "bücher.example"
    assert parse_request_line(b"gemini://b%C3%BCcher.example/").url_host == "bücher.example"
    assert parse_request_line(b"gemini://XN--bcher-kva.example/").url_host is None
    assert parse_request_line(b"gemini://localhost/").url_host is None


@pytest.mark.parametrize("spelling, url_host", [
    ("ｌｏｃａｌｈｏｓｔ", "localhost"),
    ("ⓛⓞⓒⓐⓛⓗⓞⓢⓣ", "localhost"),
    ("bu\u0308cher.example", "bücher.example"),
    ("BÜCHER。example", "bücher.example"),
])
def test_server_name_has_the_unicode_form_the_host_was_matched_in(spelling, url_host):
    # The client's own spelling reached the application: full-width
    # letters, a decomposed ü, while the log and %N showed the host.
    assert parse_request_line(f"gemini://{spelling}/".encode()).url_host == url_host


@pytest.mark.parametrize("line, meta", [
    (b"gemini://localhost/dir\\index.gmi", "invalid character '\\' in path"),
    (b"gemini://localhost/a?b<c", "invalid character '<' in query"),
    (b"gemini://localhost/a{b", "invalid character '{' in path"),
])
def test_a_character_no_url_holds_is_named_as_sent(line, meta):
    # Python's repr doubled a backslash: '\\' for the one sent.
    assert refusal(line) == (59, meta)


@pytest.mark.parametrize("host", ["localhost。", "localhost．", "bücher.example。", "localhost｡"])
def test_a_trailing_dot_idna_reads_as_a_dot_is_the_roots_as_an_ascii_one(host):
    # Only an ASCII dot was taken off: these got 53 where "localhost." got 20.
    expected = "localhost" if host.startswith("localhost") else "xn--bcher-kva.example"
    assert parse_request_line(f"gemini://{host}/".encode()).host == expected


@pytest.mark.parametrize("host", ["127.0.0.1.", "127.0.0.1。", "127.0.0.1．"])
def test_an_address_with_a_trailing_dot_of_any_kind_is_that_address(host):
    # "127.0.0.1." was served and "127.0.0.1。" got 59.
    assert parse_request_line(f"gemini://{host}/".encode()).host == "127.0.0.1"


@pytest.mark.parametrize("host", [
    "%3A%3A1", "%5B%3A%3A1%5D", "127%2E0.0.1", "127%2e0%2e0%2e1", "１２７．０．０．１", "①②⑦.0.0.1",
])
def test_an_address_written_other_than_as_a_literal_is_a_malformed_host(host):
    # The README: an escaped host that decodes to an address gets 59; an
    # IPv4 one, or one in digits IDNA maps, was served.
    assert refusal(f"gemini://{host}/".encode()) == (59, "malformed host")


@pytest.mark.parametrize("spelling", ["♨", "%E2%99%A8", "xn--j6h", "♨.Example", "\u2668.example"])
def test_a_symbol_label_idna2008_refuses_is_still_punycode_as_gmid_reads_it(spelling):
    host = parse_request_line(f"gemini://{spelling}/".encode()).host
    assert host in ("xn--j6h", "xn--j6h.example")
    assert unicode_host(host) in ("♨", "♨.example")


def test_a_percent_escaped_host_is_decoded_like_gmid_and_then_checked_as_any_host():
    escaped = parse_request_line(b"gemini://b%C3%BCcher.Example/")
    assert escaped.host == "xn--bcher-kva.example"
    assert parse_request_line(b"gemini://local%68ost/").host == "localhost"
    assert escaped.url == "gemini://b%C3%BCcher.Example/"


@pytest.mark.parametrize(
    "line, meta",
    [
        (b"gemini://a%2Fb/", "malformed host"),
        (b"gemini://a%40b/", "malformed host"),
        (b"gemini://a%00b/", "malformed host"),
        (b"gemini://a%zz/", "invalid percent-escape in host"),
        (b"gemini://a%C3/", "host is not valid UTF-8"),
        # An IP literal is written in brackets, not escaped into a name.
        (b"gemini://%5B%3A%3A1%5D/", "malformed host"),
        (b"gemini://%3A%3A1/", "malformed host"),
    ],
)
def test_a_host_whose_escapes_hide_something_else_gets_59(line, meta):
    assert refusal(line) == (59, meta)


@pytest.mark.parametrize(
    "line, meta",
    [
        ("gemini://localhost/a\u009b31m", "space or control character in request"),
        ("gemini://localhost/a%C2%9B31m", "control character in path"),
        ("gemini://localhost/?q\u0085", "space or control character in request"),
        ("gemini://..../", "malformed host"),
        ("gemini://./x", "malformed host"),
        ("gemini://localhost../", "malformed host"),
        ("gemini://a..example/", "malformed host"),
        ("gemini://.example/", "malformed host"),
        # A-labels that stand for no name (RFC 5890 2.3.2.1): U+0080, nothing,
        # plain ASCII, an invalid encoding.
        ("gemini://xn--a.example/", "malformed host"),
        ("gemini://xn--.example/", "malformed host"),
        ("gemini://xn--abc-.example/", "malformed host"),
        ("gemini://xn--99999999999.example/", "malformed host"),
        # Beside a Unicode label too (the fallback for symbols took it as it was).
        ("gemini://bücher.xn--a/", "malformed host"),
        ("gemini://♨.xn--a/", "malformed host"),
        # An IPv6 zone names an interface of the client's, and may hold anything.
        ('gemini://[::1%"x]/', "malformed host"),
        ("gemini://[fe80::1%25eth0]/", "malformed host"),
    ],
)
def test_c1_controls_and_a_host_of_dots_or_empty_labels_get_59(line, meta):
    assert refusal(line.encode("utf-8")) == (59, meta)


@pytest.mark.parametrize("host", ['x"_"forged', "a<b", "a>b", "a{b", "a}b", "a|b", "a^b", "a`b", "a%22b"])
def test_a_host_with_a_character_no_host_may_hold_gets_59(host):
    # A '"' in the host closed the quoted URL of the common and combined logs.
    assert refusal(f"gemini://{host}/".encode()) == (59, "malformed host")


def test_a_host_with_the_sub_delimiters_rfc_3986_allows_is_a_host():
    assert parse_request_line(b"gemini://a!$&'()*+,;=b/").host == "a!$&'()*+,;=b"


def test_ipv6_literal_host_is_accepted():
    request = parse_request_line(b"gemini://[::1]:1965/")
    assert (request.host, request.port) == ("::1", 1965)


def test_port_is_kept_when_given_and_none_otherwise():
    assert parse_request_line(b"gemini://localhost:1966/").port == 1966
    assert parse_request_line(b"gemini://localhost/").port is None


def test_a_port_with_leading_zeros_is_the_same_port():
    assert parse_request_line(b"gemini://localhost:01965/").port == 1965
    assert parse_request_line(b"gemini://localhost:0000065535/").port == 65535
    assert status_of(b"gemini://localhost:0065536/") == 59


@pytest.mark.parametrize(
    "line, path",
    [
        (b"gemini://h/../../etc/passwd", "/etc/passwd"),
        (b"gemini://h/a/%2e%2e/%2E%2E/etc/passwd", "/etc/passwd"),
        (b"gemini://h/a/..%2f..%2fetc%2fpasswd", "/etc/passwd"),
        (b"gemini://h/a/./b/../c", "/a/c"),
        (b"gemini://h//a//b", "/a/b"),
        (b"gemini://h/dir/.", "/dir/"),
        (b"gemini://h/%C3%BC", "/\u00fc"),
    ],
)
def test_percent_decoding_and_dot_segments_happen_before_routing(line, path):
    assert parse_request_line(line).path == path


@pytest.mark.parametrize(
    "line",
    [
        b"gemini://h/%00",
        b"gemini://h/%0d%0aX",
        b"gemini://h/%c0%ae%c0%ae/",
        b"gemini://h/%zz",
        b"gemini://h/%4",
    ],
)
def test_nul_controls_bad_escapes_and_overlong_utf8_get_59(line):
    assert status_of(line) == 59


def test_query_is_kept_raw():
    request = parse_request_line(b"gemini://h/search?hello%20world+x")
    assert request.query == "hello%20world+x"


def test_empty_query_is_not_no_query():
    assert parse_request_line(b"gemini://h/?").query == ""
    assert parse_request_line(b"gemini://h/").query is None


def test_remove_dot_segments_never_climbs_above_root():
    assert remove_dot_segments("/../../..") == "/"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1100))
def test_parser_raises_only_its_own_error_on_any_bytes(line):
    try:
        request = parse_request_line(line)
    except RequestError as error:
        assert error.code in (53, 59)
    else:
        assert request.path.startswith("/")
        assert "/../" not in request.path + "/" and "/./" not in request.path + "/"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parser_raises_only_its_own_error_on_any_gemini_url(rest):
    line = ("gemini://localhost/" + rest).encode("utf-8")
    try:
        request = parse_request_line(line)
    except RequestError as error:
        assert error.code == 59
    else:
        assert request.path.startswith("/") and "\x00" not in request.path


def _outcome(parse, line):
    try:
        return parse(line)
    except RequestError as error:
        return (error.code, error.meta)


_URL_TEXT = st.text(alphabet="aZ09.-_~/%2e?:@[]#é! ;", max_size=30)


@settings(max_examples=1000, deadline=None)
@given(
    scheme=st.sampled_from(["gemini", "GEMINI", "Gemini", "http", ""]),
    host=st.text(alphabet="aZz09.-_:@[]é", max_size=12),
    port=st.one_of(st.none(), st.text(alphabet="0123456789:", max_size=7)),
    path=_URL_TEXT,
    query=st.one_of(st.none(), _URL_TEXT),
)
def test_the_common_form_is_parsed_as_the_general_parser_parses_it(scheme, host, port, path, query):
    """The fast match for plain URLs must agree with the full parser on every line, good or bad."""
    line = f"{scheme}://{host}" + (f":{port}" if port is not None else "") + path
    line += f"?{query}" if query is not None else ""
    raw = line.encode("utf-8")
    assert _outcome(parse_request_line, raw) == _outcome(request_module._parse_general, raw)


@pytest.mark.parametrize(
    "line",
    [
        b"gemini://localhost/",
        b"gemini://localhost",
        b"gemini://localhost:1965/a/b/?q=1",
        b"gemini://localhost/a//b/./c/../d/",
        b"gemini://localhost/.well-known/x",
        b"gemini://localhost?only-a-query",
        b"gemini://localhost:99999/",
        b"gemini://-bad-.example/",
        b"gemini://localhost:01965/",
    ],
)
def test_the_common_form_agrees_with_the_general_parser_on_its_edges(line):
    assert _outcome(parse_request_line, line) == _outcome(request_module._parse_general, line)


@pytest.mark.parametrize(
    "line, logged",
    [
        (b"gemini://LocalHost:1965/%64ir/./x/../page.gmi", "gemini://localhost/dir/page.gmi"),
        (b"gemini://example.org", "gemini://example.org/"),
        (b"gemini://[::1]:1965/a%20b%22c?q%20x", "gemini://[::1]/a%20b%22c?q%20x"),
        (b"gemini://b%C3%BCcher.example/caf%C3%A9?", "gemini://xn--bcher-kva.example/café?"),
        # A path's own ? and # stay escaped, so that they do not read as a query or a fragment.
        (b"gemini://localhost/a%3Fb%23c?q", "gemini://localhost/a%3Fb%23c?q"),
        # So does a path's own %: a file named "a%20b" is not "a b" (both
        # were logged as a%20b).
        (b"gemini://localhost/a%2520b", "gemini://localhost/a%2520b"),
        (b"gemini://localhost/a%20b", "gemini://localhost/a%20b"),
        (b"gemini://localhost/100%25", "gemini://localhost/100%25"),
    ],
)
def test_the_log_names_a_request_as_gmid_rebuilds_it(line, logged):
    assert logged_iri(parse_request_line(line), 1965) == logged


@pytest.mark.parametrize(
    "line, listener, logged",
    [
        (b"gemini://localhost:23001/x", 23001, "gemini://localhost/x"),
        (b"gemini://localhost:01965/", 1965, "gemini://localhost/"),
        (b"gemini://localhost:1966/x", 1965, "gemini://localhost:1966/x"),
        (b"gemini://[::1]/x", 23001, "gemini://[::1]:1965/x"),
        (b"gemini://localhost:1966/x", None, "gemini://localhost/x"),
    ],
)
def test_the_log_names_the_port_only_where_it_is_not_the_listeners(line, listener, logged):
    # gmid leaves the port out; a port other than the listener's gets 53,
    # and the line shows it.
    assert logged_iri(parse_request_line(line), listener) == logged


def test_a_long_unknown_scheme_is_refused_with_a_meta_that_fits():
    with pytest.raises(RequestError) as refused:
        parse_request_line(b"a" * 1004 + b":")
    assert refused.value.code == 53
    assert refused.value.meta == f"scheme {'a' * 64}... is not served"


def test_one_trailing_dot_is_the_same_host():
    assert parse_request_line(b"gemini://Example.ORG./x").host == "example.org"


@pytest.mark.parametrize("host", [
    "xn--mgbn2ecje63gr19l.example",  # Persian, with a zero-width non-joiner
    "xn--10cl1a0b660p.example",  # Sinhala, with a zero-width joiner
    "xn--929h.example",  # U+1FAE8: newer than this Python's Unicode tables
    "xn--bcher-kva.example",
    "xn--j6h",  # a symbol, which only plain punycode encodes
])
def test_a_labels_of_real_names_are_hosts(host):
    # A-labels are checked to stand for a name, but the joiners IDNA2008
    # allows in some scripts are format characters, not printable ones.
    assert parse_request_line(f"gemini://{host}/".encode()).host == host
