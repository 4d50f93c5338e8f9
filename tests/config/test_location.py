"""``location "glob" { ... }`` and its options (gmid.md §1.4)."""

from __future__ import annotations

import pytest

from gemfcgi.config.model import BlockReturn, Location, LocationOptions, Origin


def location_options(parse, server_with, body: str) -> LocationOptions:
    config = parse(server_with(f'location "/x/*" {{\n\t\t{body}\n\t}}'))
    return config.servers[0].locations[0].options


def test_location_keeps_its_pattern_as_written_and_its_line(parse, server_with):
    config = parse(server_with('location "/files/*" {\n\t\tauto index on\n\t}'))
    assert config.servers[0].locations == [
        Location("/files/*", LocationOptions(auto_index=True), Origin("gmid.conf", 5))
    ]


def test_locations_keep_file_order(parse, server_with):
    body = 'location "/a/*" { lang "fr" }\n\tlocation "/a/*" { index "i.gmi" }'
    assert [(l.pattern, l.options.lang, l.options.index) for l in parse(server_with(body)).servers[0].locations] == [
        ("/a/*", "fr", None),
        ("/a/*", None, "i.gmi"),
    ]


def test_empty_location(parse, server_with):
    assert parse(server_with('location "/" {}')).servers[0].locations[0].options == LocationOptions()


@pytest.mark.parametrize(
    "body, expected",
    [
        ("auto index on", LocationOptions(auto_index=True)),
        ("auto index off", LocationOptions(auto_index=False)),
        ('default type "text/plain"', LocationOptions(default_type="text/plain")),
        ('index "toc.gmi"', LocationOptions(index="toc.gmi")),
        ('lang "it"', LocationOptions(lang="it")),
        ("log off", LocationOptions(log=False)),
        ("log on", LocationOptions(log=True)),
        ('require client ca "/etc/ssl/ca.pem"', LocationOptions(require_client_ca="/etc/ssl/ca.pem")),
        ('root "/srv/docs"', LocationOptions(root="/srv/docs")),
        ('root "relative/is/fine"', LocationOptions(root="relative/is/fine")),
        ("strip 2", LocationOptions(strip=2)),
    ],
)
def test_each_location_option(parse, server_with, body, expected):
    assert location_options(parse, server_with, body) == expected


def test_block_alone_is_40_temporary_failure(parse, server_with):
    assert location_options(parse, server_with, "block").block == BlockReturn(40, "temporary failure")


def test_block_return_code_keeps_the_default_meta(parse, server_with):
    assert location_options(parse, server_with, "block return 51").block == BlockReturn(
        51, "temporary failure"
    )


def test_block_return_code_and_meta(parse, server_with):
    assert location_options(parse, server_with, 'block return 31 "gemini://%N:%P%p?%q%%"').block == (
        BlockReturn(31, "gemini://%N:%P%p?%q%%")
    )


@pytest.mark.parametrize("code", [9, 20, 25, 29, 70, 100])
def test_block_code_outside_10_to_69_or_in_2x_is_an_error(errors_of, server_with, code):
    assert errors_of(server_with(f'block return {code} "x"')) == [
        f"gmid.conf:5: invalid block code {code} (use 10-19 or 30-69; 2x codes cannot be blocked to)"
    ]


@pytest.mark.parametrize("code", [10, 19, 30, 44, 69])
def test_block_code_limits_are_accepted(parse, server_with, code):
    assert location_options(parse, server_with, f'block return {code} "x"').block.code == code


def test_block_redirect_without_meta_is_an_error(errors_of, server_with):
    assert errors_of(server_with("block return 31")) == [
        "gmid.conf:5: missing meta for block return 31: a redirect needs a target "
        '(write: block return 31 "/new%p")'
    ]


@pytest.mark.parametrize("meta, expected", [
    ('block return 10 ""', 'gmid.conf:5: block return 10 "": status 10 needs a prompt, and this META '
                           "is empty: such a request gets 40 instead"),
    ('block return 31 "%q"', 'gmid.conf:5: block return 31 "%q": status 31 needs a target, and this '
                             "META is empty when the request has no query: such a request gets 40 instead"),
    ('block return 31 "/search?%q"', None),
    ('block return 51 ""', None),
])
def test_a_prompt_or_redirect_block_whose_meta_can_be_empty_is_warned_of(warnings_of, server_with,
                                                                          meta, expected):
    assert warnings_of(server_with(meta)) == ([] if expected is None else [expected])


def test_block_meta_longer_than_1024_is_an_error(errors_of, parse, server_with):
    assert location_options(parse, server_with, f'block return 40 "{"m" * 1024}"').block.meta == "m" * 1024
    assert errors_of(server_with(f'block return 40 "{"m" * 1025}"')) == [
        "gmid.conf:5: block meta is too long (1025 bytes, at most 1024)"
    ]
    # Counted in bytes, as a reply counts its META: 513 "é" passed, and
    # every request got 40.
    assert location_options(parse, server_with, f'block return 40 "{"é" * 512}"').block.meta == "é" * 512
    assert errors_of(server_with(f'block return 40 "{"é" * 513}"')) == [
        "gmid.conf:5: block meta is too long (1026 bytes, at most 1024)"
    ]


def test_block_meta_with_a_control_character_is_an_error(errors_of, server_with):
    assert errors_of(server_with('block return 51 "gone\x1b[2J"')) == [
        "gmid.conf:5: block meta contains the control character '\\x1b'"
    ]


@pytest.mark.parametrize("spec", ["%h", "%s", "%d", "%Q"])
def test_block_meta_rejects_unknown_format_specifiers(errors_of, server_with, spec):
    assert errors_of(server_with(f'block return 40 "x{spec}"')) == [
        f"gmid.conf:5: invalid format specifier {spec} in block meta "
        "(use %% for a '%', %p path, %q query, %P port, %N server name)"
    ]


def test_block_meta_ending_in_a_lone_percent_is_an_error(errors_of, server_with):
    assert errors_of(server_with('block return 40 "100%"')) == [
        "gmid.conf:5: invalid format specifier % at the end in block meta "
        "(use %% for a '%', %p path, %q query, %P port, %N server name)"
    ]


@pytest.mark.parametrize("n", [0, -1])
def test_strip_below_1_is_an_error(errors_of, server_with, n):
    assert errors_of(server_with(f"strip {n}")) == [
        f"gmid.conf:5: invalid strip number {n} (use 1 or more; leave strip out to strip nothing)"
    ]


def test_require_client_ca_must_be_an_absolute_path(errors_of, server_with):
    assert errors_of(server_with('location "/p/*" { require client ca "ca.pem" }')) == [
        'gmid.conf:5: require client ca "ca.pem": not an absolute path (require client ca is '
        "read before chroot; write the full path, starting with '/')"
    ]


def test_require_needs_client_ca(errors_of, server_with):
    assert errors_of(server_with('require ca "/ca.pem"')) == [
        "gmid.conf:5: expected 'client' after 'require', found keyword 'ca' "
        '(write: require client ca "/etc/ssl/ca.pem")'
    ]


def test_default_needs_type(errors_of, server_with):
    assert errors_of(server_with('default "text/plain"')) == [
        "gmid.conf:5: expected 'type' after 'default', found string \"text/plain\" "
        '(write: default type "text/plain")'
    ]


@pytest.mark.parametrize(
    "directive, message",
    [
        ('alias "x"', "'alias' is not allowed in a location (it is a server option)"),
        ('cert "/c"', "'cert' is not allowed in a location (it is a server option)"),
        ('key "/k"', "'key' is not allowed in a location (it is a server option)"),
        ('ocsp "/o"', "'ocsp' is not allowed in a location (it is a server option)"),
        ("listen on * port 1965", "'listen' is not allowed in a location (it is a server option)"),
        ('location "/y" { }', "'location' is not allowed in a location: locations cannot be nested"),
        ('proxy { relay-to "h" }', "'proxy' is not allowed in a location (it is a server option)"),
        (
            'param A = "b"',
            "bare 'param' is not allowed in a location; write 'fastcgi param NAME = \"value\"'",
        ),
        ("prefork 3", "'prefork' is not allowed in a location (it is a global option)"),
    ],
)
def test_server_only_directives_are_not_allowed_in_a_location(
    errors_of, server_with, directive, message
):
    text = server_with(f'location "/x/*" {{\n\t\t{directive}\n\t}}')
    assert errors_of(text) == [f"gmid.conf:6: {message}"]


def test_errors_in_a_location_do_not_hide_later_ones(errors_of, server_with):
    body = 'location "/x/*" {\n\t\tstrip 0\n\t\talias "a"\n\t\tlang on\n\t}\n\tprefork 2'
    assert errors_of(server_with(body)) == [
        "gmid.conf:6: invalid strip number 0 (use 1 or more; leave strip out to strip nothing)",
        "gmid.conf:7: 'alias' is not allowed in a location (it is a server option)",
        "gmid.conf:8: expected a string after 'lang', found keyword 'on' "
        '(it is a reserved word; write "on" in quotes)',
        "gmid.conf:10: 'prefork' is a global option: move it outside the server block",
    ]


def test_a_directive_gmid_takes_once_per_block_is_an_error_given_twice(errors_of, server_with):
    # As in gmid; the last one was taken silently (a renewed cert line
    # added below the old one, two lang lines).
    text = server_with('lang "en"\n\tlocation "/a/*" { block; block return 51; index "x"; index "y" }\n'
                       '\tlocation "/b/*" { lang "de" }\n\tlang "fr"\n\tcert "/etc/ssl/new.pem"')
    assert errors_of(text) == [
        "gmid.conf:6: block specified more than once in this block (first at gmid.conf:6)",
        "gmid.conf:6: index specified more than once in this block (first at gmid.conf:6)",
        "gmid.conf:8: lang specified more than once in this block (first at gmid.conf:5)",
        "gmid.conf:9: cert specified more than once in this block (first at gmid.conf:3)",
    ]


@pytest.mark.parametrize("index", ["../../outside/secret.gmi", "a/../b.gmi", "..", "/etc/passwd"])
def test_an_index_that_would_leave_the_directory_is_an_error(errors_of, server_with, index):
    assert errors_of(server_with(f'index "{index}"')) == [
        f"gmid.conf:5: index '{index}' must name a file inside the directory (no '..' and no leading '/')"
    ]


def test_an_index_ending_with_a_slash_is_an_error(errors_of, server_with):
    # No file answers to it: every directory got its index file served
    # with the type of no name (application/octet-stream).
    assert errors_of(server_with('index "index.gmi/"')) == [
        "gmid.conf:5: index 'index.gmi/' ends with '/': it must name a file"
    ]


@pytest.mark.parametrize("index", ["", ".", "pages/."])
def test_an_index_naming_the_directory_itself_is_an_error(errors_of, server_with, index):
    # `--check` passed it, and every directory got 51 (or its listing).
    assert errors_of(server_with(f'index "{index}"')) == [
        f"gmid.conf:5: index '{index}' names the directory, not a file in it"
    ]


def test_an_index_in_a_subdirectory_is_fine(parse, server_with):
    assert parse(server_with('index "pages/home.gmi"')).servers[0].options.index == "pages/home.gmi"


@pytest.mark.parametrize("lang", ["en", "en-GB", "zh-Hant-TW", "en,fr", "x-klingon"])
def test_a_lang_of_language_tags_is_taken_without_a_word(warnings_of, server_with, lang):
    assert warnings_of(server_with(f'lang "{lang}"')) == []


@pytest.mark.parametrize("lang", ["en US", "en;charset=latin1", 'en\tindex "x.gmi'])
def test_a_lang_that_is_no_language_tag_is_warned_of(warnings_of, server_with, lang):
    # A quote left open took the next line into every page's header, and
    # the check said the configuration was OK.
    text = server_with("lang 'placeholder'").replace("'placeholder'", f"'{lang}'")
    [warning] = warnings_of(text)
    assert warning.startswith("gmid.conf:5: lang ") and warning.endswith(
        "is no language tag (en, en-GB, or several: en,fr): text/gemini replies carry it as written")
