"""``server "glob" { ... }`` (gmid.md §1.3)."""

from __future__ import annotations

import pytest

from gemfcgi.config.model import FastCGI, Listen, LocationOptions, Origin


def test_listen_on_every_address_with_a_port(parse, server_with):
    assert parse(server_with("")).servers[0].listens == [
        Listen("*", 1965, False, Origin("gmid.conf", 2))
    ]


@pytest.mark.parametrize(
    "line, listen",
    [
        ('listen on "*" port 1966', Listen("*", 1966)),
        ("listen on 127.0.0.1 port 1965", Listen("127.0.0.1", 1965)),
        ('listen on "::1" port 1965 proxy-v1', Listen("::1", 1965, True)),
        ("listen on ::1", Listen("::1", 1965)),
        ('listen on localhost port "gemini"', Listen("localhost", "gemini")),
        ("listen on * port 0", Listen("*", 0)),
    ],
)
def test_listen_on_forms(parse, line, listen):
    text = f'server "a" {{\n\t{line}\n\tcert "/c"\n\tkey "/k"\n}}\n'
    listen.origin = Origin("gmid.conf", 2)
    assert parse(text).servers[0].listens == [listen]


def test_several_listen_on_are_kept_in_order(parse, server_with):
    listens = parse(server_with("listen on 10.0.0.1 port 1966 proxy-v1")).servers[0].listens
    assert [(l.address, l.port, l.proxy_v1) for l in listens] == [
        ("*", 1965, False),
        ("10.0.0.1", 1966, True),
    ]


def test_listen_needs_on(errors_of, server_with):
    assert errors_of(server_with("listen * port 1965")) == [
        "gmid.conf:5: expected 'on' after 'listen', found '*' (write: listen on * port 1965)"
    ]


@pytest.mark.parametrize("address, written", [("*", "*"), ("127.0.0.1", "127.0.0.1"),
                                               ('"::1"', "::1")])
def test_tls_in_listen_on_as_httpd_writes_it_says_every_listener_is_tls(
    errors_of, server_with, address, written
):
    # It read as an unknown directive 'tls', or, after an address, as part
    # of it ("cannot resolve 127.0.0.1tls").
    assert errors_of(server_with(f"listen on {address} tls port 1966")) == [
        f"gmid.conf:5: 'tls' in 'listen on': every listener speaks TLS here, as in gmid; write: "
        f"listen on {written} port 1966"
    ]
    assert errors_of(server_with(f"listen on {address} tls"))[0].endswith(f"listen on {written} port 1965")
    assert errors_of(server_with(f"listen on {address} tls port 1966 proxy-v1"))[0].endswith(
        f"listen on {written} port 1966 proxy-v1")


def test_listen_port_out_of_range_is_an_error(errors_of, server_with):
    assert errors_of(server_with("listen on * port 65536")) == [
        "gmid.conf:5: invalid port number 65536 (use 0 to 65535, or a service name in quotes)"
    ]


def test_a_quoted_port_number_is_the_number_and_a_name_stays_a_service(parse, server_with):
    text = 'p = "1966"\n' + server_with('listen on * port $p\n\tlisten on * port "gemini"')
    listens = parse(text).servers[0].listens
    assert [l.port for l in listens] == [1965, 1966, "gemini"]


def test_a_quoted_port_out_of_range_is_an_error(errors_of, server_with):
    assert errors_of(server_with('listen on * port "70000"')) == [
        "gmid.conf:5: invalid port number 70000 (use 0 to 65535, or a service name in quotes)"
    ]


def test_listens_on_one_address_must_agree_on_proxy_v1(errors_of):
    text = (
        'server "a" {\n\tlisten on * port 1965\n\tcert "/c"; key "/k"\n}\n'
        'server "b" {\n\tlisten on * port 1965 proxy-v1\n\tcert "/c"; key "/k"\n}\n'
    )
    assert errors_of(text) == [
        "gmid.conf:6: listen on * port 1965: a PROXY header (proxy-v1 or proxy-v2) is read here but "
        "not at gmid.conf:2; every listen on the same address and port must agree"
    ]


def test_server_without_listen_gets_a_warning_and_the_default(parse, warnings_of):
    text = 'server "a" {\n\tcert "/c"\n\tkey "/k"\n}\n'
    assert parse(text).servers[0].listens == [Listen("*", 1965, False, Origin("gmid.conf", 1))]
    assert warnings_of(text) == [
        "gmid.conf:1: server \"a\" has no 'listen on'; listening on * port 1965 "
        "(add: listen on * port 1965)"
    ]


def test_alias_may_be_repeated(parse, server_with):
    server = parse(server_with('alias "www.example.com"\n\talias "*.example.org"')).servers[0]
    assert server.aliases == ["www.example.com", "*.example.org"]


def test_cert_key_and_ocsp(parse, server_with):
    server = parse(server_with('ocsp "/etc/ssl/ocsp.der"')).servers[0]
    assert (server.cert, server.key, server.ocsp) == (
        "/etc/ssl/c.pem",
        "/etc/ssl/k.pem",
        "/etc/ssl/ocsp.der",
    )


@pytest.mark.parametrize("directive, line", [("cert", 3), ("key", 4), ("ocsp", 5)])
def test_cert_key_and_ocsp_must_be_absolute_paths(errors_of, server_with, directive, line):
    text = server_with('ocsp "/etc/ssl/x.pem"').replace(f'{directive} "/etc/ssl/', f'{directive} "ssl/')
    assert errors_of(text) == [
        f'gmid.conf:{line}: {directive} "ssl/{"x" if directive == "ocsp" else directive[0]}.pem": '
        f"not an absolute path ({directive} is read before chroot; write the full path, "
        "starting with '/')"
    ]


def test_server_without_cert_is_an_error(errors_of):
    assert errors_of('\nserver "a" {\n\tlisten on *\n\tkey "/k"\n}\n') == [
        'gmid.conf:2: server "a": missing cert (add: cert "/path/to/cert.pem")'
    ]


def test_server_without_key_is_an_error(errors_of):
    assert errors_of('server "a" {\n\tlisten on *\n\tcert "/c"\n}\n') == [
        'gmid.conf:1: server "a": missing key (add: key "/path/to/key.pem")'
    ]


def test_location_options_at_server_level_are_the_default(parse, server_with):
    body = 'root "/srv"\n\tlang "en"\n\tindex "home.gmi"\n\tauto index on\n\tlog off\n\tstrip 1'
    assert parse(server_with(body)).servers[0].options == LocationOptions(
        auto_index=True, index="home.gmi", lang="en", log=False, root="/srv", strip=1
    )


def test_server_level_param_is_deprecated_and_joins_the_server_fastcgi(
    parse, warnings_of, server_with
):
    text = server_with('param SCRIPT_NAME = "/app"\n\tfastcgi socket "/run/app.sock"')
    fastcgi = parse(text).servers[0].options.fastcgi
    assert fastcgi.params == [("SCRIPT_NAME", "/app")]
    assert fastcgi.address.path == "/run/app.sock"
    assert warnings_of(text) == [
        "gmid.conf:5: 'param' at server level is deprecated; "
        "write 'fastcgi param SCRIPT_NAME = \"...\"'"
    ]


def test_server_level_param_alone_makes_a_fastcgi_without_address(parse, server_with):
    assert parse(server_with('param A = "b"')).servers[0].options.fastcgi == FastCGI(
        params=[("A", "b")], origin=Origin("gmid.conf", 5)
    )


def test_servers_keep_file_order_and_origins(parse):
    text = (
        'server "one" {\n\tlisten on *\n\tcert "/c"; key "/k"\n}\n\n'
        'server "two" {\n\tlisten on *\n\tcert "/c"; key "/k"\n}\n'
    )
    servers = parse(text).servers
    assert [(s.name, s.origin) for s in servers] == [
        ("one", Origin("gmid.conf", 1)),
        ("two", Origin("gmid.conf", 6)),
    ]


def test_opening_brace_may_be_on_the_next_line(parse):
    text = 'server "a"\n{\n\tlisten on *\n\tcert "/c"; key "/k"\n}\n'
    assert parse(text).servers[0].name == "a"


def test_server_needs_a_name(errors_of):
    assert errors_of('server {\n\tcert "/c"\n}\nprefork 99\n') == [
        "gmid.conf:1: expected a string after 'server', found '{'",
        "gmid.conf:4: invalid prefork number 99 (use 1 to 15)",
    ]


def test_unclosed_server_is_an_error_at_its_line(errors_of):
    assert errors_of('prefork 2\nserver "a" {\n\tcert "/c"; key "/k"\n') == [
        "gmid.conf:2: server \"a\" is never closed: add a '}' at its end"
    ]


def test_a_block_left_open_inside_one_is_named_beside_the_one_that_looks_unclosed(errors_of):
    text = 'server "a" {\n\tcert "/c"; key "/k"\n\tlocation "/x/*" {\n\t\tlang "en"\n}\n'
    assert errors_of(text) == [
        "gmid.conf:1: server \"a\" is never closed: add a '}' at its end (or else "
        "location \"/x/*\", opened at line 3, lacks its own: the '}' at line 5 closed it)"
    ]


def test_punycode_server_name_is_a_warning(warnings_of, server_with):
    text = server_with("").replace('"example.com"', '"xn--caf-dma.example"')
    assert warnings_of(text) == [
        'gmid.conf:1: "xn--caf-dma.example" looks like punycode: write the decoded name '
        '("café.example"), names are matched after decoding'
    ]


def test_a_punycode_name_in_capitals_is_decoded_for_the_warning(warnings_of, server_with):
    # The hint named the same string: 'write the decoded name ("Xn--Caf-Dma.example")'.
    text = server_with("").replace('"example.com"', '"Xn--Caf-Dma.example"')
    assert warnings_of(text) == [
        'gmid.conf:1: "Xn--Caf-Dma.example" looks like punycode: write the decoded name '
        '("café.example"), names are matched after decoding'
    ]


def test_unknown_directive_is_an_error_with_its_line(errors_of, server_with):
    assert errors_of(server_with("frobnicate on")) == [
        "gmid.conf:5: unknown directive 'frobnicate'"
    ]


def test_unknown_directive_suggests_a_close_one(errors_of, server_with):
    assert errors_of(server_with('lnag "en"')) == [
        "gmid.conf:5: unknown directive 'lnag' (did you mean 'lang'?)"
    ]


def test_directives_are_lower_case(errors_of, server_with):
    assert errors_of(server_with('Root "/x"')) == [
        "gmid.conf:5: unknown directive 'Root' (directives are lower case: 'root')"
    ]


@pytest.mark.parametrize(
    "directive, message",
    [
        ('server "b" {', "server blocks cannot be nested: close the previous server with '}'"),
        ("prefork 2", "'prefork' is a global option: move it outside the server block"),
        ("types { }", "'types' is a global option: move it outside the server block"),
        (
            'log { access "/x" }',
            "'log { }' is a global setting: move it outside the server block "
            "(inside a server, write 'log on' or 'log off')",
        ),
    ],
)
def test_global_directives_inside_a_server_are_errors(errors_of, server_with, directive, message):
    assert errors_of(server_with(directive))[0] == f"gmid.conf:5: {message}"


def test_extra_words_after_a_top_level_directive_are_an_error(errors_of):
    assert errors_of("prefork 2 3\n") == [
        "gmid.conf:1: unexpected number 3 after 'prefork'; end the statement with a newline or ';'"
    ]


def test_extra_words_after_a_directive_in_a_block_are_an_error(errors_of, server_with):
    assert errors_of(server_with('lang "en" 12')) == ["gmid.conf:5: expected a directive, found number 12"]


def test_in_a_block_directives_may_follow_each_other_on_one_line(parse, server_with):
    # As gmid's regress suite writes them.
    server = parse(server_with(
        'lang it location "/en/*" {lang en} location "/de/*" {lang de}\n'
        '\tlocation "/dir/*" { default type "text/plain" index "hello" }\n'
        '\tlocation "/foo/*" { root "/srv/testdata" strip 1 }'
    )).servers[0]
    assert server.options.lang == "it"
    assert [(l.pattern, l.options.lang) for l in server.locations[:2]] == [("/en/*", "en"), ("/de/*", "de")]
    assert (server.locations[2].options.default_type, server.locations[2].options.index) == (
        "text/plain", "hello"
    )
    assert (server.locations[3].options.root, server.locations[3].options.strip) == ("/srv/testdata", 1)


def test_a_warning_about_an_alias_names_the_alias_line(tmp_path):
    # Both said the server's line (1), whatever line each alias was on.
    from gemfcgi.check import check_config
    from gemfcgi.config import parse_config

    text = ('server "localhost" {\n\tlisten on 127.0.0.1 port 1965\n\tcert "/c.pem"\n\tkey "/k.pem"\n'
            '\talias "ok.example"\n\talias "a b"\n\talias "[x"\n}\n')
    config, _ = parse_config(text, "gmid.conf")
    said = [str(w) for w in check_config(config)[1] if "alias" in str(w)]
    assert [line.split(":")[1] for line in said] == ["6", "7"], said
