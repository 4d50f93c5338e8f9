"""What gmid 2.x removed is rejected with gmid's reason and what to write instead (gmid.md §1.9)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "directive, message",
    [
        ('cgi "/cgi-bin/*"', "'cgi' was removed in gmid 2.0; use fastcgi (e.g. fcgiwrap) or proxy instead"),
        (
            'entrypoint "/app.cgi"',
            "'entrypoint' was removed in gmid 2.0 together with CGI; run the program behind a "
            "FastCGI wrapper (e.g. fcgiwrap) and use 'fastcgi socket'",
        ),
        ('env FOO = "bar"', "'env' was removed in gmid 2.0; use 'fastcgi param NAME = \"value\"' instead"),
        (
            'fastcgi tcp "127.0.0.1" port 9000',
            "'fastcgi tcp' is the gmid 1.x syntax, removed in 2.0; "
            "write 'fastcgi socket tcp \"host\" port N'",
        ),
    ],
)
def test_removed_server_directives_are_errors_saying_what_to_use(
    errors_of, server_with, directive, message
):
    assert errors_of(server_with(directive)) == [f"gmid.conf:5: {message}"]


@pytest.mark.parametrize(
    "directive, message",
    [
        ('mime "text/plain" "txt"', "'mime' was removed in gmid 2.0; use 'types { TYPE EXT ... }' instead"),
        ('map "text/plain" to-ext "txt"', "'map' was removed in gmid 2.0; use 'types { TYPE EXT ... }' instead"),
        ('cgi "/x"', "'cgi' was removed in gmid 2.0; use fastcgi (e.g. fcgiwrap) or proxy instead"),
        # gmid 1.x's own sample.conf had it: an 'unknown directive' said nothing more.
        ("daemon on", "'daemon' is gmid 1.x's and was removed; twistd runs gemfcgi as a daemon "
         "unless given -n (under systemd, give -n): delete the line"),
    ],
)
def test_removed_global_directives_are_errors_saying_what_to_use(errors_of, directive, message):
    assert errors_of(f"prefork 2\n\n{directive}\n") == [f"gmid.conf:3: {message}"]


def test_cgi_inside_a_location_is_the_same_error(errors_of, server_with):
    assert errors_of(server_with('location "/x" {\n\t\tcgi "*"\n\t}')) == [
        "gmid.conf:6: 'cgi' was removed in gmid 2.0; use fastcgi (e.g. fcgiwrap) or proxy instead"
    ]


def test_every_removed_directive_in_one_file_is_reported(errors_of):
    text = (
        'mime "a/b" "c"\n'
        'server "a" {\n\tcert "/c"; key "/k"\n\tcgi "*"\n\tenv A = "b"\n\tentrypoint "/x"\n}\n'
        'map "a/b" to-ext "c"\n'
    )
    assert [e.split(": ")[0] for e in errors_of(text)] == [
        "gmid.conf:1", "gmid.conf:4", "gmid.conf:5", "gmid.conf:6", "gmid.conf:8",
    ]
