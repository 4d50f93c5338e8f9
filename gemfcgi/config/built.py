"""
A configuration built in Python, held to what a gmid.conf could say.

The parser refuses a port above 65535, a block code that is no status, a
``lang`` with a line break in it, a ``strip`` below 1. A ``Config`` that a
program builds meets no parser: such a value was served, and failed at
every request that reached it (a ``TypeError`` for a code given as
``"51"``), failed the start with a traceback (a port of 70000), or went
out inside a reply's header (a ``lang`` of ``"en\\r\\n20 x"``).

``built_problems`` finds them before anything is served: first a field
whose value cannot stand for the type the model declares, then the
parser's own check of each value (``gemfcgi.config.values``). Each is
named by its place in the ``Config``, and by the line it was written at
when it came from a file.

The types are read as a program would write them, not to the letter: a
tuple or a set serves as a list, any mapping as a dict, 0 and 1 as
booleans, a str enum member as its value, and a ``pathlib.Path`` (or
bytes) where a file or directory is named. ``as_served`` then turns each
into the type the server reads.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import reprlib
import types
from collections.abc import Mapping
from typing import Any, Iterator, Literal, Optional, Union, get_args, get_origin, get_type_hints

from gemfcgi.config import model, values
from gemfcgi.config.errors import Diagnostic

# Fields that name a file or directory: a path object serves as well as text.
_PATH_FIELDS = frozenset({"cert", "key", "ocsp", "root", "require_client_ca", "path", "chroot", "access",
                          "source", "file"})


def built_problems(config: model.Config) -> list[Diagnostic]:
    """Every value of ``config`` the parser would have refused, as errors."""
    source = config.source
    file = os.fsdecode(source) if isinstance(source, (str, bytes, os.PathLike)) and source else "<config>"
    wrong_type = _type_problem(config, model.Config, "config", "")
    if wrong_type is not None:
        # Values of the wrong type cannot be checked further.
        return [Diagnostic(file, 0, wrong_type)]
    return [Diagnostic(os.fsdecode(origin.file) if origin else file, origin.line if origin else 0,
                       f"{place}: {message}")
            for place, origin, message in _value_problems(config)]


# -- types ------------------------------------------------------------------

# A value shown in a message: a whole server block would bury it.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel = 2


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = get_type_hints(cls, vars(model))
    return tuple((field.name, hints[field.name]) for field in dataclasses.fields(cls))


def _type_problem(value: Any, hint: Any, place: str, name: str) -> Optional[str]:
    """What is wrong with the type of ``value`` at ``place`` (``None`` when nothing is)."""
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        arms = get_args(hint)
        for arm in arms:
            if _stands_for(value, arm, name):
                return _type_problem(value, arm, place, name)
        return _wrong(place, " or ".join(_name(arm) for arm in arms), value)
    if origin is Literal:
        choices = get_args(hint)
        if isinstance(value, str) and value in choices:
            return None
        return f"{place} must be one of {', '.join(repr(choice) for choice in choices)}, not {_shown(value)}"
    if not _stands_for(value, hint, name):
        return _wrong(place, _name(hint), value)
    if hint is str:
        return _text_problem(value, place, name)
    if origin is list:
        (item,) = get_args(hint)
        return _first(_type_problem(each, item, f"{place}[{index}]", "") for index, each in enumerate(value))
    if origin is dict:
        key, item = get_args(hint)
        return _first(_type_problem(each_key, key, f"{place} key {_shown(each_key)}", "")
                      or _type_problem(each, item, f"{place}[{_shown(each_key)}]", "")
                      for each_key, each in value.items())
    if origin is tuple:
        items = get_args(hint)
        if len(value) != len(items):
            return f"{place} must be a pair, not {_shown(value)}"
        return _first(_type_problem(each, item, f"{place}[{index}]", "")
                      for index, (each, item) in enumerate(zip(value, items)))
    if dataclasses.is_dataclass(hint):
        return _first(_type_problem(getattr(value, field), field_hint, f"{place}.{field}", field)
                      for field, field_hint in _fields(hint))
    return None


def _stands_for(value: Any, hint: Any, name: str) -> bool:
    """Whether ``value`` serves where the field ``name`` declares ``hint`` (its top level)."""
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if get_origin(hint) is Literal:
        return isinstance(value, str)
    kind = get_origin(hint) or hint
    if kind is bool:
        return isinstance(value, bool) or (type(value) is int and value in (0, 1))
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str) or (name in _PATH_FIELDS and isinstance(value, (bytes, os.PathLike)))
    if kind is list:
        return isinstance(value, (list, tuple, set, frozenset))
    if kind is tuple:
        return isinstance(value, (list, tuple))
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind)


def _text(value: Any) -> str:
    """The text a str field's value stands for: a path's, or a str subclass's own (an enum member's value)."""
    if isinstance(value, (bytes, os.PathLike)):
        return os.fsdecode(os.fspath(value))
    return str.__str__(value)


def _text_problem(value: Any, place: str, name: str) -> Optional[str]:
    """
    A NUL, or a lone surrogate, which no file's text holds: each failed deep
    in the check or at every request (a ValueError, a UnicodeEncodeError).
    A file's name may hold bytes that are no UTF-8, as Python escapes them.
    """
    text = _text(value)
    if "\x00" in text:
        return f"{place} holds a NUL character ({_shown(text)})"
    try:
        text.encode("utf-8", "surrogateescape" if name in _PATH_FIELDS else "strict")
    except UnicodeEncodeError as error:
        return f"{place} holds {error.object[error.start]!r}, which UTF-8 cannot encode"
    return None


def _name(hint: Any) -> str:
    if hint is type(None):
        return "None"
    kind = get_origin(hint) or hint
    return getattr(kind, "__name__", str(kind))


def _wrong(place: str, expected: str, value: Any) -> str:
    return f"{place} must be {expected}, not {type(value).__name__} ({_shown(value)})"


def _shown(value: Any) -> str:
    return _SHORT.repr(value)


def _first(problems: Iterator[Optional[str]]) -> Optional[str]:
    return next((problem for problem in problems if problem is not None), None)


# -- the served form ----------------------------------------------------------


def as_served(config: model.Config) -> model.Config:
    """
    ``config``, checked by ``built_problems``, changed in place to the
    types the server reads: a path object or bytes to text, a str enum
    member to its value (formatted, it would be its name), 0 and 1 to
    booleans (the server asks ``is False``), any sequence to a list, any
    mapping to a dict.
    """
    return _served(config, model.Config, "")


def _served(value: Any, hint: Any, name: str) -> Any:
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        arm = next(arm for arm in get_args(hint) if _stands_for(value, arm, name))
        return _served(value, arm, name)
    if hint is str or origin is Literal:
        return _text(value)
    if hint is bool:
        return bool(value)
    if hint is int:
        return int(value)
    if origin is list:
        (item,) = get_args(hint)
        return [_served(each, item, "") for each in value]
    if origin is dict:
        key, item = get_args(hint)
        return {_served(each_key, key, ""): _served(each, item, "") for each_key, each in value.items()}
    if origin is tuple:
        return tuple(_served(each, item, "") for each, item in zip(value, get_args(hint)))
    if dataclasses.is_dataclass(hint):
        changed = {field: _served(getattr(value, field), field_hint, field)
                   for field, field_hint in _fields(hint)}
        if type(value).__dataclass_params__.frozen:  # type: ignore[attr-defined]
            return dataclasses.replace(value, **changed)
        for field, served in changed.items():
            setattr(value, field, served)
        return value
    return value


# -- values -----------------------------------------------------------------

_Problem = tuple[str, Optional[model.Origin], str]


def _value_problems(config: model.Config) -> Iterator[_Problem]:
    """The parser's checks: each problem's place, where it was written (if it was), and what is wrong."""
    yield from _said("config.prefork", config.origins.get("prefork"), values.check_prefork(config.prefork))
    if config.protocols is not None:
        yield from _said("config.protocols", config.origins.get("protocols"),
                         values.check_server_protocols(config.protocols))
    facility = config.log.facility
    if values.syslog_facility(facility) != facility:
        # The parser keeps the name it reads as the logger uses it.
        known = values.syslog_facility(facility)
        advice = f"write {known!r}" if known else "use daemon, ftp, user or local0 to local7"
        yield "config.log.facility", None, f"{facility!r} is no syslog facility name ({advice})"
    for extension, media_type in (config.types or {}).items():
        yield from _said(f"config.types[{_shown(extension)}]", config.origins.get("types"),
                         values.check_header_text("media type", media_type))
    for number, server in enumerate(config.servers):
        at = f"config.servers[{number}]"
        for index, listen in enumerate(server.listens):
            yield from _said(f"{at}.listens[{index}].port", listen.origin or server.origin,
                             _port_problem(listen.port))
        yield from _options_problems(f"{at}.options", server.options, server.origin)
        for index, location in enumerate(server.locations):
            yield from _options_problems(f"{at}.locations[{index}].options", location.options,
                                         location.origin or server.origin)
        for index, proxy in enumerate(server.proxies):
            yield from _proxy_problems(f"{at}.proxies[{index}]", proxy, proxy.origin or server.origin)


def _options_problems(at: str, options: model.LocationOptions,
                      block: Optional[model.Origin]) -> Iterator[_Problem]:
    def where(directive: str) -> Optional[model.Origin]:
        return options.origins.get(directive, block)

    if options.block is not None:
        code, meta = options.block.code, options.block.meta
        problem = values.check_block_code(code) or values.check_block_meta(code, meta)
        yield from _said(f"{at}.block", where("block"), problem)
    if options.default_type is not None:
        yield from _said(f"{at}.default_type", where("default type"),
                         values.check_header_text("default type", options.default_type))
    if options.lang is not None:
        yield from _said(f"{at}.lang", where("lang"),
                         values.check_header_text("lang", options.lang, "text/gemini;lang="))
    if options.index is not None:
        yield from _said(f"{at}.index", where("index"), values.check_index(options.index))
    if options.strip is not None:
        yield from _said(f"{at}.strip", where("strip"), values.check_strip(options.strip))
    fastcgi = options.fastcgi
    if fastcgi is not None:
        origin = fastcgi.origin or block
        if fastcgi.strip is not None:
            yield from _said(f"{at}.fastcgi.strip", origin, values.check_fastcgi_strip(fastcgi.strip))
        for index, (name, value) in enumerate(fastcgi.params):
            yield from _said(f"{at}.fastcgi.params[{index}]", origin,
                             values.check_param("name", name) or values.check_param("value", value))
        if isinstance(fastcgi.address, model.FastCGITCP):
            yield from _said(f"{at}.fastcgi.address.port", origin, _port_problem(fastcgi.address.port))


def _proxy_problems(at: str, proxy: model.Proxy, origin: Optional[model.Origin]) -> Iterator[_Problem]:
    def where(directive: str) -> Optional[model.Origin]:
        return proxy.origins.get(directive, origin)

    if proxy.relay_to is None:
        yield f"{at}.relay_to", origin, "a proxy needs the host and port to relay to"
    else:
        yield from _said(f"{at}.relay_to", where("relay-to"), _port_problem(proxy.relay_to[1]))
    if (proxy.cert is None) != (proxy.key is None):
        yield f"{at}", origin, "a proxy needs both cert and key for a client certificate, or neither"
    if proxy.for_port is not None:
        yield from _said(f"{at}.for_port", origin, _port_problem(proxy.for_port))
    if proxy.protocols is not None:
        yield from _said(f"{at}.protocols", where("protocols"), values.check_protocols(proxy.protocols))


def _port_problem(port: Union[int, str]) -> Optional[str]:
    """A number out of range, written as a number or as digits (a service name is looked up later)."""
    if isinstance(port, str):
        return values.check_port_digits(port) if port.isascii() and port.isdigit() else None
    return values.check_port(port)


def _said(place: str, origin: Optional[model.Origin], problem: Optional[str]) -> Iterator[_Problem]:
    if problem is not None:
        yield place, origin, problem
