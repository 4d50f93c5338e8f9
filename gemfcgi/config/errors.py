"""
What the configuration reader says back: diagnostics and the error that carries them.

Every message names a file and a line, because a user fixing a gmid.conf
needs to know where to look before what is wrong. The parser collects all the
errors it can find before raising, so one run shows every problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Optional, Sequence

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    """
    One error or warning about a configuration.

    ``str(d)`` is ``FILE:LINE: message`` (``FILE: message`` where no line
    is to blame, with ``line`` 0); the severity is carried by
    ``severity`` and is *not* repeated in ``message``, so callers that print
    warnings choose their own prefix (``f"warning: {d}"``).
    """

    file: str
    line: int
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        # A message quotes the file's text: a line break or a terminal
        # escape in it is shown escaped, so the diagnostic stays one line.
        message = self.message
        if not message.isprintable():
            message = "".join(
                c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message
            )
        if self.line <= 0:
            # Nothing written at a line of its own (a configuration built
            # in Python): no line to point to.
            return f"{self.file}: {message}"
        return f"{self.file}:{self.line}: {message}"


class ConfigError(Exception):
    """
    A configuration that cannot be used.

    ``diagnostics`` holds every error found (never empty); ``warnings`` holds
    the warnings collected before giving up, so they are not lost.
    """

    def __init__(
        self,
        diagnostics: Iterable[Diagnostic],
        warnings: Iterable[Diagnostic] = (),
    ) -> None:
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        self.warnings: list[Diagnostic] = list(warnings)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


# Errors shown for one file. A file that is no configuration at all (an
# ``include`` of a key or of /etc/shadow) would otherwise have every line
# quoted back into the log.
MAX_ERRORS_PER_FILE = 10


@dataclass
class Report:
    """Collects diagnostics while a configuration is read."""

    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    _per_file: dict[str, int] = field(default_factory=dict)

    def error(self, file: str, line: int, message: str) -> None:
        count = self._per_file.get(file, 0) + 1
        self._per_file[file] = count
        if count > MAX_ERRORS_PER_FILE + 1:
            return
        if count > MAX_ERRORS_PER_FILE:
            message = f"more errors in {file} are not shown: fix those above first"
        self.errors.append(Diagnostic(file, max(line, 1), message, "error"))

    def warning(self, file: str, line: int, message: str) -> None:
        self.warnings.append(Diagnostic(file, max(line, 1), message, "warning"))


def in_file_order(diagnostics: Sequence[object], main: Optional[str] = None) -> list[object]:
    """
    ``diagnostics`` by line within each file: the parser's, the server
    order's and the checks' come in passes of their own, and a reader goes
    down the file. The ``main`` file comes first, the others (included) in
    the order they first appear. What is no ``Diagnostic`` (a program's own
    warnings) keeps its place among its kind.
    """
    files: dict[str, int] = {} if main is None else {main: 0}
    for diagnostic in diagnostics:
        files.setdefault(getattr(diagnostic, "file", ""), len(files))
    return sorted(diagnostics, key=lambda d: (files[getattr(d, "file", "")], getattr(d, "line", 0)))
