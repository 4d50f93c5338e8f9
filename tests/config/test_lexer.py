"""Lexical rules of gmid.conf (gmid.md §1.1), seen through the parser and the lexer."""

from __future__ import annotations

import pytest

from gemfcgi.config.lexer import Lexer, TokenKind


def tokens(text: str) -> list[tuple[str, str]]:
    errors: list[str] = []
    lexer = Lexer(text, "t", {}, lambda f, l, m: errors.append(m))
    out = []
    while True:
        token = lexer.next()
        if token.kind is TokenKind.EOF:
            break
        out.append((token.kind.value, token.text))
    assert not errors
    return out


def test_comments_run_to_the_end_of_the_line(parse, server_with):
    config = parse(server_with('lang "en" # lang "fr"\n# a whole comment line'))
    assert config.servers[0].options.lang == "en"


def test_hash_inside_quotes_is_not_a_comment(parse, server_with):
    assert parse(server_with('index "a#b.gmi"')).servers[0].options.index == "a#b.gmi"


def test_file_may_start_with_comments_and_blank_lines(parse):
    assert parse("\n# comment\n\n\nprefork 2\n\n").prefork == 2


def test_semicolon_ends_a_statement_like_a_newline(parse):
    config = parse('prefork 2; user "gmid";; chroot "/var/gemini";\n')
    assert (config.prefork, config.user, config.chroot) == (2, "gmid", "/var/gemini")


def test_double_and_single_quotes_both_make_strings(parse):
    config = parse("user 'a b'\nchroot \"c'd\"\n")
    assert (config.user, config.chroot) == ("a b", "c'd")


def test_backslash_escapes_the_quote_a_space_and_a_tab(parse):
    assert parse(r'user "a\"b\ c\	d"').user == 'a"b c\td'
    assert parse(r"user 'it\'s'").user == "it's"


def test_other_backslashes_are_kept_as_written(parse):
    assert parse(r'user "a\nb\x"').user == r"a\nb\x"


def test_backslash_newline_continues_a_string(parse):
    assert parse('user "ab\\\ncd"\n').user == "abcd"


def test_backslash_newline_continues_a_line_outside_quotes(parse):
    assert parse("prefork \\\n 3\n").prefork == 3


def test_adjacent_strings_are_joined(parse, server_with):
    config = parse(server_with('block return 40 "temporary" "-" "failure"'))
    assert config.servers[0].options.block.meta == "temporary-failure"


def test_bare_words_are_strings(parse, server_with):
    config = parse(server_with("lang en\n\tdefault type text/plain"))
    assert config.servers[0].options.lang == "en"
    assert config.servers[0].options.default_type == "text/plain"


def test_keywords_are_reserved_and_must_be_quoted(parse, server_with, errors_of):
    assert errors_of(server_with("lang on")) == [
        "gmid.conf:5: expected a string after 'lang', found keyword 'on' "
        '(it is a reserved word; write "on" in quotes)'
    ]
    assert parse(server_with('lang "on"')).servers[0].options.lang == "on"


def test_a_number_is_not_a_string(errors_of, server_with):
    assert errors_of(server_with("lang 12")) == [
        "gmid.conf:5: expected a string after 'lang', found number 12 (write \"12\" in quotes)"
    ]


def test_digits_followed_by_word_characters_are_a_word(parse, server_with):
    assert parse(server_with("index 404.gmi")).servers[0].options.index == "404.gmi"
    assert tokens("1965abc 1965 -3 -x") == [
        ("word", "1965abc"),
        ("number", "1965"),
        ("number", "-3"),
        ("symbol", "-"),
        ("word", "x"),
    ]


def test_a_number_may_end_at_a_semicolon_or_brace(parse, server_with):
    config = parse(server_with('location "/a" { strip 2; }\n\tlocation "/b" { strip 3}'))
    assert [loc.options.strip for loc in config.servers[0].locations] == [2, 3]


def test_words_stop_at_reserved_punctuation():
    assert tokens("a{b}c=d,e!f(g)h") == [
        ("word", "a"), ("symbol", "{"), ("word", "b"), ("symbol", "}"),
        ("word", "c"), ("symbol", "="), ("word", "d"), ("symbol", ","),
        ("word", "e"), ("symbol", "!"), ("word", "f"), ("symbol", "("),
        ("word", "g"), ("symbol", ")"), ("word", "h"),
    ]


def test_words_may_hold_other_punctuation():
    assert tokens("text/x-c++src ::1 _a.b:c@d") == [
        ("word", "text/x-c++src"), ("word", "::1"), ("word", "_a.b:c@d"),
    ]


def test_keywords_lex_as_keywords_and_spawn_does_not():
    assert tokens("fastcgi spawn endpoint proxy-v1") == [
        ("keyword", "fastcgi"), ("word", "spawn"), ("word", "endpoint"), ("keyword", "proxy-v1"),
    ]


def test_unterminated_string_is_an_error_at_its_first_line(errors_of):
    assert errors_of('prefork 2\nuser "gmid\n\n') == [
        'gmid.conf:2: unterminated string: missing closing "'
    ]


def test_line_numbers_count_continuations_and_newlines_inside_strings(errors_of):
    text = 'user "a\nb"\nprefork \\\n 2\nbogus\n'
    assert errors_of(text) == ["gmid.conf:5: unknown directive 'bogus'"]


def test_crlf_line_ends_are_accepted(parse):
    config = parse('prefork 2\r\nuser "gmid"\r\n')
    assert (config.prefork, config.user) == (2, "gmid")


def test_on_and_off_are_the_booleans(parse, server_with, errors_of):
    assert parse(server_with("auto index on")).servers[0].options.auto_index is True
    assert parse(server_with("auto index off")).servers[0].options.auto_index is False
    assert errors_of(server_with("auto index yes")) == [
        "gmid.conf:5: expected 'on' or 'off' after 'auto index', found 'yes'"
    ]


def test_spawn_and_endpoint_are_ordinary_words_outside_fastcgi(parse, server_with):
    config = parse(server_with("lang spawn\n\tindex endpoint"))
    assert (config.servers[0].options.lang, config.servers[0].options.index) == (
        "spawn",
        "endpoint",
    )


def test_nul_in_a_string_is_an_error(errors_of):
    assert errors_of('user "a\0b"\n') == ["gmid.conf:1: NUL character in a string"]
    # Read on to the string's end: what follows it is read as written, not
    # as more of the string (a "missing cert" for the line after it).
    text = ('server "localhost" {\n\tlisten on 127.0.0.1 port 1965\n\tlang "en\0"\n'
            '\tcert "/c.pem"\n\tkey "/k.pem"\n}\n')
    assert errors_of(text) == ["gmid.conf:3: NUL character in a string"]
    text = 'server "localhost" {\n\tcert "/c.pem"\n\tkey "/k.pem"\n\tlisten on "127.0.0.1\0" port 1965 }\n'
    assert errors_of(text) == ["gmid.conf:4: NUL character in a string"]


def test_a_line_break_inside_quotes_is_dropped_as_gmid_drops_it(parse, server_with):
    config = parse(server_with('lang "en\nfr"\n\tdefault type "text/\r\nplain"\n\tindex "a.gmi"'))
    options = config.servers[0].options
    assert (options.lang, options.default_type, options.index) == ("enfr", "text/plain", "a.gmi")


def test_the_lines_a_quoted_string_spans_still_count(errors_of, server_with):
    assert errors_of(server_with('lang "en\nfr"\n\tbogus')) == ["gmid.conf:7: unknown directive 'bogus'"]


def test_a_backslash_before_crlf_continues_the_line(parse, server_with):
    assert parse(server_with('lang \\\r\n"en"')).servers[0].options.lang == "en"


def test_a_number_past_a_long_long_is_too_large(errors_of, server_with):
    assert errors_of(server_with("strip 99999999999999999999")) == [
        'gmid.conf:5: "99999999999999999999" invalid number: too large',
    ]


def test_a_string_that_is_not_utf8_is_named_with_its_bytes(tmp_path, server_with):
    # As the file was read, a byte that is no UTF-8 became U+FFFD, and the
    # error named a path nobody has ("root /srv/caf\ufffd is not a directory").
    from gemfcgi.config import ConfigError, load_config

    path = tmp_path / "gmid.conf"
    path.write_bytes(server_with('root "/srv/caf\udce9"\n# caf\udce9 in a comment').encode(
        "utf-8", "surrogateescape"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert [str(d) for d in caught.value.diagnostics] == [
        f'{path}:5: "/srv/caf\\xe9" is not UTF-8: gemfcgi reads its configuration as UTF-8',
    ]


def test_macros_that_double_at_each_level_are_stopped(errors_of, server_with):
    levels = "".join(f'l{n} = "@l{n + 1} @l{n + 1}"\n' for n in range(29, -1, -1))
    errors = errors_of('l30 = ";"\n' + levels + "@l0\n" + server_with(""))
    assert len(errors) == 1
    assert errors[0].startswith("gmid.conf:32: macros expand to more than 1048576 characters at @l")


def test_the_bound_on_what_macros_expand_to_holds_for_the_whole_file(monkeypatch, errors_of, server_with):
    # It held for each @ use written: a line expanding to 540,000 characters,
    # written 40 times in a file of 573 bytes, took 27 s.
    from gemfcgi.config import lexer

    expanded: list[int] = []

    class CountedSource(lexer._TextSource):
        def __init__(self, text: str, *args, **kwargs) -> None:
            if kwargs.get("macro"):
                expanded.append(len(text))
            super().__init__(text, *args, **kwargs)

    monkeypatch.setattr(lexer, "_TextSource", CountedSource)
    levels = "".join(f"m{n} = '@m{n - 1} @m{n - 1}'\n" for n in range(1, 17))
    text = "m0 = ';'\n" + levels + "@m16\n" * 4 + server_with("")
    errors = errors_of(text)
    in_all = lexer.MAX_MACRO_EXPANSION + lexer.MACRO_EXPANSION_PER_CHARACTER * len(text)
    assert [error.split(" at @")[0] for error in errors] == [
        f"gmid.conf:{line}: macros expand to more than {in_all} characters in all" for line in (20, 21)]
    assert errors[1].endswith(" at @m16 (1048576 and 64 more for each character of the configuration)")
    assert sum(expanded) <= in_all


@pytest.mark.parametrize("line, said", [
    ('lang "en\x01"', "lang 'en\\x01' contains the control character '\\x01'"),
    ('default type "text/plain\x1b"', "default type 'text/plain\\x1b' contains the control character '\\x1b'"),
])
def test_a_value_no_reply_header_may_hold_is_refused(errors_of, server_with, line, said):
    # It passed the check, and every reply it went into was 40.
    assert errors_of(server_with(line)) == [f"gmid.conf:5: {said}: no reply may hold it"]


@pytest.mark.parametrize("line, said", [
    ('lang "' + "x" * 1008 + '"', "lang '" + "x" * 40 + "...' makes a META of 1025 bytes"),
    ('default type "' + "t" * 1025 + '"', "default type '" + "t" * 40 + "...' makes a META of 1025 bytes"),
])
def test_a_value_too_long_for_a_reply_header_is_refused(errors_of, server_with, line, said):
    # It passed the check, and every reply it went into was 40.
    assert errors_of(server_with(line)) == [f"gmid.conf:5: {said}, over the 1024 a reply may hold"]


def test_a_value_that_just_fits_a_reply_header_is_taken(parse, server_with):
    lang = "é" * 503 + "x"  # text/gemini;lang= and 1007 bytes
    assert parse(server_with(f'lang "{lang}"')).servers[0].options.lang == lang


def test_a_media_type_no_reply_header_may_hold_is_refused(errors_of):
    assert errors_of('types {\n\t"' + "m" * 1025 + '" x\n}\n') == [
        "gmid.conf:2: media type '" + "m" * 40 + "...' makes a META of 1025 bytes, over the 1024 a reply may hold"
    ]
    assert errors_of('types {\n\t"text/x\x7f" x\n}\n') == [
        "gmid.conf:2: media type 'text/x\\x7f' contains the control character '\\x7f': no reply may hold it"
    ]


def test_a_number_of_thousands_of_digits_is_too_large_not_a_traceback(errors_of, server_with):
    # Python's int() refuses more than 4300 digits: a ValueError escaped.
    assert errors_of(server_with("strip " + "9" * 5000)) == [
        f'gmid.conf:5: "{"9" * 20}...{"9" * 10}" invalid number: too large',
    ]
    # Leading zeros are no size, and a long long's least value is one.
    assert tokens("-" + "0" * 5000 + "3 -9223372036854775808") == [
        ("number", "-" + "0" * 5000 + "3"), ("number", "-9223372036854775808")]


def test_a_number_with_thousands_of_leading_zeros_is_its_value(parse, server_with):
    assert parse(server_with("strip " + "0" * 5000 + "2")).servers[0].options.strip == 2


def test_a_macro_used_many_times_is_no_bomb(parse):
    # The cap counted every expansion of the file: 600 uses of a 2 KB macro failed.
    common = '"' + "auto index on; " * 140 + '"'
    blocks = "".join(f'server "s{n}.test" {{\n\tcert "/c"\n\tkey "/k"\n\t@common\n}}\n' for n in range(600))
    config = parse(f"common = {common}\n{blocks}")
    assert len(config.servers) == 600


def test_a_byte_that_is_not_utf8_outside_quotes_is_named_as_a_byte(tmp_path, server_with):
    from gemfcgi.config import ConfigError, load_config

    path = tmp_path / "gmid.conf"
    path.write_bytes(server_with("lang caf\udce9").encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert f'{path}:5: "\\xe9" is not UTF-8: gemfcgi reads its configuration as UTF-8' in [
        str(d) for d in caught.value.diagnostics]
