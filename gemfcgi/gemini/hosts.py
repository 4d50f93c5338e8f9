"""
Host names as Gemini compares them: case-insensitive and IDN-aware.

A host reaches the server as an SNI name (always ASCII, A-labels) and as the
host of the request URL (Unicode or A-labels, any case). Both are brought to
one canonical form, lowercase A-labels, so that ``bücher.example`` and
``xn--bcher-kva.example`` are the same host everywhere.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from functools import lru_cache
from typing import Optional

import idna

from gemfcgi.glob import compile_glob, is_glob


# What RFC 3986 allows in no host, besides controls (a '"' would close a
# quoted field of the access log), and the delimiters of a URL.
# The dots IDNA takes for ".": ideographic, full-width, half-width ideographic.
IDEOGRAPHIC_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_NOT_IN_A_HOST = re.compile(r'[ /\\?#@\[\]%"<>{}|^`]')


def ipv4_unmapped(address: str) -> str:
    """
    An IPv4 peer of a dual-stack IPv6 socket (``listen on *``) as the IPv4
    address it is: ``::ffff:192.0.2.7`` is ``192.0.2.7``, as gmid, with a
    socket per family, shows it. Any other address is returned as it is.
    """
    if address.startswith("::ffff:") and "." in address:
        return address[len("::ffff:"):]
    return address


@lru_cache(maxsize=4096)
def is_address(host: str) -> bool:
    """Whether ``host`` is an IP address (IPv6 without brackets), not a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=4096)
def canonical_host(name: str) -> Optional[str]:
    """
    The lowercase A-label form of ``name``, or ``None`` if it is not a host.

    IP literals are returned in their normal text form (IPv6 without
    brackets). ASCII names are only lowercased: IDNA2008 would reject names
    that DNS and certificates accept (underscores), and ASCII needs no mapping.
    """
    if not name:
        return None
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
        if "%" in name:
            return None  # a zone names an interface of the client's, not a host here
        try:
            return str(ipaddress.IPv6Address(name))
        except ValueError:
            return None
    if not name.isascii():
        # The dots IDNA reads as "." are dots here too: a trailing one
        # (``localhost。``) is the root's, as ``localhost.`` is.
        name = name.translate(IDEOGRAPHIC_DOTS)
    # One trailing dot is the root's (``example.org.``); more is an empty label.
    name = name.removesuffix(".")
    if not name or name.endswith(".") or name.startswith(".") or ".." in name:
        return None
    if _NOT_IN_A_HOST.search(name) or not name.isprintable():
        return None
    if name.isascii():
        if ":" in name:
            try:
                return str(ipaddress.IPv6Address(name))
            except ValueError:
                return None
        name = name.lower()
        if "xn--" in name and not all(_is_a_label(label) for label in name.split(".")):
            return None
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    # IDNA2008 refuses symbols (``♨``) that plain RFC 3492 punycode, which
    # gmid and most clients use, encodes: each label is encoded on its own.
    try:
        labels = [
            label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
            for label in name.lower().split(".")
        ]
    except UnicodeError:
        return None
    if not all(_is_a_label(label) for label in labels):
        return None  # an A-label written beside Unicode ones is checked too
    return ".".join(labels)


def _is_a_label(label: str) -> bool:
    """
    Whether ``label`` (lowercase) is an ASCII label or an A-label that
    stands for a name: one whose punycode decodes to printable characters,
    not all ASCII, that a host may hold, and encodes back to itself
    (RFC 5890 2.3.2.1). ``xn--a`` decodes to U+0080, ``xn--`` to nothing.
    """
    if not label.startswith("xn--"):
        return True
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
    except UnicodeError:
        return False
    return (
        decoded != ""
        and not decoded.isascii()
        and "." not in decoded
        and _NOT_IN_A_HOST.search(decoded) is None
        and "xn--" + decoded.encode("punycode").decode("ascii") == label
        # Printable (or of a Unicode newer than this Python's), or a label
        # IDNA2008 allows: the joiners some scripts need (U+200C, U+200D in
        # Persian, Sinhala) are format characters.
        and (all(c.isprintable() or unicodedata.category(c) == "Cn" for c in decoded)
             or _is_idna2008(label))
    )


def _is_idna2008(label: str) -> bool:
    try:
        idna.decode(label)
    except (idna.IDNAError, UnicodeError, ValueError):
        return False
    return True


@lru_cache(maxsize=4096)
def unicode_host(canonical: str) -> str:
    """The Unicode spelling of a canonical host, for globs written in Unicode."""
    if "xn--" not in canonical:
        return canonical
    try:
        return idna.decode(canonical, uts46=True)
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    try:
        return ".".join(
            label[4:].encode("ascii").decode("punycode") if label.startswith("xn--") else label
            for label in canonical.split(".")
        )
    except UnicodeError:
        return canonical


def normal_glob(glob: str) -> str:
    """
    A server name glob in the form hosts are compared in: lowercased and
    without a trailing dot (``*.test.`` matched no host), and, where not
    ASCII, UTS 46-mapped as hosts come (NFC, full-width letters and
    ideographic dots folded: "*.bu\u0308cher.example" and "*.ｔest" matched
    none).
    """
    lowered = glob.lower()
    if not lowered.isascii():
        lowered = unicodedata.normalize("NFKC", lowered.translate(IDEOGRAPHIC_DOTS)).lower()
    if len(lowered) > 1 and lowered.endswith(".") and not lowered.endswith("\\."):
        lowered = lowered[:-1]
    return lowered


def glob_spellings(lowered: str) -> set[str]:
    """
    A normal glob (``normal_glob``) and its other spelling: its Unicode
    labels as A-labels, or its A-labels in Unicode (``*.bücher.example`` and
    ``*.xn--bcher-kva.example`` take the same hosts). Labels with a
    wildcard stay as written.
    """
    labels = lowered.split(".")
    other = []
    for label in labels:
        if label.startswith("xn--"):
            other.append(unicode_host(label))
        elif not label.isascii() and not is_glob(label):
            other.append(canonical_host(label) or label)
        else:
            other.append(label)
    return {lowered, ".".join(other)}


def literal_host(name: str) -> tuple[bool, Optional[str]]:
    """
    Whether a server name or alias is no glob but one host, and that host
    (canonical; ``None`` if the name is no host at all). ``[::1]`` is an
    IPv6 address as URLs write it, not a bracket class.
    """
    if (name.startswith("[") and name.endswith("]") and ":" in name) or not is_glob(name):
        return True, canonical_host(name)
    return False, None


class HostPattern:
    """
    A server name or alias glob, matched as gmid does (``fnmatch``) but
    case-insensitively and against both spellings of an IDN host.
    """

    def __init__(self, glob: str) -> None:
        self.glob = glob
        lowered = normal_glob(glob)
        # Each spelling a host is matched against (the server index files
        # the pattern under each).
        self.globs = {lowered}
        if not lowered.isascii() and "*" not in lowered and "?" not in lowered:
            alabel = canonical_host(lowered)
            if alabel:
                self.globs.add(alabel)
        elif "xn--" in lowered:
            self.globs.add(unicode_host(lowered))
        self._literal = literal_host(glob)[1]
        # Held here, not looked up at each match: a configuration of more
        # globs than the compiled-pattern cache keeps would compile each
        # one again for every request.
        self._regexes = [] if self._literal is not None else [compile_glob(g) for g in self.globs]

    def matches(self, canonical: str) -> bool:
        if self._literal is not None:
            return canonical == self._literal
        names = {canonical, unicode_host(canonical)}
        return any(regex.fullmatch(n) is not None for n in names for regex in self._regexes)

    def __repr__(self) -> str:
        return f"HostPattern({self.glob!r})"
