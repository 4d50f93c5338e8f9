"""
Checks over a whole ``Config`` that are about gemfcgi, not gmid's grammar.

``shadow_warnings`` points out where gemfcgi and gmid would pick different
server blocks: gmid lets the *last* matching block win, gemfcgi the *first*,
so a block every name of which an earlier glob already matches is never used.
"""

from __future__ import annotations

from typing import Optional

from gemfcgi.config.errors import Diagnostic
from gemfcgi.config.model import Config, Origin, Server
from gemfcgi.serverindex import ServersByName


def _where(origin: Optional[Origin], config: Config) -> tuple[str, int]:
    if origin is None:
        return config.source or "<config>", 0  # no line to blame (built in Python)
    return origin.file, origin.line


def _place(origin: Optional[Origin], config: Config) -> str:
    file, line = _where(origin, config)
    return f"{file}:{line}" if line > 0 else file


def shadow_warnings(config: Config) -> list[Diagnostic]:
    """
    A warning for every server block that earlier blocks hide completely.

    A block is hidden when its name and each alias match (case-insensitively)
    the name or an alias of some earlier block. The warning names the block
    and every earlier block that hides part of it. A block only partly
    hidden gets a warning for each of its names that an earlier block takes,
    since requests for that name never reach it.
    """
    warnings: list[Diagnostic] = []
    earlier = ServersByName()
    for server in config.servers:
        taken = [(name, earlier.first_taking(name)) for name in [server.name, *server.aliases]]
        earlier.add(server)
        file, line = _where(server.origin, config)
        if any(first is None for _, first in taken):
            for name, first in taken:
                if first is not None:
                    what = "its name" if name == server.name else f'its alias "{name}"'
                    warnings.append(Diagnostic(
                        file, line,
                        f'server "{server.name}": requests for {what} go to server "{first.name}" '
                        f"at {_place(first.origin, config)} (gemfcgi uses the first matching block)",
                        "warning"))
            continue
        shadows: list[Server] = []
        for _, first in taken:
            if all(first is not s for s in shadows):
                shadows.append(first)
        by = " and ".join(
            f'server "{s.name}" at {_place(s.origin, config)}' for s in shadows
        )
        warnings.append(
            Diagnostic(
                file,
                line,
                f'server "{server.name}" is shadowed by {by} '
                "(gemfcgi uses the first matching block)",
                "warning",
            )
        )
    return warnings
