"""``fastcgi`` in every form (gmid.md §1.5) plus gemfcgi's ``spawn`` and ``endpoint``."""

from __future__ import annotations

import pytest

from gemfcgi.config.model import (
    FastCGI,
    FastCGIEndpoint,
    FastCGISocket,
    FastCGISpawn,
    FastCGITCP,
    Origin,
)


def fastcgi_of(parse, server_with, body: str) -> FastCGI:
    return parse(server_with(f'location "/app/*" {{\n\t\t{body}\n\t}}')).servers[0].locations[0].options.fastcgi


LINE6 = Origin("gmid.conf", 6)


@pytest.mark.parametrize(
    "body, address",
    [
        ('fastcgi socket "/run/app.sock"', FastCGISocket("/run/app.sock")),
        ('fastcgi socket tcp "127.0.0.1"', FastCGITCP("127.0.0.1", 9000)),
        ("fastcgi socket tcp localhost port 9001", FastCGITCP("localhost", 9001)),
        ('fastcgi socket tcp "::1" port "fcgi"', FastCGITCP("::1", "fcgi")),
        ('fastcgi spawn "/usr/bin/python3 app.py --workers 2"', FastCGISpawn("/usr/bin/python3 app.py --workers 2")),
        ('fastcgi endpoint "tcp:host=127.0.0.1:port=9000"', FastCGIEndpoint("tcp:host=127.0.0.1:port=9000")),
    ],
)
def test_fastcgi_address_forms(parse, server_with, body, address):
    assert fastcgi_of(parse, server_with, body) == FastCGI(address=address, origin=LINE6)


def test_fastcgi_block_form(parse, server_with):
    body = (
        'fastcgi {\n\t\t\tsocket "/run/slowcgi.sock"\n'
        '\t\t\tparam SCRIPT_NAME = "/cgi-bin/hello"; param "A B" = \'c\'\n'
        "\t\t\tstrip 1\n\t\t}"
    )
    assert fastcgi_of(parse, server_with, body) == FastCGI(
        address=FastCGISocket("/run/slowcgi.sock"),
        params=[("SCRIPT_NAME", "/cgi-bin/hello"), ("A B", "c")],
        strip=1,
        origin=Origin("gmid.conf", 7),
    )


def test_fastcgi_block_on_one_line(parse, server_with):
    body = 'fastcgi { socket tcp "10.0.0.2" port 9001; param A = "b"; strip 2 }'
    assert fastcgi_of(parse, server_with, body) == FastCGI(
        address=FastCGITCP("10.0.0.2", 9001), params=[("A", "b")], strip=2, origin=LINE6
    )


@pytest.mark.parametrize(
    "inner, address",
    [
        ('spawn "./app"', FastCGISpawn("./app")),
        ('endpoint "unix:/run/a.sock"', FastCGIEndpoint("unix:/run/a.sock")),
    ],
)
def test_spawn_and_endpoint_inside_the_block(parse, server_with, inner, address):
    assert fastcgi_of(parse, server_with, f"fastcgi {{ {inner} }}").address == address


def test_single_option_param_and_strip(parse, server_with):
    body = 'fastcgi param APP_ENV = "production"\n\t\tfastcgi strip 0'
    assert fastcgi_of(parse, server_with, body) == FastCGI(
        params=[("APP_ENV", "production")], strip=0, origin=LINE6
    )


def test_fastcgi_off(parse, server_with):
    assert fastcgi_of(parse, server_with, "fastcgi off") == FastCGI(off=True, origin=LINE6)


def test_deprecated_fastcgi_path_is_a_socket_with_a_warning(parse, warnings_of, server_with):
    body = 'location "/app/*" {\n\t\tfastcgi "/run/old.sock"\n\t}'
    assert fastcgi_of(parse, server_with, 'fastcgi "/run/old.sock"').address == FastCGISocket(
        "/run/old.sock"
    )
    assert warnings_of(server_with(body)) == [
        'gmid.conf:6: \'fastcgi "/run/old.sock"\' is deprecated; write \'fastcgi socket "/run/old.sock"\''
    ]


@pytest.mark.parametrize("written, instead", [
    ("unix:/run/app.sock", 'fastcgi socket "/run/app.sock", or '),
    ("unix:path=/run/app.sock:timeout=3", 'fastcgi socket "/run/app.sock", or '),
    ("unix:", ""),
    ("tcp:127.0.0.1:9000", 'fastcgi socket tcp "HOST" port N, or '),
])
def test_an_endpoint_string_written_as_a_socket_path_is_warned_of(warnings_of, server_with, written, instead):
    # Read as a path, "unix:/run/app.sock" named a directory "unix:" beside
    # the file: every request got 42, and the check said nothing.
    body = f'location "/app/*" {{\n\t\tfastcgi socket "{written}"\n\t}}'
    assert warnings_of(server_with(body)) == [
        f'gmid.conf:6: socket "{written}" is read as a path: write {instead}the string as '
        f'fastcgi endpoint "{written}"'
    ]


def test_quoted_spawn_is_the_deprecated_path_form(parse, server_with):
    assert fastcgi_of(parse, server_with, 'fastcgi "spawn"').address == FastCGISocket("spawn")


def test_several_fastcgi_directives_merge_and_the_last_address_wins(parse, server_with):
    body = (
        'fastcgi socket "/run/a.sock"\n\t\tfastcgi param A = "1"\n'
        '\t\tfastcgi { param B = "2"; strip 1 }\n\t\tfastcgi socket tcp "h" port 1'
    )
    assert fastcgi_of(parse, server_with, body) == FastCGI(
        address=FastCGITCP("h", 1),
        params=[("A", "1"), ("B", "2")],
        strip=1,
        origin=Origin("gmid.conf", 9),
    )


def test_a_later_address_undoes_fastcgi_off(parse, server_with):
    fastcgi = fastcgi_of(parse, server_with, 'fastcgi off\n\t\tfastcgi socket "/s"')
    assert (fastcgi.off, fastcgi.address) == (False, FastCGISocket("/s"))


def test_fastcgi_at_server_level(parse, server_with):
    options = parse(server_with('fastcgi socket "/run/app.sock"')).servers[0].options
    assert options.fastcgi == FastCGI(FastCGISocket("/run/app.sock"), origin=Origin("gmid.conf", 5))


def test_param_of_510_bytes_is_accepted_and_511_is_an_error(parse, errors_of, server_with):
    ok = "é" * 255  # 510 bytes
    assert fastcgi_of(parse, server_with, f'fastcgi param {"N" * 510} = "{ok}"').params == [
        ("N" * 510, ok)
    ]
    assert errors_of(server_with(f'fastcgi param {"N" * 511} = "{ok}x"')) == [
        "gmid.conf:5: fastcgi param name is too long (511 bytes, at most 510)",
        "gmid.conf:5: fastcgi param value is too long (511 bytes, at most 510)",
    ]


def test_param_needs_an_equals_sign(errors_of, server_with):
    assert errors_of(server_with("fastcgi param A")) == [
        "gmid.conf:5: expected '=' after param A, found end of line (write: param A = \"value\")"
    ]


def test_param_name_and_value_are_joined_like_any_string(parse, server_with):
    body = 'fastcgi param A "B" = "x" y'
    assert fastcgi_of(parse, server_with, body).params == [("AB", "xy")]


def test_negative_fastcgi_strip_is_an_error(errors_of, server_with):
    assert errors_of(server_with("fastcgi strip -1")) == [
        "gmid.conf:5: invalid fastcgi strip number -1 (use 0 or more)"
    ]


def test_old_fastcgi_tcp_syntax_is_an_error_saying_what_to_write(errors_of, server_with):
    assert errors_of(server_with('fastcgi tcp "localhost" port 9000')) == [
        "gmid.conf:5: 'fastcgi tcp' is the gmid 1.x syntax, removed in 2.0; "
        "write 'fastcgi socket tcp \"host\" port N'"
    ]


def test_off_inside_a_fastcgi_block_is_an_error(errors_of, server_with):
    assert errors_of(server_with("fastcgi {\n\t\toff\n\t}")) == [
        "gmid.conf:6: 'off' cannot go inside fastcgi { }; write 'fastcgi off' on its own"
    ]


def test_unknown_fastcgi_option_is_an_error(errors_of, server_with):
    assert errors_of(server_with("fastcgi { socket \"/s\"; timeout 5 }")) == [
        "gmid.conf:5: unknown fastcgi option 'timeout' (use socket, spawn, endpoint, param or strip)"
    ]


def test_fastcgi_alone_is_an_error(errors_of, server_with):
    assert errors_of(server_with("fastcgi\n\tlang en")) == [
        "gmid.conf:5: expected socket, spawn, endpoint, param, strip, off or '{' after 'fastcgi'"
    ]
