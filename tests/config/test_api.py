"""The public surface: Diagnostic, ConfigError, recovery, and no Twisted."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import gemfcgi.config as config_package
from gemfcgi.config import ConfigError, Diagnostic, parse_config


def test_public_names():
    assert set(config_package.__all__) == {
        "ConfigError", "Diagnostic", "load_config", "parse_config",
        "shadow_warnings",
    }


def test_diagnostic_prints_as_file_line_message():
    assert str(Diagnostic("gmid.conf", 3, "unknown directive 'x'")) == (
        "gmid.conf:3: unknown directive 'x'"
    )
    assert str(Diagnostic("gmid.conf", 3, "deprecated", "warning")) == "gmid.conf:3: deprecated"


def test_diagnostic_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Diagnostic("f", 1, "m").line = 2  # type: ignore[misc]


def test_config_error_lists_every_error_and_keeps_warnings():
    text = 'ipv6 on\nprefork 0\nbogus\nserver "a" {\n\tstrip 0\n}\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gmid.conf")
    error = caught.value
    assert isinstance(error, Exception)
    assert [d.line for d in error.diagnostics] == [2, 3, 5, 4, 4]
    assert str(error) == "\n".join(str(d) for d in error.diagnostics)
    assert [w.line for w in error.warnings] == [1, 4]  # ipv6; server without listen


def test_parse_config_returns_warnings_with_warning_severity():
    config, warnings = parse_config('server "a" {\n\tcert "/c"; key "/k"\n}\n', "x.conf")
    assert config.source == "x.conf"
    assert [(w.severity, w.file, w.line) for w in warnings] == [("warning", "x.conf", 1)]


def test_default_filename_is_string():
    with pytest.raises(ConfigError) as caught:
        parse_config("bogus")
    assert str(caught.value) == "<string>:1: unknown directive 'bogus'"


def test_empty_text_is_an_empty_config():
    config, warnings = parse_config("")
    assert (config.servers, config.types, warnings) == ([], None, [])


def test_the_config_package_does_not_import_twisted():
    # The parent package imports Twisted, so look at what the modules import.
    package_dir = Path(config_package.__file__).parent
    imported = set()
    for module in package_dir.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    assert imported and not any(name.split(".")[0] == "twisted" for name in imported)


def test_warnings_come_in_the_order_of_the_file_and_a_programs_own_keep_their_place():
    # A Reloader's load() may return warnings of its own, which are no
    # Diagnostic: they stay where they were among their kind.
    from gemfcgi.config.errors import Diagnostic, in_file_order

    main, included = Diagnostic("main.conf", 9, "a", "warning"), Diagnostic("inc.conf", 1, "b", "warning")
    early = Diagnostic("main.conf", 2, "c", "warning")
    assert in_file_order([included, main, "own one", early, "own two"], "main.conf") == [
        early, main, included, "own one", "own two"]
