"""Helpers shared by the configuration tests, as fixtures (tests import nothing from each other)."""

from __future__ import annotations

from typing import Callable

import pytest

from gemfcgi.config import ConfigError, Diagnostic, parse_config
from gemfcgi.config.model import Config

# A server block header that needs nothing else to be valid, so tests can add
# one directive and know its line: the directive under test is on line 5.
SERVER_HEAD = 'server "example.com" {\n\tlisten on * port 1965\n\tcert "/etc/ssl/c.pem"\n\tkey "/etc/ssl/k.pem"\n'


@pytest.fixture
def server_with() -> Callable[[str], str]:
    """``server_with("lang en")``: a valid server whose line 5 is the given text."""

    def build(body: str) -> str:
        return f"{SERVER_HEAD}{body}\n}}\n"

    return build


@pytest.fixture
def parse() -> Callable[..., Config]:
    """Parse text that must be valid; warnings are ignored."""

    def run(text: str, **kwargs) -> Config:
        config, _ = parse_config(text, "gmid.conf", **kwargs)
        return config

    return run


@pytest.fixture
def warnings_of() -> Callable[..., list[str]]:
    """The warnings of valid text, as ``FILE:LINE: message`` strings."""

    def run(text: str, **kwargs) -> list[str]:
        _, warnings = parse_config(text, "gmid.conf", **kwargs)
        assert all(w.severity == "warning" for w in warnings)
        return [str(w) for w in warnings]

    return run


@pytest.fixture
def errors_of() -> Callable[..., list[str]]:
    """The errors of invalid text, as ``FILE:LINE: message`` strings."""

    def run(text: str, **kwargs) -> list[str]:
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "gmid.conf", **kwargs)
        diagnostics: list[Diagnostic] = caught.value.diagnostics
        assert diagnostics and all(d.severity == "error" for d in diagnostics)
        return [str(d) for d in diagnostics]

    return run
