"""Global options (gmid.md §1.2, §1.7): prefork, user, chroot, protocols, log, types, ipv6, port."""

from __future__ import annotations

import pytest

from gemfcgi.config import values
from gemfcgi.config.model import Listen, LogSettings, Origin
from gemfcgi.mime import MimeTable

SERVER = 'server "a" {\n\tcert "/c"\n\tkey "/k"\n}\n'


@pytest.mark.parametrize("n", [1, 3, 15])
def test_prefork_accepts_1_to_15(parse, n):
    assert parse(f"prefork {n}\n").prefork == n


@pytest.mark.parametrize("n", [0, 16, -1])
def test_prefork_outside_1_to_15_is_an_error(errors_of, n):
    assert errors_of(f"\nprefork {n}\n") == [
        f"gmid.conf:2: invalid prefork number {n} (use 1 to 15)"
    ]


def test_prefork_needs_a_number(errors_of):
    assert errors_of('prefork "3"\n') == [
        'gmid.conf:1: expected a number after \'prefork\', found string "3"'
    ]


def test_user_and_chroot(parse):
    config = parse('user "_gmid"\nchroot "/var/gemini"\n')
    assert (config.user, config.chroot) == ("_gmid", "/var/gemini")


@pytest.mark.parametrize(
    "text",
    ["tlsv1.3", "tlsv1.2,tlsv1.3", "secure", "all", "all:!tlsv1.0", "all:!tlsv1.3", "!tlsv1.2",
     "TLSv1.2", "legacy, !tlsv1.3"],
)
def test_protocols_accepts_libtls_strings(parse, text):
    assert parse(f'protocols "{text}"\n').protocols == text


def test_invalid_protocols_is_an_error_at_its_line(errors_of):
    assert errors_of('prefork 2\nprotocols "tlsv1.2:tls1.3"\n') == [
        'gmid.conf:2: invalid protocols string "tlsv1.2:tls1.3": unknown protocol "tls1.3" '
        '(use e.g. "tlsv1.2,tlsv1.3", "tlsv1.3", "secure", "all" or "all:!tlsv1.2")'
    ]


@pytest.mark.parametrize("text", ["tlsv1.1", "all:!tlsv1", "all:!secure", "tlsv1.3:!tlsv1.3"])
def test_protocols_that_leave_no_version_gemfcgi_offers_are_an_error(errors_of, text):
    assert errors_of(f'\nprotocols "{text}"\n') == [
        f'gmid.conf:2: protocols "{text}" allows no TLS 1.2 or 1.3, '
        "the only versions gemfcgi offers"
    ]


@pytest.mark.parametrize(
    "text, versions",
    [
        ("all", {"tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3"}),
        ("secure", {"tlsv1.2", "tlsv1.3"}),
        ("all:!tlsv1.3", {"tlsv1.0", "tlsv1.1", "tlsv1.2"}),
        ("!tlsv1.3", {"tlsv1.0", "tlsv1.1", "tlsv1.2"}),
        ("secure,!tlsv1.2", {"tlsv1.3"}),
        ("tlsv1.2:!tlsv1.3", {"tlsv1.2"}),
        ("tlsv1", {"tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3"}),
        ("tlsv1.0, tlsv1.3", {"tlsv1.0", "tlsv1.3"}),
        ("tlsv1.3,!tlsv1.3,!tlsv1.2", {"tlsv1.0", "tlsv1.1", "tlsv1.3"}),
        ("!tlsv1.2,tlsv1.2", {"tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3"}),
    ],
)
def test_protocols_words_add_and_remove_versions_in_order(text, versions):
    assert values.tls_versions(text) == versions


def test_log_defaults(parse):
    assert parse("").log == LogSettings(None, "legacy", True, "daemon")


def test_log_block(parse):
    text = 'log {\n\taccess "/logs/access.log"\n\tstyle combined\n\tsyslog off\n}\n'
    assert parse(text).log == LogSettings("/logs/access.log", "combined", False, "daemon")


def test_log_block_on_one_line_with_semicolons(parse):
    text = 'log { access "/a.log"; style common; syslog facility local3 }\n'
    assert parse(text).log == LogSettings("/a.log", "common", True, "local3")


def test_log_single_option_forms(parse):
    text = 'log access "/a.log"\nlog style condensed\nlog syslog off\n'
    assert parse(text).log == LogSettings("/a.log", "condensed", False, "daemon")


@pytest.mark.parametrize("name", ["LOG_LOCAL7", "Local0", "user", "ftp", "daemon"])
def test_syslog_facility_is_case_insensitive_with_optional_log_prefix(parse, name):
    log = parse(f"log syslog off\nlog syslog facility {name}\n").log
    assert log.syslog is True
    assert log.facility == name.lower().removeprefix("log_")


def test_unknown_syslog_facility_is_a_warning_and_keeps_the_facility_so_far(parse, warnings_of):
    text = "log syslog facility kern\n"
    assert parse(text).log.facility == "daemon"
    assert warnings_of(text) == [
        "gmid.conf:1: unknown syslog facility 'kern', ignored: the facility stays daemon "
        "(use daemon, ftp, user or local0 to local7)"
    ]
    text = "log { syslog facility local3; syslog facility bogus }\n"
    assert parse(text).log.facility == "local3"
    assert warnings_of(text) == [
        "gmid.conf:1: unknown syslog facility 'bogus', ignored: the facility stays local3 "
        "(use daemon, ftp, user or local0 to local7)"
    ]


def test_the_ftp_facility_is_ftps_own_number():
    # Python's syslog module has no LOG_FTP: ftp was sent as daemon.
    from gemfcgi.accesslog import FACILITIES

    assert FACILITIES["ftp"] == 88  # 11 << 3, as in every syslog.h


def test_invalid_log_style_is_an_error(errors_of):
    assert errors_of("log {\n\tstyle fancy\n}\n") == [
        "gmid.conf:2: invalid log style 'fancy' (use legacy, common, combined or condensed)"
    ]


def test_unknown_log_option_is_an_error(errors_of):
    assert errors_of("log { rotate daily }\n") == [
        "gmid.conf:1: unknown log option 'rotate' (use access, style or syslog)"
    ]


def test_log_on_at_top_level_is_an_error(errors_of):
    assert errors_of("log off\n") == [
        "gmid.conf:1: 'log on|off' is a server or location option; at top level write "
        'log { access "file"; style combined; syslog off }'
    ]


def test_without_types_the_builtin_table_is_used(parse):
    assert parse(SERVER).types is None


def test_types_start_from_only_gemini(parse):
    assert parse("types {\n}\n").types == {"gmi": "text/gemini", "gemini": "text/gemini"}


def test_types_map_each_extension(parse):
    text = "types {\n\ttext/plain txt text;\n\t'image/svg+xml' svg\n\ttext/x-mandoc 1 2 3\n}\n"
    assert parse(text).types == {
        "gmi": "text/gemini", "gemini": "text/gemini",
        "txt": "text/plain", "text": "text/plain", "svg": "image/svg+xml",
        "1": "text/x-mandoc", "2": "text/x-mandoc", "3": "text/x-mandoc",
    }


def test_several_types_blocks_add_up_and_later_entries_win(parse):
    text = "types { text/plain txt }\ntypes {\n\ttext/x-log log txt\n}\n"
    assert parse(text).types == {
        "gmi": "text/gemini", "gemini": "text/gemini", "txt": "text/x-log", "log": "text/x-log",
    }


def test_an_extension_given_another_type_in_another_case_is_warned_of(parse, warnings_of):
    # gmid tells them apart; here the last wins for both, and --check said
    # nothing: an unchanged gmid.conf served .gmi as text/x-upper.
    text = "types {\n\ttext/x-upper GMI\n\tapplication/x-compress Z\n\tapplication/x-z z\n" \
        "\ttext/plain TXT txt\n}\n"
    assert warnings_of(text) == [
        "gmid.conf:2: extension 'GMI' is 'gmi' (given text/gemini) ignoring case, as extensions "
        "are matched here: files of both are served as text/x-upper",
        "gmid.conf:4: extension 'z' is 'Z' (given application/x-compress) ignoring case, as "
        "extensions are matched here: files of both are served as application/x-z",
    ]


def test_the_last_entry_for_an_extension_wins_whatever_its_case(parse):
    # text/gemini came last, but the earlier GMI sat later in the table.
    text = "types {\n\ttext/x-upper GMI\n\ttext/gemini gmi\n}\n"
    config = parse(text)
    assert MimeTable(config.types).lookup("page.gmi") == "text/gemini"
    assert MimeTable(config.types).lookup("PAGE.GMI") == "text/gemini"


def test_a_media_type_that_is_not_type_and_subtype_is_warned_of(warnings_of):
    assert warnings_of("types {\n\tfoo md\n\t'text/plain; charset=utf-8' txt\n}\n") == [
        "gmid.conf:2: media type 'foo' is not type/subtype (text/gemini): clients may not know "
        "what to do with its files"
    ]


def test_types_tolerate_a_media_type_without_extensions(parse):
    assert parse("types {\n\tapplication/x-nothing\n}\n").types == {
        "gmi": "text/gemini", "gemini": "text/gemini"
    }


def test_types_entry_must_start_with_a_media_type(errors_of):
    assert errors_of("types {\n\t{ txt }\n}\n") == [
        "gmid.conf:2: expected a media type such as text/gemini, found '{'"
    ]


def test_ipv6_is_deprecated_and_sets_the_default_listen_address(parse, warnings_of):
    text = "ipv6 off\n" + SERVER
    assert parse(text).servers[0].listens == [Listen("0.0.0.0", 1965, False, Origin("gmid.conf", 2))]
    assert warnings_of(text)[0] == (
        "gmid.conf:1: 'ipv6' is deprecated; in each server block write 'listen on 0.0.0.0' and "
        "its port instead (listen on 0.0.0.0 port N)"
    )


def test_port_is_deprecated_and_sets_the_default_port(parse, warnings_of):
    text = SERVER + "port 1966\n"
    assert parse(text).servers[0].listens == [Listen("*", 1966, False, Origin("gmid.conf", 1))]
    assert warnings_of(text) == [
        "gmid.conf:5: 'port' is deprecated; write 'listen on * port 1966' in each server block instead",
        "gmid.conf:1: server \"a\" has no 'listen on'; listening on * port 1966 "
        "(add: listen on * port 1966)",
    ]


@pytest.mark.parametrize("globals_, line", [("ipv6 off\nport 1966\n", 2), ("port 1966\nipv6 off\n", 1)])
def test_port_beside_ipv6_off_says_the_ipv4_line_to_write(warnings_of, globals_, line):
    # It said 'listen on *', and the next warning said the server listens on 0.0.0.0.
    assert [w for w in warnings_of(globals_ + SERVER) if "'port'" in w] == [
        f"gmid.conf:{line}: 'port' is deprecated; write 'listen on 0.0.0.0 port 1966' in each server "
        "block instead"
    ]


@pytest.mark.parametrize("protocols, warned", [
    ("tlsv1.1,tlsv1.2", "tlsv1.1"), ("TLSv1.0:tlsv1.1:tlsv1.3", "tlsv1.0 and tlsv1.1"),
    ("all", None), ("legacy", None), ("tlsv1.2", None),
])
def test_protocols_naming_a_version_not_offered_is_warned_of(warnings_of, protocols, warned):
    said = [w for w in warnings_of(f'protocols "{protocols}"\n' + SERVER) if "protocols" in w]
    assert said == ([f'gmid.conf:1: protocols "{protocols}": {warned} not offered: gemfcgi '
                     "offers TLS 1.2 and 1.3 only"] if warned else [])


@pytest.mark.parametrize(
    "directive, message",
    [
        ('root "/x"', "'root' is only allowed inside a server or location block"),
        ('lang "en"', "'lang' is only allowed inside a server or location block"),
        ('cert "/c"', "'cert' is only allowed inside a server block"),
        ('location "/x" {}', "'location' is only allowed inside a server block"),
    ],
)
def test_server_directives_at_top_level_are_errors(errors_of, directive, message):
    assert errors_of(f"prefork 2\n{directive}\n") == [f"gmid.conf:2: {message}"]


def test_stray_closing_brace_is_an_error(errors_of):
    assert errors_of("prefork 2\n}\n") == ["gmid.conf:2: unexpected '}': no block is open here"]


def test_an_extension_holding_a_dot_or_a_slash_is_warned_of(warnings_of):
    # Only what follows a name's last "." is looked up: such an entry
    # never matched, and the check said nothing.
    assert warnings_of("types {\n\tapplication/x-tgz tar.gz\n\ttext/x-b 'a/b' txt\n}\n") == [
        "gmid.conf:2: extension 'tar.gz' holds '.', and only what follows the last '.' of a "
        "file's name is looked up: no file is served as application/x-tgz by it",
        "gmid.conf:3: extension 'a/b' holds '/', and only what follows the last '.' of a "
        "file's name is looked up: no file is served as text/x-b by it",
    ]


def test_a_path_takes_the_extension_of_its_last_component():
    # "x.a/b" has no extension: an entry "a/b" gave b, in directory x.a, its type.
    table = MimeTable({"a/b": "text/x-b", "a": "text/x-a"})
    assert table.lookup("/m/x.a/b") == "application/octet-stream"
    assert table.lookup("/m/x.a/b.a") == "text/x-a"
    assert table.lookup("/m/x.gmi/README") == "application/octet-stream"
