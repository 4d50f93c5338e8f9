"""
Reading gmid 2.x configuration files into ``gemfcgi.config.model`` objects.

::

    config, warnings = load_config("/etc/gmid.conf", defines={"name": "value"})
    config, warnings = parse_config(text, filename="gmid.conf", base_dir="/etc")

Both raise ``ConfigError`` whose ``diagnostics`` list every error found, each
printable as ``FILE:LINE: message``. ``warnings`` are ``Diagnostic`` objects
with ``severity == "warning"`` (deprecated syntax, missing ``listen on``,
server blocks shadowed by earlier ones). Nothing here imports Twisted.
"""

from gemfcgi.config.checks import shadow_warnings
from gemfcgi.config.errors import ConfigError, Diagnostic
from gemfcgi.config.parser import load_config, parse_config

__all__ = [
    "ConfigError",
    "Diagnostic",
    "load_config",
    "parse_config",
    "shadow_warnings",
]
