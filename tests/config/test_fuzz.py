"""Whatever the input, the parser answers with a Config or a ConfigError, never a crash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gemfcgi.config import ConfigError, parse_config
from gemfcgi.config.lexer import KEYWORDS
from gemfcgi.config.model import Config

BASE_DIR = "/nonexistent/gemfcgi-fuzz"

VOCABULARY = sorted(KEYWORDS) + [
    "{", "}", "\n", ";", "=", "*", "/", "-", "#", "\\\n", "'", '"',
    '"/abs/path"', '"rel"', "'single'", '"a\\"b"', '"%p%h%"', "word", "text/gemini",
    "0", "1", "15", "16", "31", "40", "1965", "99999", "-1",
    "spawn", "endpoint", "cgi", "env", "mime", "map", "entrypoint",
    "$m", "@m", "$undefined", "@undefined", "@loop", "m = \"lang en; }\"", "loop = \"@loop\"",
    'include "missing.conf"', 'server "x" {', 'location "/" {', "fastcgi {", "proxy {",
    "types {", "log {", 'cert "/c"', 'key "/k"', "listen on *",
]


def check(text: str) -> None:
    try:
        config, warnings = parse_config(text, "fuzz.conf", base_dir=BASE_DIR)
    except ConfigError as error:
        assert error.diagnostics
        diagnostics = error.diagnostics + error.warnings
        assert all(d.severity == "error" for d in error.diagnostics)
    else:
        assert isinstance(config, Config)
        diagnostics = warnings
        assert all(d.severity == "warning" for d in warnings)
    for d in diagnostics:
        assert d.line >= 1
        assert d.message
        assert str(d).startswith(f"{d.file}:{d.line}: ")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_random_text_gives_a_config_or_a_config_error(text):
    check(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(VOCABULARY), max_size=60), st.sampled_from([" ", "\n", ""]))
def test_random_token_sequences_give_a_config_or_a_config_error(words, separator):
    check(separator.join(words))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(VOCABULARY), max_size=40))
def test_random_directives_inside_a_valid_server_never_crash(words):
    check('server "x" {\n\tcert "/c"\n\tkey "/k"\n\t' + " ".join(words) + "\n}\n")
