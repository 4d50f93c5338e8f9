"""
A configuration built in Python, held to what a gmid.conf could say.

The parser refuses a port above 65535, a block code that is no status, a
``lang`` with a line break in it, a ``strip`` below 1. A ``Config`` that a
program builds meets no parser: such a value was served, and failed at
every request that reached it (a ``TypeError`` for a code given as
``"51"``), failed the start with a traceback (a port of 70000), or went
out inside a reply's header (a ``lang`` of ``"en\\r\\n20 x"``).

``built_problems`` finds them before anything is served: first a field
whose value is not of the type the model declares, then the parser's own
check of each value (``gemfcgi.config.values``).
"""

from __future__ import annotations

import dataclasses
import functools
import reprlib
import types
from typing import Any, Iterator, Literal, Optional, Union, get_args, get_origin, get_type_hints

from gemfcgi.config import model, values
from gemfcgi.config.errors import Diagnostic


def built_problems(config: model.Config) -> list[Diagnostic]:
    """Every value of ``config`` the parser would have refused, as errors."""
    file = config.source or "<config>"
    wrong_type = _type_problem(config, model.Config, "config")
    if wrong_type is not None:
        # Values of the wrong type cannot be checked further.
        return [Diagnostic(file, 0, wrong_type)]
    return [Diagnostic(origin.file if origin else file, origin.line if origin else 0, message)
            for origin, message in _value_problems(config)]


# -- types ------------------------------------------------------------------

# A value shown in a message: a whole server block would bury it.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel = 2


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = get_type_hints(cls, vars(model))
    return tuple((field.name, hints[field.name]) for field in dataclasses.fields(cls))


def _type_problem(value: Any, hint: Any, path: str) -> Optional[str]:
    """What is wrong with the type of ``value`` at ``path`` (``None`` when nothing is)."""
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        arms = get_args(hint)
        for arm in arms:
            if _is_instance(value, arm):
                return _type_problem(value, arm, path)
        return _wrong(path, " or ".join(_name(arm) for arm in arms), value)
    if origin is Literal:
        choices = get_args(hint)
        if value in choices and type(value) is str:
            return None
        return f"{path} must be one of {', '.join(repr(choice) for choice in choices)}, not {_shown(value)}"
    if not _is_instance(value, hint):
        return _wrong(path, _name(hint), value)
    if origin is list:
        (item,) = get_args(hint)
        return _first(_type_problem(each, item, f"{path}[{index}]") for index, each in enumerate(value))
    if origin is dict:
        key, item = get_args(hint)
        return _first(_type_problem(each_key, key, f"{path} key {each_key!r}")
                      or _type_problem(each, item, f"{path}[{each_key!r}]") for each_key, each in value.items())
    if origin is tuple:
        items = get_args(hint)
        if len(value) != len(items):
            return f"{path} must be a pair, not {_shown(value)}"
        return _first(_type_problem(each, item, f"{path}[{index}]")
                      for index, (each, item) in enumerate(zip(value, items)))
    if dataclasses.is_dataclass(hint):
        return _first(_type_problem(getattr(value, name), field_hint, f"{path}.{name}")
                      for name, field_hint in _fields(hint))
    return None


def _is_instance(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of ``hint``'s type at its top; True and False are no numbers here."""
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if get_origin(hint) is Literal:
        return isinstance(value, str)
    kind = get_origin(hint) or hint
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _name(hint: Any) -> str:
    if hint is type(None):
        return "None"
    kind = get_origin(hint) or hint
    return getattr(kind, "__name__", str(kind))


def _wrong(path: str, expected: str, value: Any) -> str:
    return f"{path} must be {expected}, not {type(value).__name__} ({_shown(value)})"


def _shown(value: Any) -> str:
    return _SHORT.repr(value)


def _first(problems: Iterator[Optional[str]]) -> Optional[str]:
    return next((problem for problem in problems if problem is not None), None)


# -- values -----------------------------------------------------------------


def _value_problems(config: model.Config) -> Iterator[tuple[Optional[model.Origin], str]]:
    """The parser's checks, each problem with where it was written (if it was)."""
    yield from _said(config.origins.get("prefork"), values.check_prefork(config.prefork))
    if config.protocols is not None:
        yield from _said(config.origins.get("protocols"), values.check_server_protocols(config.protocols))
    if values.syslog_facility(config.log.facility) is None:
        yield None, (f"log facility {config.log.facility!r} is no syslog facility "
                     "(use daemon, ftp, user or local0 to local7)")
    for media_type in (config.types or {}):
        yield from _said(config.origins.get("types"), values.check_header_text("media type", media_type))
    for server in config.servers:
        for listen in server.listens:
            yield from _said(listen.origin or server.origin, _port_problem(listen.port))
        yield from _options_problems(server.options, server.origin)
        for location in server.locations:
            yield from _options_problems(location.options, location.origin or server.origin)
        for proxy in server.proxies:
            where = proxy.origin or server.origin
            if proxy.for_port is not None:
                yield from _said(where, _port_problem(proxy.for_port))
            if proxy.relay_to is not None:
                yield from _said(where, _port_problem(proxy.relay_to[1]))
            if proxy.protocols is not None:
                yield from _said(where, values.check_protocols(proxy.protocols))


def _options_problems(options: model.LocationOptions,
                      block: Optional[model.Origin]) -> Iterator[tuple[Optional[model.Origin], str]]:
    def where(directive: str) -> Optional[model.Origin]:
        return options.origins.get(directive, block)

    if options.block is not None:
        code, meta = options.block.code, options.block.meta
        problem = values.check_block_code(code) or values.check_block_meta(code, meta)
        yield from _said(where("block"), problem)
    if options.default_type is not None:
        yield from _said(where("default type"), values.check_header_text("default type", options.default_type))
    if options.lang is not None:
        yield from _said(where("lang"), values.check_header_text("lang", options.lang, "text/gemini;lang="))
    if options.strip is not None:
        yield from _said(where("strip"), values.check_strip(options.strip))
    fastcgi = options.fastcgi
    if fastcgi is not None:
        at = fastcgi.origin or block
        if fastcgi.strip is not None:
            yield from _said(at, values.check_fastcgi_strip(fastcgi.strip))
        for name, value in fastcgi.params:
            yield from _said(at, values.check_param("name", name) or values.check_param("value", value))
        if isinstance(fastcgi.address, model.FastCGITCP):
            yield from _said(at, _port_problem(fastcgi.address.port))


def _port_problem(port: Union[int, str]) -> Optional[str]:
    """A number out of range, written as a number or as digits (a service name is looked up later)."""
    if isinstance(port, str):
        if not (port.isascii() and port.isdigit()):
            return None
        port = int(port)
    return values.check_port(port)


def _said(origin: Optional[model.Origin], problem: Optional[str]) -> Iterator[tuple[Optional[model.Origin], str]]:
    if problem is not None:
        yield origin, problem
