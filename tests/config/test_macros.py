"""Macros: ``name = value``, ``$name``, ``@name`` and ``-D`` defines (gmid.md §1.1)."""

from __future__ import annotations


def test_dollar_macro_expands_to_a_string(parse):
    assert parse('dir = "/var/gemini"\nchroot $dir\n').chroot == "/var/gemini"


def test_dollar_macro_joins_with_adjacent_strings(parse):
    assert parse('certs = "/etc/ssl"\nchroot $certs "/x"\n').chroot == "/etc/ssl/x"


def test_dollar_macro_is_a_string_even_when_its_value_is_a_keyword(parse):
    assert parse('w = "on"\nuser $w\n').user == "on"


def test_macros_are_not_expanded_inside_quotes(parse):
    assert parse('a = "x"\nuser "$a @a"\n').user == "$a @a"


def test_at_macro_is_parsed_in_place(parse):
    text = (
        'common = "lang it; auto index on"\n'
        'server "example.com" {\n\tlisten on * port 1965\n\tcert "/c"\n\tkey "/k"\n'
        '\t@common\n\tlocation "/docs/*" { @common; index "toc.gmi" }\n}\n'
    )
    server = parse(text).servers[0]
    assert (server.options.lang, server.options.auto_index) == ("it", True)
    docs = server.locations[0].options
    assert (docs.lang, docs.auto_index, docs.index) == ("it", True, "toc.gmi")


def test_at_macro_can_hold_a_whole_block(parse):
    text = 'tls = "cert \\"/c\\"; key \\"/k\\""\nserver "a" {\n\tlisten on *\n\t@tls\n}\n'
    server = parse(text).servers[0]
    assert (server.cert, server.key) == ("/c", "/k")


def test_errors_inside_an_at_macro_name_the_line_of_the_at(errors_of):
    text = 'bad = "lang on"\n\nserver "a" {\n\tcert "/c"; key "/k"\n\t@bad\n}\n'
    assert errors_of(text) == [
        "gmid.conf:5: expected a string after 'lang', found keyword 'on' "
        '(it is a reserved word; write "on" in quotes)'
    ]


def test_undefined_macro_is_an_error_with_its_line(errors_of):
    assert errors_of('prefork 2\nuser $nobody\n') == [
        'gmid.conf:2: macro \'nobody\' is not defined (define it first: nobody = "value")'
    ]


def test_undefined_at_macro_is_an_error_with_its_line(errors_of):
    assert errors_of("\n\n@missing\n") == [
        'gmid.conf:3: macro \'missing\' is not defined (define it first: missing = "value")'
    ]


def test_a_macro_is_usable_only_after_its_definition(errors_of):
    assert errors_of('user $u\nu = "x"\n') == [
        'gmid.conf:1: macro \'u\' is not defined (define it first: u = "value")'
    ]


def test_later_definition_replaces_earlier(parse):
    assert parse('u = "a"\nu = "b"\nuser $u\n').user == "b"


def test_defines_win_over_file_definitions(parse):
    config = parse('u = "from-file"\nuser $u\n', defines={"u": "from-command-line"})
    assert config.user == "from-command-line"


def test_defines_supply_macros_the_file_does_not_define(parse):
    assert parse("user $u\n", defines={"u": "gmid"}).user == "gmid"


def test_macro_definition_may_end_with_a_semicolon(parse):
    assert parse('u = "x"; user $u\n').user == "x"


def test_macro_value_may_be_joined_strings(parse):
    assert parse('u = "a" "b" c\nuser $u\n').user == "abc"


def test_macro_that_expands_itself_is_an_error(errors_of):
    assert errors_of('a = "@b"\nb = "@a"\n@a\n') == [
        "gmid.conf:3: macro 'a' expands itself through @a"
    ]


def test_dollar_macros_are_expanded_inside_at_macros(parse):
    assert parse('u = "gmid"\nset = "user $u"\n@set\n').user == "gmid"


def test_macro_defined_inside_a_block_is_an_error(errors_of):
    text = 'server "a" {\n\tcert "/c"; key "/k"\n\tx = "y"\n}\n'
    assert errors_of(text) == [
        "gmid.conf:3: macro 'x' must be defined at top level, outside any block"
    ]


def test_reserved_word_cannot_be_a_macro_name(errors_of):
    assert errors_of('port = "1965"\n') == [
        "gmid.conf:1: 'port' is a reserved word and cannot be a macro name"
    ]


def test_macro_value_must_be_a_string(errors_of):
    assert errors_of("p = 1965\n") == [
        "gmid.conf:1: expected a string after 'p =', found number 1965 (write \"1965\" in quotes)"
    ]


def test_macro_name_that_dollar_cannot_reach_is_a_warning(warnings_of):
    assert warnings_of('"my-dir" = "/x"\n') == [
        "gmid.conf:1: macro 'my-dir' can never be used: $ and @ only take letters, digits and '_'"
    ]


def test_dollar_without_a_name_is_an_error(errors_of):
    assert errors_of("user $\n") == [
        "gmid.conf:1: '$' must be followed by a macro name (letters, digits, '_')"
    ]


def test_macros_that_double_each_other_stop_at_a_line_not_at_the_memory(errors_of):
    text = 'm0 = "abc"\n' + "".join(f"m{i} = $m{i - 1} $m{i - 1}\n" for i in range(1, 40))
    errors = errors_of(text)
    assert errors[0] == "gmid.conf:16: string longer than 65536 characters after 'm15 ='"


def test_a_message_quoting_a_line_break_or_an_escape_stays_one_line(errors_of):
    # A line break comes from a -D definition (one in a quoted string is dropped).
    assert errors_of('server $name /\n', defines={"name": "a\nb\x1b[2J"}) == [
        "gmid.conf:1: expected '{' to open server \"a\\nb\\x1b[2J\", found '/'"
    ]


def test_a_dollar_macros_value_is_looked_through_once_however_often_it_is_used(monkeypatch):
    # Each use looked through the whole value for bytes that are not
    # UTF-8: a value of 60,000 characters used 100,000 times took 19 s.
    from gemfcgi.config import lexer

    looked: list[int] = []
    real = lexer._UNDECODED

    class Counting:
        def search(self, text):
            looked.append(len(text))
            return real.search(text)

    monkeypatch.setattr(lexer, "_UNDECODED", Counting())
    uses = "\tlang $big\n" * 200
    text = (f'big = "{"x" * 1000}"\nserver "localhost" {{\n\tcert "/c.pem"\n\tkey "/k.pem"\n'
            f"\tlisten on 127.0.0.1 port 1965\n{uses}}}\n")
    lexer_errors: list[str] = []
    tokens = lexer.Lexer(text, "gmid.conf", {"big": "x" * 1000}, lambda *args: lexer_errors.append(args))
    while tokens.next().kind is not lexer.TokenKind.EOF:
        pass
    assert lexer_errors == []
    assert looked.count(1000) <= 2


def test_a_value_used_many_times_is_checked_for_a_header_once(monkeypatch, parse):
    # Each use looked the value through again for controls: a $macro of
    # 60,000 characters used 100,000 times took 23 s.
    from gemfcgi.config import values

    values.check_header_text.cache_clear()
    looked: list[int] = []
    real = values.control_character
    monkeypatch.setattr(values, "control_character", lambda text: looked.append(len(text)) or real(text))
    uses = "".join(f'\tlocation "/l{n}/*" {{ lang $long }}\n' for n in range(200))
    config = parse(f'long = "{"x" * 500}"\nserver "localhost" {{\n\tlisten on 127.0.0.1 port 1965\n'
                   f'\tcert "/c.pem"\n\tkey "/k.pem"\n{uses}}}\n')
    assert len(config.servers[0].locations) == 200
    assert looked.count(500) <= 2
