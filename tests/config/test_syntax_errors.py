"""Generic syntax errors: each names its file and line and says what was expected."""

from __future__ import annotations


def test_a_block_needs_its_opening_brace(errors_of):
    assert errors_of('server "a"\n\tcert "/c"\n') == [
        "gmid.conf:2: expected '{' to open server \"a\", found keyword 'cert'"
    ]


def test_a_symbol_cannot_start_a_statement(errors_of):
    assert errors_of("prefork 2\n* 3\n") == [
        "gmid.conf:2: unexpected '*' where a directive should start"
    ]


def test_a_string_cannot_start_a_statement(errors_of):
    assert errors_of('"prefork" 2\n') == ['gmid.conf:1: expected a directive, found string "prefork"']


def test_a_keyword_out_of_place_is_not_valid_here(errors_of):
    assert errors_of("\non\nto-ext\n") == [
        "gmid.conf:2: 'on' is not valid here",
        "gmid.conf:3: 'to-ext' is not valid here",
    ]


def test_a_stray_opening_brace_skips_its_whole_block(errors_of):
    assert errors_of("{\n\tprefork 2\n}\nprefork 0\n") == [
        "gmid.conf:1: unexpected '{' where a directive should start",
        "gmid.conf:4: invalid prefork number 0 (use 1 to 15)",
    ]


def test_macro_name_cannot_contain_spaces(errors_of):
    assert errors_of('"a b" = "x"\n') == [
        "gmid.conf:1: macro name 'a b' cannot be empty or contain spaces"
    ]


def test_macros_nested_too_deeply_are_an_error(errors_of):
    chain = "".join(f'm{i} = "@m{i + 1}"\n' for i in range(40)) + 'm40 = "prefork 2"\n'
    assert errors_of(chain + "@m0\n") == ["gmid.conf:42: macros nested too deeply at @m32"]


def test_at_without_a_name_is_an_error(errors_of):
    assert errors_of("\n@ x\n") == [
        "gmid.conf:2: '@' must be followed by a macro name (letters, digits, '_')"
    ]


def test_log_needs_an_option(errors_of):
    assert errors_of("log\n") == ["gmid.conf:1: expected a log option or '{' after 'log'"]


def test_a_types_entry_needs_extensions_not_symbols(errors_of):
    assert errors_of("types {\n\ttext/plain = txt\n}\n") == [
        "gmid.conf:2: expected a file extension for text/plain, found '='"
    ]


def test_a_port_needs_a_number_or_a_service(errors_of):
    assert errors_of('server "a" {\n\tlisten on * port = 1\n\tcert "/c"; key "/k"\n}\n') == [
        "gmid.conf:2: expected a port number or service name after 'port', found '='"
    ]


def test_errors_after_a_broken_block_are_still_found(errors_of):
    text = (
        'server "a" {\n\tcert "/c"; key "/k"\n\tlocation "/x" {\n\t\tstrip 0\n\t}\n'
        "\tbogus\n}\nprefork 99\n"
    )
    assert errors_of(text) == [
        "gmid.conf:4: invalid strip number 0 (use 1 or more; leave strip out to strip nothing)",
        "gmid.conf:6: unknown directive 'bogus'",
        "gmid.conf:8: invalid prefork number 99 (use 1 to 15)",
    ]


def test_a_file_that_is_no_configuration_is_not_quoted_back(errors_of):
    # An include of a private key would put its lines into the log.
    key_lines = "".join(f"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg{i:04d}\n" for i in range(30))
    errors = errors_of(key_lines)
    assert errors == [
        f"gmid.conf:{line}: unknown directive: 52 characters that are no directive name "
        "(is this a configuration file?)"
        for line in range(1, 11)
    ] + ["gmid.conf:11: more errors in gmid.conf are not shown: fix those above first"]
    assert errors_of("root:x:0:0:root:/root:/bin/bash\n") == [
        "gmid.conf:1: unknown directive: 31 characters that are no directive name "
        "(is this a configuration file?)"
    ]


def test_a_listen_line_with_an_error_is_not_also_warned_of_as_missing():
    import pytest

    from gemfcgi.config import ConfigError, parse_config

    text = 'server "a" {\n\tlisten 127.0.0.1 port 1965\n\tcert "/c"\n\tkey "/k"\n}\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "gmid.conf")
    assert [str(d) for d in raised.value.diagnostics] == [
        "gmid.conf:2: expected 'on' after 'listen', found '127.0.0.1' (write: listen on * port 1965)"
    ]
    assert [str(w) for w in raised.value.warnings if "has no 'listen on'" in str(w)] == []


def test_words_and_strings_that_look_like_no_directive_are_not_quoted(errors_of):
    # An included file of passwords or tokens.
    assert errors_of('Tr0ub4dorAndHorse\n"quoted s3cret"\n') == [
        "gmid.conf:1: unknown directive: 17 characters that are no directive name "
        "(is this a configuration file?)",
        "gmid.conf:2: expected a directive, found a string of 13 characters",
    ]
    # A directive mistyped, in capitals or quoted, is still named.
    assert errors_of('Prefork 2\nprefrok 2\n"prefork" 2\n') == [
        "gmid.conf:1: unknown directive 'Prefork' (directives are lower case: 'prefork')",
        "gmid.conf:2: unknown directive 'prefrok' (did you mean 'prefork'?)",
        'gmid.conf:3: expected a directive, found string "prefork"',
    ]
