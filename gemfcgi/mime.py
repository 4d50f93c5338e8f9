"""
File name to MIME type, with gmid's built-in table.

gmid matches extensions case-sensitively; capsules written on other systems
have ``.GMI`` files, so the lookup here folds case.
"""

from __future__ import annotations

from typing import Mapping, Optional

OCTET_STREAM = "application/octet-stream"
GEMINI = "text/gemini"

BUILTIN_TYPES: Mapping[str, str] = {
    "pdf": "application/pdf",
    "gif": "image/gif",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "svg": "image/svg+xml",
    "gemini": GEMINI,
    "gmi": GEMINI,
    "markdown": "text/markdown",
    "md": "text/markdown",
    "txt": "text/plain",
    "diff": "text/x-patch",
    "patch": "text/x-patch",
    "xml": "text/xml",
}

# What gmid keeps when a configuration brings its own ``types`` block.
MINIMAL_TYPES: Mapping[str, str] = {"gemini": GEMINI, "gmi": GEMINI}


class MimeTable:
    """Extension lookup; ``types`` of ``None`` means gmid's built-in table."""

    def __init__(self, types: Optional[Mapping[str, str]] = None) -> None:
        source = BUILTIN_TYPES if types is None else {**MINIMAL_TYPES, **types}
        self._by_extension = {ext.lower(): mime for ext, mime in source.items()}

    def lookup(self, filename: str, default: str = OCTET_STREAM) -> str:
        """The type of ``filename`` (a path too: its last component's extension)."""
        _, dot, extension = filename.rpartition("/")[2].rpartition(".")
        if not dot:
            return default
        return self._by_extension.get(extension.lower(), default)
