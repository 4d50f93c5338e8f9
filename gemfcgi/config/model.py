"""
The configuration model: what a gmid.conf (or the quick command line) means.

Plain dataclasses, no behaviour beyond small conveniences, so that the parser,
the quick mode and embedding code all build the same thing and the runtime
(``gemfcgi.routing``) is the only place that interprets it.

Optional fields of ``LocationOptions`` are ``None`` when the directive was not
written: gmid resolves location options per directive, so "unset" must be
distinguishable from "set to the default".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

DEFAULT_PORT = 1965
DEFAULT_FASTCGI_TCP_PORT = 9000


@dataclass(frozen=True)
class Origin:
    """Where a directive was written, for ``FILE:LINE`` messages."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def _origins() -> "dict[str, Origin]":
    """
    Where each directive of a block was written, by name (``"root"``,
    ``"cert"``), for diagnostics about the value; not part of the meaning.
    """
    return field(default_factory=dict, compare=False, repr=False)


@dataclass
class BlockReturn:
    """``block [return CODE ["META"]]``; META may hold gmid's ``%`` formats."""

    code: int = 40
    meta: str = "temporary failure"


@dataclass
class FastCGISocket:
    """``fastcgi socket "/path"``: a unix-domain socket."""

    path: str
    # How the log names it, when not by its path (a spawned program's
    # socket, as prefork workers reach it).
    name: Optional[str] = None


@dataclass
class FastCGITCP:
    """``fastcgi socket tcp "host" [port N|"service"]``."""

    host: str
    port: Union[int, str] = DEFAULT_FASTCGI_TCP_PORT


@dataclass
class FastCGISpawn:
    """``fastcgi spawn "program args"``: a program gemfcgi starts and supervises."""

    command: str


@dataclass
class FastCGIEndpoint:
    """``fastcgi endpoint "STRING"``: any Twisted client endpoint string."""

    description: str


FastCGIAddress = Union[FastCGISocket, FastCGITCP, FastCGISpawn, FastCGIEndpoint]


@dataclass
class FastCGI:
    """
    A ``fastcgi`` directive of a server or location.

    ``off`` is gmid's ``fastcgi off``: it stops the search for a backend.
    ``address`` is ``None`` when the block only sets params or strip (gmid then
    ignores those params unless the same location has a socket).
    """

    address: Optional[FastCGIAddress] = None
    params: list[tuple[str, str]] = field(default_factory=list)
    strip: Optional[int] = None
    off: bool = False
    origin: Optional[Origin] = None


@dataclass
class LocationOptions:
    """Options valid in a location, and at server level as the default."""

    auto_index: Optional[bool] = None
    block: Optional[BlockReturn] = None
    default_type: Optional[str] = None
    fastcgi: Optional[FastCGI] = None
    index: Optional[str] = None
    lang: Optional[str] = None
    log: Optional[bool] = None
    require_client_ca: Optional[str] = None
    root: Optional[str] = None
    strip: Optional[int] = None
    origins: dict[str, Origin] = _origins()


@dataclass
class Location:
    """``location "glob" { ... }``; ``pattern`` is stored as written."""

    pattern: str
    options: LocationOptions = field(default_factory=LocationOptions)
    origin: Optional[Origin] = None


@dataclass
class Listen:
    """
    ``listen on ADDR [port N|"service"] [proxy-v1]``.

    ``address`` is ``"*"`` for every address, else a host name or IP literal
    as written (resolution happens when listeners are opened). ``proxy_v1``
    (written ``proxy-v1`` or ``proxy-v2``) means a PROXY protocol header,
    version 1 or 2, comes before TLS on every connection.
    """

    address: str = "*"
    port: Union[int, str] = DEFAULT_PORT
    proxy_v1: bool = False
    origin: Optional[Origin] = None


@dataclass
class Proxy:
    """``proxy [proto P] [for-host H [port N]] { ... }``: relays to another Gemini server."""

    proto: str = "gemini"
    for_host: str = "*"
    for_port: Union[int, str, None] = None
    relay_to: Optional[tuple[str, Union[int, str]]] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    sni: Optional[str] = None
    use_tls: bool = True
    verifyname: bool = True
    protocols: Optional[str] = None
    proxy_v1: bool = False
    require_client_ca: Optional[str] = None
    origin: Optional[Origin] = None
    # Where each option was written ("relay-to", "sni", "require client ca"...).
    origins: dict[str, Origin] = _origins()


@dataclass
class Server:
    """``server "glob" { ... }``: one virtual host."""

    name: str
    aliases: list[str] = field(default_factory=list)
    listens: list[Listen] = field(default_factory=list)
    cert: Optional[str] = None
    key: Optional[str] = None
    ocsp: Optional[str] = None
    options: LocationOptions = field(default_factory=LocationOptions)
    locations: list[Location] = field(default_factory=list)
    proxies: list[Proxy] = field(default_factory=list)
    origin: Optional[Origin] = None
    origins: dict[str, Origin] = _origins()


@dataclass
class LogSettings:
    """``log { ... }``: where and how access lines are written."""

    access: Optional[str] = None
    style: Literal["legacy", "common", "combined", "condensed"] = "legacy"
    syslog: bool = True
    facility: str = "daemon"
    # Where ``access`` was given, for a diagnostic about the file; not part
    # of what the settings are.
    access_origin: Optional[Origin] = field(default=None, compare=False)


@dataclass
class Config:
    """A whole configuration. ``types`` of ``None`` means gmid's built-in table."""

    servers: list[Server] = field(default_factory=list)
    prefork: int = 1
    user: Optional[str] = None
    chroot: Optional[str] = None
    protocols: Optional[str] = None
    log: LogSettings = field(default_factory=LogSettings)
    types: Optional[dict[str, str]] = None
    source: Optional[str] = None
    origins: dict[str, Origin] = _origins()
