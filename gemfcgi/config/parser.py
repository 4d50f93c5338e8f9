"""
The gmid.conf parser: tokens in, a ``Config`` out, every problem reported.

It is a hand-written recursive-descent parser over ``Lexer`` tokens, one
method per directive, chosen by tables keyed on the directive's keyword. It
recovers at statement level: a statement that cannot be parsed is reported
and skipped up to its ``;``, newline or the ``}`` that closes its block, so a
single run lists every error in the file.

Choices where gmid's manual is silent or where we are deliberately kinder
(all covered by tests):

* relative ``include`` paths are resolved against the directory of the file
  that contains the ``include`` (``base_dir`` for ``parse_config`` text,
  the current directory when that is ``None``); gmid uses the process's
  current directory, which is used when the file is only there, with a
  warning, as is a file there that differs from the one read;
* a directive given twice in one block (``root``, ``cert``, ``lang``, ...)
  keeps the last value, as gmid 2.x does; ``alias`` and ``listen on``
  accumulate;
* every ``listen on`` of one address and port must agree on ``proxy-v1``
  (gmid's rule), checked across servers, including default listeners;
* a newline may separate ``server "x"``, ``location "x"``, ``proxy`` and
  ``types`` from their ``{``;
* ``listen on ADDR`` without ``port`` means port 1965;
* several ``fastcgi`` directives in one block merge: the last address (or
  ``off``) wins, params accumulate, the last ``strip`` wins; the
  ``FastCGI.origin`` is the line that set the address (or ``off``);
* ``fastcgi spawn "prog"`` and ``fastcgi endpoint "desc"`` are gemfcgi
  directives (gmid would read ``spawn`` as part of a socket path);
* ``types`` accepts keywords and numbers as extensions and ignores a media
  type written without extensions (system ``mime.types`` files have both);
  when two entries name the same extension the later one wins;
* ``syslog facility local0`` is accepted (gmid's parser forgets it); an
  unknown facility is a warning and keeps ``daemon``, as in gmid;
* a macro name that ``$``/``@`` cannot reach (e.g. ``a-b``) is a warning;
* a server name or alias written in punycode is a warning, as in gmid.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Callable, NoReturn, Optional, Union

from gemfcgi.config import values
from gemfcgi.config.checks import shadow_warnings
from gemfcgi.config.errors import ConfigError, Diagnostic, Report
from gemfcgi.config.paths import DIRECTORY_GONE, current_directory
from gemfcgi.config.lexer import KEYWORDS, Lexer, Token, TokenKind
from gemfcgi.config.model import (
    DEFAULT_FASTCGI_TCP_PORT,
    DEFAULT_PORT,
    BlockReturn,
    Config,
    FastCGI,
    FastCGIAddress,
    FastCGIEndpoint,
    FastCGISocket,
    FastCGISpawn,
    FastCGITCP,
    Listen,
    Location,
    LocationOptions,
    Origin,
    Proxy,
    Server,
)
from gemfcgi.regularfile import read_regular_file

__all__ = ["load_config", "parse_config"]

# The media types a ``types`` block starts from (gmid's hard-coded fallback).
_TYPES_FALLBACK = {"gmi": "text/gemini", "gemini": "text/gemini"}

_TOP_ONLY = frozenset(
    ["prefork", "user", "chroot", "protocols", "types", "ipv6", "port", "include", "server"]
)
_SERVER_ONLY = frozenset(["alias", "cert", "key", "ocsp", "listen", "location", "proxy", "param"])
_LOCATION_OPTIONS = frozenset(
    ["auto", "block", "default", "fastcgi", "index", "lang", "log", "require", "root", "strip"]
)

# What a 'lang' holds: language tags (RFC 5646's letters, digits and
# hyphens), several separated by commas, as the Gemini specification allows.
_LANGUAGE_TAGS = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?:,[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)*")

# What gmid 2.x removed, and what to write instead.
_REMOVED = {
    "cgi": "'cgi' was removed in gmid 2.0; use fastcgi (e.g. fcgiwrap) or proxy instead",
    "entrypoint": (
        "'entrypoint' was removed in gmid 2.0 together with CGI; run the program "
        "behind a FastCGI wrapper (e.g. fcgiwrap) and use 'fastcgi socket'"
    ),
    "env": "'env' was removed in gmid 2.0; use 'fastcgi param NAME = \"value\"' instead",
    "mime": "'mime' was removed in gmid 2.0; use 'types { TYPE EXT ... }' instead",
    "map": "'map' was removed in gmid 2.0; use 'types { TYPE EXT ... }' instead",
    "daemon": (
        "'daemon' is gmid 1.x's and was removed; twistd runs gemfcgi as a daemon unless given "
        "-n (under systemd, give -n): delete the line"
    ),
}

_KNOWN_DIRECTIVES = sorted(_TOP_ONLY | _SERVER_ONLY | _LOCATION_OPTIONS)
# What an unknown directive may look like to be quoted in its error: a line
# of an included file that is no configuration (a key, a password) is not.
_DIRECTIVE_LIKE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class _Abort(Exception):
    """The current statement is abandoned; its error is already reported."""


# The directives gmid takes at most once per server or location block, by keyword.
_ONCE_PER_BLOCK = {
    "cert": "cert", "key": "key", "ocsp": "ocsp", "root": "root", "index": "index", "lang": "lang",
    "default": "default type", "block": "block", "require": "require client ca",
}


def _origin(token: Token) -> Origin:
    return Origin(token.file, token.line)


def _read_text(path: str) -> str:
    # Bytes that are not UTF-8 stay what they were (surrogates), for the
    # lexer to point at, not U+FFFD that names a file nobody has.
    return read_regular_file(path).decode("utf-8", "surrogateescape")


class _Parser:
    """Reads one configuration; ``parse`` returns what it could build."""

    def __init__(
        self,
        text: str,
        filename: str,
        defines: Optional[dict[str, str]],
        base_dir: Optional[str],
        real_path: Optional[str],
        start_dir: Optional[str] = None,
    ) -> None:
        self.report = Report()
        # gmid's directory for relative includes: the one the server started
        # in, given, where a reload after twistd's --rundir reads the file.
        self.start_dir = start_dir
        self.command_line = dict(defines or {})
        self.macros: dict[str, str] = dict(self.command_line)
        self.lexer = Lexer(text, filename, self.macros, self.report.error, real_path)
        self.config = Config(source=filename)
        self.base_dirs: dict[str, Optional[str]] = {filename: base_dir}
        self.default_address = "*"
        self.default_port = DEFAULT_PORT
        # Servers with a ``listen`` line, even one with an error (said already).
        self._listening: set[int] = set()
        # Where each directive gmid takes once per block was first given,
        # by (the block's id, its keyword).
        self._given: dict[tuple[int, str], Origin] = {}
        self._port_lines: list[tuple[Token, int]] = []
        self.pending_include: Optional[tuple[str, str, str]] = None
        # The last spelling of each extension in ``types``, by its lower case.
        self._spellings: dict[str, str] = {}
        # The block a '}' closed last, and where: an unclosed block further
        # out is often one whose '}' this one took.
        self.last_closed: Optional[tuple[str, Token, Token]] = None

        self.top_statements: dict[str, Callable[[Token], None]] = {
            "include": self._include,
            "prefork": self._prefork,
            "user": self._user,
            "chroot": self._chroot,
            "protocols": self._protocols,
            "log": self._log,
            "types": self._types,
            "ipv6": self._ipv6,
            "port": self._port_directive,
            "server": self._server,
        }
        self.server_statements: dict[str, Callable[[Token, Server], None]] = {
            "alias": self._alias,
            "cert": self._cert,
            "key": self._key,
            "ocsp": self._ocsp,
            "listen": self._listen,
            "location": self._location,
            "proxy": self._proxy,
            "param": self._server_param,
        }
        self.location_options: dict[str, Callable[[Token, LocationOptions], None]] = {
            "auto": self._auto_index,
            "block": self._block_directive,
            "default": self._default_type,
            "fastcgi": self._fastcgi,
            "index": self._index,
            "lang": self._lang,
            "log": self._log_switch,
            "require": self._require_client_ca,
            "root": self._root,
            "strip": self._strip,
        }
        self.proxy_options: dict[str, Callable[[Token, Proxy], None]] = {
            "relay-to": self._relay_to,
            "cert": self._proxy_cert,
            "key": self._proxy_key,
            "sni": self._proxy_sni,
            "use-tls": self._proxy_use_tls,
            "verifyname": self._proxy_verifyname,
            "protocols": self._proxy_protocols,
            "proxy-v1": self._proxy_v1,
            "require": self._proxy_require_client_ca,
        }

    # -- reporting --------------------------------------------------------

    def _error(self, token: Token, message: str) -> None:
        self.report.error(token.file, token.line, message)

    def _warn(self, token: Token, message: str) -> None:
        self.report.warning(token.file, token.line, message)

    def _fail(self, token: Token, message: str) -> NoReturn:
        if token.kind is not TokenKind.ERROR:
            self._error(token, message)
        raise _Abort

    def _check(self, token: Token, problem: Optional[str]) -> None:
        """Report ``problem`` (from ``values``) if there is one, and carry on."""
        if problem is not None:
            self._error(token, problem)

    # -- small pieces of grammar -----------------------------------------

    def _peek(self) -> Token:
        return self.lexer.peek()

    def _next(self) -> Token:
        return self.lexer.next()

    def _string(self, after: str, unjoined: frozenset[str] = frozenset()) -> str:
        """
        One string; strings (and bare words) written next to each other
        join, but for a bare word of ``unjoined``, left for the caller.
        """
        token = self._peek()
        if not token.is_string():
            hint = ""
            if token.kind is TokenKind.KEYWORD:
                hint = f' (it is a reserved word; write "{token.text}" in quotes)'
            elif token.kind is TokenKind.NUMBER:
                hint = f' (write "{token.text}" in quotes)'
            self._fail(token, f"expected a string after {after}, found {token.describe()}{hint}")
        parts = [self._next().text]
        length = len(parts[0])
        while self._peek().is_string():
            if self._peek().kind is TokenKind.WORD and self._peek().text in unjoined:
                break
            parts.append(self._next().text)
            length += len(parts[-1])
            if length > values.MAX_STRING:
                # Joined macros can double at every definition: stop before
                # the memory runs out, at the line that went too far.
                self._fail(token, f"string longer than {values.MAX_STRING} characters after {after}")
        return "".join(parts)

    def _number(self, after: str) -> int:
        token = self._peek()
        if token.kind is not TokenKind.NUMBER:
            self._fail(token, f"expected a number after {after}, found {token.describe()}")
        self._next()
        return token.number

    def _boolean(self, after: str) -> bool:
        token = self._peek()
        if not token.is_keyword("on", "off"):
            self._fail(token, f"expected 'on' or 'off' after {after}, found {token.describe()}")
        self._next()
        return token.text == "on"

    def _keyword(self, word: str, after: str, example: str) -> Token:
        token = self._peek()
        if not token.is_keyword(word):
            self._fail(
                token,
                f"expected '{word}' after {after}, found {token.describe()} (write: {example})",
            )
        return self._next()

    def _port(self, after: str) -> Union[int, str]:
        """``N`` (checked) or ``"service"``."""
        token = self._peek()
        if token.kind is TokenKind.NUMBER:
            self._next()
            self._check(token, values.check_port(token.number))
            return token.number
        if token.is_string():
            name = self._string(after)
            if name.isascii() and name.isdigit():
                # A quoted number, or a macro holding one: gmid takes it as the number.
                problem = values.check_port_digits(name)
                self._check(token, problem)
                return values.port_number(name) if problem is None else name
            return name
        self._fail(
            token,
            f"expected a port number or service name after {after}, found {token.describe()}",
        )

    def _optional_port(self, default: Union[int, str]) -> Union[int, str]:
        if self._peek().is_keyword("port"):
            self._next()
            return self._port("'port'")
        return default

    def _open_block(self, what: str) -> None:
        """Expect ``{``, allowing newlines before it."""
        token = self._peek()
        while token.kind is TokenKind.END and token.text == "\n":
            self._next()
            token = self._peek()
        if not token.is_symbol("{"):
            self._fail(token, f"expected '{{' to open {what}, found {token.describe()}")
        self._next()

    def _at_statement_end(self) -> bool:
        token = self._peek()
        return token.kind in (TokenKind.END, TokenKind.EOF) or token.is_symbol("}")

    def _end_statement(self, directive: Token) -> None:
        token = self._peek()
        if token.kind is TokenKind.END:
            self._next()
        elif not (token.kind is TokenKind.EOF or token.is_symbol("}")):
            self._fail(
                token,
                f"unexpected {token.describe()} after '{directive.text}'; "
                "end the statement with a newline or ';'",
            )

    def _recover(self, depth: int = 0) -> None:
        """Skip the rest of a bad statement, including any block it opened."""
        while True:
            token = self._peek()
            if token.kind is TokenKind.EOF:
                return
            if token.is_symbol("}"):
                if depth == 0:
                    return
                depth -= 1
            elif token.is_symbol("{"):
                depth += 1
            elif token.kind is TokenKind.END and depth == 0:
                self._next()
                return
            self._next()

    def _taken_brace(self, opener: Token) -> str:
        """
        A hint for an unclosed ``opener``: the last block closed inside it
        may be the one that lacks its '}', having taken the outer one's.
        """
        if self.last_closed is None:
            return ""
        inner, inner_opener, closer = self.last_closed
        if inner_opener.file != opener.file or inner_opener.line <= opener.line:
            return ""
        return (f" (or else {inner}, opened at line {inner_opener.line}, lacks its own: the '}}' "
                f"at line {closer.line} closed it)")

    def _statements(
        self, opener: Optional[Token], what: str, statement: Callable[[Token], None]
    ) -> None:
        """
        Parse statements until the ``}`` that closes ``opener`` (or EOF at top level).

        Each statement's first token is consumed and given to ``statement``.
        """
        while True:
            token = self._peek()
            if token.kind is TokenKind.END:
                self._next()
                continue
            if token.kind is TokenKind.EOF:
                if opener is not None:
                    self._error(opener, f"{what} is never closed: add a '}}' at its end"
                                + self._taken_brace(opener))
                return
            if opener is not None and token.is_symbol("}"):
                self._next()
                self.last_closed = (what, opener, token)
                return
            self._next()
            try:
                statement(token)
                if opener is None:
                    # Inside a block gmid's grammar lets the next directive
                    # follow on the same line, with no ';' (its regress
                    # suite writes `lang it location "/en/*" { lang en }`).
                    self._end_statement(token)
            except _Abort:
                self.pending_include = None
                # A statement that starts with '{' has already opened a block.
                self._recover(depth=1 if token.is_symbol("{") else 0)
            if self.pending_include is not None:
                self.lexer.push_file(*self.pending_include)
                self.pending_include = None

    # -- rejecting what does not belong -----------------------------------

    def _reject(self, token: Token, scope: str) -> NoReturn:
        """Explain why ``token`` cannot start a statement in ``scope``."""
        word = token.text
        if token.kind is TokenKind.SYMBOL:
            if word == "}":
                self._fail(token, "unexpected '}': no block is open here")
            self._fail(token, f"unexpected '{word}' where a directive should start")
        if token.kind is TokenKind.STRING and not _DIRECTIVE_LIKE.fullmatch(word):
            self._fail(token, f"expected a directive, found a string of {len(word)} characters")
        if token.kind in (TokenKind.STRING, TokenKind.NUMBER):
            self._fail(token, f"expected a directive, found {token.describe()}")
        if token.kind in (TokenKind.WORD, TokenKind.KEYWORD) and word in _REMOVED:
            self._fail(token, _REMOVED[word])
        if token.kind is TokenKind.WORD:
            if self._peek().is_symbol("="):
                self._fail(
                    token, f"macro '{word}' must be defined at top level, outside any block"
                )
            self._fail(token, self._unknown(word))
        self._fail(token, self._misplaced(word, scope))

    @staticmethod
    def _unknown(word: str) -> str:
        if not _DIRECTIVE_LIKE.fullmatch(word) and word.lower() not in KEYWORDS:
            # A line of a file that is no configuration (an included key):
            # not quoted back into the log.
            return (f"unknown directive: {len(word)} characters that are no directive name "
                    "(is this a configuration file?)")
        message = f"unknown directive '{word}'"
        if word.lower() in KEYWORDS and word.lower() != word:
            return f"{message} (directives are lower case: '{word.lower()}')"
        close = difflib.get_close_matches(word, _KNOWN_DIRECTIVES, n=1)
        if close:
            return f"{message} (did you mean '{close[0]}'?)"
        return message

    @staticmethod
    def _misplaced(word: str, scope: str) -> str:
        if scope == "top":
            if word in _SERVER_ONLY:
                return f"'{word}' is only allowed inside a server block"
            if word in _LOCATION_OPTIONS:
                return f"'{word}' is only allowed inside a server or location block"
        elif scope == "server":
            if word == "server":
                return "server blocks cannot be nested: close the previous server with '}'"
            if word == "include":
                return "'include' is only allowed at top level and inside types { }"
            if word in _TOP_ONLY:
                return f"'{word}' is a global option: move it outside the server block"
        elif scope == "location":
            if word == "param":
                return (
                    "bare 'param' is not allowed in a location; "
                    "write 'fastcgi param NAME = \"value\"'"
                )
            if word == "location":
                return "'location' is not allowed in a location: locations cannot be nested"
            if word in _SERVER_ONLY:
                return f"'{word}' is not allowed in a location (it is a server option)"
            if word in _TOP_ONLY:
                return f"'{word}' is not allowed in a location (it is a global option)"
        return f"'{word}' is not valid here"

    # -- top level --------------------------------------------------------

    def parse(self) -> Config:
        self._statements(None, "the file", self._top_statement)
        self._finish()
        return self.config

    def _top_statement(self, token: Token) -> None:
        if token.is_string() and self._peek().is_symbol("="):
            self._define_macro(token)
            return
        if token.kind is TokenKind.KEYWORD:
            if self._peek().is_symbol("="):
                self._fail(token, f"'{token.text}' is a reserved word and cannot be a macro name")
            handler = self.top_statements.get(token.text)
            if handler is not None:
                handler(token)
                return
        self._reject(token, "top")

    def _define_macro(self, name_token: Token) -> None:
        self._next()  # '='
        name = name_token.text
        if any(c.isspace() for c in name) or not name:
            self._fail(name_token, f"macro name '{name}' cannot be empty or contain spaces")
        value = self._string(f"'{name} ='")
        if not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
            self._warn(
                name_token,
                f"macro '{name}' can never be used: $ and @ only take letters, digits and '_'",
            )
        if name not in self.command_line:
            self.macros[name] = value

    def _include(self, token: Token) -> None:
        name = self._string("'include'")
        path = self._include_path(token, name)
        try:
            real = os.path.realpath(path)
            if self.lexer.is_open(real):
                self._fail(token, f'include loop: "{name}" is already being read')
            text = _read_text(path)
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            self._fail(token, f'cannot read included file "{path}": {reason}')
        self.base_dirs.setdefault(path, os.path.dirname(path))
        self.pending_include = (text, path, real)

    def _include_path(self, token: Token, name: str) -> str:
        """
        Where a relative include is read from: beside the including file,
        so that a configuration reads the same files whatever directory the
        server starts in. gmid reads it from its current directory instead;
        a file found only there is read, as gmid would, and where both
        exist and differ, the warning says which one gmid would have read.
        """
        if os.path.isabs(name):
            return name
        base = self.base_dirs.get(token.file)
        cwd = self.start_dir or current_directory()
        if cwd is None:
            # Removed since the start: only beside the including file.
            if base is None:
                self._fail(token, f'cannot read included file "{name}": {DIRECTORY_GONE}')
            return os.path.normpath(os.path.join(base, name))
        beside = os.path.normpath(os.path.join(base if base is not None else cwd, name))
        as_gmid = os.path.normpath(os.path.join(cwd, name))
        if base is None or beside == as_gmid or not os.path.exists(as_gmid):
            return beside
        if not os.path.exists(beside):
            self._warn(
                token,
                f'"{name}" is not beside this file, so it is read from the current directory'
                f' ("{as_gmid}"), as gmid reads it: give its absolute path to read it from'
                " wherever the server starts",
            )
            return as_gmid
        if os.path.realpath(beside) != os.path.realpath(as_gmid):
            self._warn(
                token,
                f'"{name}" is read from beside this file ("{beside}"); gmid would read'
                f' "{as_gmid}", from the current directory: give an absolute path',
            )
        return beside

    def _prefork(self, token: Token) -> None:
        n = self._number("'prefork'")
        self._check(token, values.check_prefork(n))
        self.config.prefork = n
        self.config.origins["prefork"] = _origin(token)

    def _user(self, token: Token) -> None:
        self.config.user = self._string("'user'")
        self.config.origins["user"] = _origin(token)

    def _chroot(self, token: Token) -> None:
        self.config.chroot = self._string("'chroot'")
        self.config.origins["chroot"] = _origin(token)

    def _protocols(self, token: Token) -> None:
        text = self._string("'protocols'")
        problem = values.check_server_protocols(text)
        self._check(token, problem)
        if problem is None:
            # Only versions written out by name: "all" and "legacy" promise
            # no particular one.
            dropped = sorted(set(values.protocol_words(text)) & {"tlsv1.0", "tlsv1.1"})
            if dropped:
                self._warn(token, f"protocols \"{text}\": {' and '.join(dropped)} not offered: "
                           "gemfcgi offers TLS 1.2 and 1.3 only")
        self.config.protocols = text
        self.config.origins["protocols"] = _origin(token)

    def _ipv6(self, token: Token) -> None:
        on = self._boolean("'ipv6'")
        # The port may come later ('port N'), or not at all: the warning for
        # a server without 'listen on' gives the whole line.
        address = "*" if on else "0.0.0.0"
        self._warn(
            token,
            f"'ipv6' is deprecated; in each server block write 'listen on {address}' and its port "
            f"instead (listen on {address} port N)",
        )
        self.default_address = "*" if on else "0.0.0.0"

    def _port_directive(self, token: Token) -> None:
        n = self._number("'port'")
        self._check(token, values.check_port(n))
        # Said once the file is read: an 'ipv6 off' after it changes the
        # address to write.
        self._port_lines.append((token, n))
        self.default_port = n

    # -- log { } ----------------------------------------------------------

    def _log(self, token: Token) -> None:
        following = self._peek()
        if following.is_symbol("{"):
            self._next()
            self._statements(token, "log { }", self._log_option)
        elif following.is_keyword("on", "off"):
            self._fail(
                token,
                "'log on|off' is a server or location option; at top level write "
                "log { access \"file\"; style combined; syslog off }",
            )
        elif self._at_statement_end():
            self._fail(following, "expected a log option or '{' after 'log'")
        else:
            self._log_option(self._next())

    def _log_option(self, token: Token) -> None:
        settings = self.config.log
        if token.is_keyword("access"):
            settings.access = self._string("'access'")
            settings.access_origin = _origin(token)
        elif token.is_keyword("style"):
            style = self._peek()
            if not (style.is_string() and style.text in values.LOG_STYLES):
                self._fail(
                    style,
                    f"invalid log style {style.describe()} "
                    f"(use {', '.join(values.LOG_STYLES[:-1])} or {values.LOG_STYLES[-1]})",
                )
            self._next()
            settings.style = style.text  # type: ignore[assignment]
        elif token.is_keyword("syslog"):
            following = self._peek()
            if following.is_keyword("off", "on"):
                self._next()
                settings.syslog = following.text == "on"
            elif following.is_keyword("facility"):
                self._next()
                name_token = self._peek()
                if name_token.kind is TokenKind.KEYWORD:  # "user" is reserved
                    self._next()
                    name = name_token.text
                else:
                    name = self._string("'syslog facility'")
                facility = values.syslog_facility(name)
                if facility is None:
                    self._warn(
                        token,
                        f"unknown syslog facility '{name}', ignored: the facility stays "
                        f"{settings.facility} (use daemon, ftp, user or local0 to local7)",
                    )
                else:
                    settings.facility = facility
                settings.syslog = True
            else:
                settings.syslog = True
        else:
            self._fail(
                token, f"unknown log option {token.describe()} (use access, style or syslog)"
            )

    # -- types { } ----------------------------------------------------------

    def _types(self, token: Token) -> None:
        self._open_block("types")
        if self.config.types is None:
            self.config.types = dict(_TYPES_FALLBACK)
            self._spellings = {extension: extension for extension in _TYPES_FALLBACK}
        self._statements(token, "types { }", self._media_type)

    def _media_type(self, token: Token) -> None:
        if token.is_keyword("include"):
            self._include(token)
            return
        if not token.is_string():
            self._fail(
                token, f"expected a media type such as text/gemini, found {token.describe()}"
            )
        assert self.config.types is not None
        self._check(token, values.check_header_text("media type", token.text))
        if "/" not in token.text.split(";")[0]:
            self._warn(token, f"media type {token.text!r} is not type/subtype (text/gemini): "
                       "clients may not know what to do with its files")
        while not self._at_statement_end():
            extension = self._peek()
            if extension.kind not in (
                TokenKind.WORD, TokenKind.STRING, TokenKind.NUMBER, TokenKind.KEYWORD
            ):
                self._fail(
                    extension,
                    f"expected a file extension for {token.text}, found {extension.describe()}",
                )
            self._next()
            if "." in extension.text or "/" in extension.text:
                # As in gmid, a file's extension is what follows the last
                # "." of its name: one holding either is never looked up.
                self._warn(extension, f"extension {extension.text!r} holds "
                           f"{'.' if '.' in extension.text else '/'!r}, and only what follows "
                           f"the last '.' of a file's name is looked up: no file is served "
                           f"as {token.text} by it")
            self._same_extension_ignoring_case(extension, token.text)
            self.config.types[extension.text] = token.text

    def _same_extension_ignoring_case(self, extension: Token, media_type: str) -> None:
        """
        Extensions match ignoring case here, not in gmid: an entry that
        another spelling of its extension already gave a different type
        wins for both, where gmid kept them apart.
        """
        assert self.config.types is not None
        written = self._spellings.setdefault(extension.text.lower(), extension.text)
        if written == extension.text:
            return
        # The other spelling goes, so the last entry wins whatever the order.
        earlier = self.config.types.pop(written, None)
        if earlier is not None and earlier != media_type:
            self._warn(extension, f"extension {extension.text!r} is {written!r} (given "
                       f"{earlier}) ignoring case, as extensions are matched here: "
                       f"files of both are served as {media_type}")
        self._spellings[extension.text.lower()] = extension.text

    # -- server { } -------------------------------------------------------

    def _server(self, token: Token) -> None:
        name = self._string("'server'")
        server = Server(name=name, origin=_origin(token))
        self._open_block(f'server "{name}"')
        self._statements(
            token, f'server "{name}"', lambda t: self._server_statement(t, server)
        )
        self._check_server(token, server)
        self.config.servers.append(server)

    def _server_statement(self, token: Token, server: Server) -> None:
        if token.kind is TokenKind.KEYWORD:
            self._only_once(token, server)
            handler = self.server_statements.get(token.text)
            if handler is not None:
                handler(token, server)
                return
            if token.text == "log" and self._peek().is_symbol("{"):
                self._fail(
                    token,
                    "'log { }' is a global setting: move it outside the server block "
                    "(inside a server, write 'log on' or 'log off')",
                )
            option = self.location_options.get(token.text)
            if option is not None:
                option(token, server.options)
                return
        self._reject(token, "server")

    def _only_once(self, token: Token, block: object) -> None:
        """
        gmid refuses a second ``lang`` (``cert``, ``root``...) in one block;
        taking the last silently hid a mistake (a renewed ``cert`` line
        added below the old one).
        """
        name = _ONCE_PER_BLOCK.get(token.text)
        if name is None:
            return
        first = self._given.get((id(block), token.text))
        if first is None:
            self._given[(id(block), token.text)] = _origin(token)
        else:
            self._error(token, f"{name} specified more than once in this block "
                        f"(first at {first.file}:{first.line})")

    def _check_server(self, token: Token, server: Server) -> None:
        if server.cert is None:
            self._error(
                token, f'server "{server.name}": missing cert (add: cert "/path/to/cert.pem")'
            )
        if server.key is None:
            self._error(
                token, f'server "{server.name}": missing key (add: key "/path/to/key.pem")'
            )
        for name in [server.name, *server.aliases]:
            if "xn--" in name.lower():
                try:
                    # In lower case: the codec leaves "Xn--" as it is.
                    decoded = name.lower().encode("ascii").decode("idna")
                    suggestion = f' ("{decoded}")' if decoded != name.lower() else ""
                except (UnicodeError, ValueError):
                    suggestion = ""
                self._warn(
                    token,
                    f'"{name}" looks like punycode: write the decoded name{suggestion}, '
                    "names are matched after decoding",
                )
            if "[:upper:]" in name:
                self._warn(
                    token,
                    f'"{name}": host names are compared in lower case, so [:upper:] matches no '
                    "letter of one: write [:lower:] or [:alpha:]",
                )

    def _alias(self, token: Token, server: Server) -> None:
        alias = self._string("'alias'")
        server.aliases.append(alias)
        server.origins.setdefault(f"alias {alias}", _origin(token))

    def _absolute(self, token: Token, directive: str) -> str:
        path = self._string(f"'{directive}'")
        self._check(token, values.check_absolute(directive, path))
        return path

    def _cert(self, token: Token, server: Server) -> None:
        server.cert = self._absolute(token, "cert")
        server.origins["cert"] = _origin(token)

    def _key(self, token: Token, server: Server) -> None:
        server.key = self._absolute(token, "key")
        server.origins["key"] = _origin(token)

    def _ocsp(self, token: Token, server: Server) -> None:
        server.ocsp = self._absolute(token, "ocsp")
        server.origins["ocsp"] = _origin(token)

    def _listen(self, token: Token, server: Server) -> None:
        self._listening.add(id(server))
        self._keyword("on", "'listen'", "listen on * port 1965")
        if self._peek().is_symbol("*"):
            self._next()
            address = "*"
        else:
            address = self._string("'listen on'", unjoined=frozenset({"tls"}))
        if self._peek().kind is TokenKind.WORD and self._peek().text == "tls":
            # httpd's 'listen on * tls port 443': here every listener is TLS.
            tls = self._next()
            port = self._optional_port(DEFAULT_PORT)
            proxy = self._peek()
            proxy_v = f" {proxy.text}" if proxy.is_keyword("proxy-v1") or proxy.is_keyword("proxy-v2") else ""
            self._fail(tls, "'tls' in 'listen on': every listener speaks TLS here, as in gmid; "
                       f"write: listen on {address} port {port}{proxy_v}")
        port = self._optional_port(DEFAULT_PORT)
        proxy_v1 = False
        # gemfcgi's addition: proxy-v2 (the PROXY protocol reader accepts
        # both versions, so either word turns it on).
        if self._peek().is_keyword("proxy-v1") or self._peek().is_keyword("proxy-v2"):
            self._next()
            proxy_v1 = True
        server.listens.append(Listen(address, port, proxy_v1, _origin(token)))

    def _location(self, token: Token, server: Server) -> None:
        pattern = self._string("'location'")
        location = Location(pattern, origin=_origin(token))
        self._open_block(f'location "{pattern}"')
        self._statements(
            token,
            f'location "{pattern}"',
            lambda t: self._location_statement(t, location.options),
        )
        server.locations.append(location)

    def _location_statement(self, token: Token, options: LocationOptions) -> None:
        if token.kind is TokenKind.KEYWORD:
            self._only_once(token, options)
            option = self.location_options.get(token.text)
            if option is not None:
                option(token, options)
                return
        self._reject(token, "location")

    def _server_param(self, token: Token, server: Server) -> None:
        name, value = self._param_pair(token)
        self._warn(
            token,
            f"'param' at server level is deprecated; write 'fastcgi param {name} = \"...\"'",
        )
        if server.options.fastcgi is None:
            server.options.fastcgi = FastCGI(origin=_origin(token))
        server.options.fastcgi.params.append((name, value))

    # -- location options (also valid at server level) --------------------

    def _auto_index(self, token: Token, options: LocationOptions) -> None:
        self._keyword("index", "'auto'", "auto index on")
        options.auto_index = self._boolean("'auto index'")

    def _block_directive(self, token: Token, options: LocationOptions) -> None:
        block = BlockReturn()
        if self._peek().is_keyword("return"):
            self._next()
            block.code = self._number("'block return'")
            self._check(token, values.check_block_code(block.code))
            if self._peek().is_string():
                block.meta = self._string(f"'block return {block.code}'")
                self._check(token, values.check_block_meta(block.code, block.meta))
                empty = values.block_meta_may_be_empty(block.code, block.meta)
                if empty is not None:
                    self._warn(token, empty)
            elif 30 <= block.code <= 39:
                self._error(
                    token,
                    f"missing meta for block return {block.code}: a redirect needs a target "
                    f'(write: block return {block.code} "/new%p")',
                )
        options.block = block

    def _default_type(self, token: Token, options: LocationOptions) -> None:
        self._keyword("type", "'default'", 'default type "text/plain"')
        options.default_type = self._string("'default type'")
        self._check(token, values.check_header_text("default type", options.default_type))

    def _index(self, token: Token, options: LocationOptions) -> None:
        index = self._string("'index'")
        self._check(token, values.check_index(index))
        options.index = index

    def _lang(self, token: Token, options: LocationOptions) -> None:
        options.lang = self._string("'lang'")
        self._check(token, values.check_header_text("lang", options.lang, "text/gemini;lang="))
        if options.lang and not _LANGUAGE_TAGS.fullmatch(options.lang):
            # A quote left open takes the next lines with it: gmid is as
            # silent, and every page carries them in its header.
            self._warn(token, f"lang {options.lang!r} is no language tag (en, en-GB, or several: "
                       "en,fr): text/gemini replies carry it as written")

    def _log_switch(self, token: Token, options: LocationOptions) -> None:
        options.log = self._boolean("'log'")

    def _require_client_ca(self, token: Token, options: LocationOptions) -> None:
        self._keyword("client", "'require'", 'require client ca "/etc/ssl/ca.pem"')
        self._keyword("ca", "'require client'", 'require client ca "/etc/ssl/ca.pem"')
        options.require_client_ca = self._absolute(token, "require client ca")
        options.origins["require client ca"] = _origin(token)

    def _root(self, token: Token, options: LocationOptions) -> None:
        options.root = self._string("'root'")
        options.origins["root"] = _origin(token)

    def _strip(self, token: Token, options: LocationOptions) -> None:
        n = self._number("'strip'")
        self._check(token, values.check_strip(n))
        options.strip = n

    # -- fastcgi ------------------------------------------------------------

    def _fastcgi(self, token: Token, options: LocationOptions) -> None:
        if options.fastcgi is None:
            options.fastcgi = FastCGI(origin=_origin(token))
        fastcgi = options.fastcgi
        following = self._peek()
        if following.is_symbol("{"):
            self._next()
            self._statements(
                token, "fastcgi { }", lambda t: self._fastcgi_option(t, fastcgi, True)
            )
        elif following.is_keyword("off"):
            self._next()
            fastcgi.off = True
            fastcgi.address = None
            fastcgi.origin = _origin(token)
        elif self._at_statement_end():
            self._fail(
                following,
                "expected socket, spawn, endpoint, param, strip, off or '{' after 'fastcgi'",
            )
        else:
            self._fastcgi_option(self._next(), fastcgi, False, directive=token)

    def _fastcgi_option(
        self,
        token: Token,
        fastcgi: FastCGI,
        in_block: bool,
        directive: Optional[Token] = None,
    ) -> None:
        where = directive or token
        if token.is_keyword("socket"):
            if self._peek().is_keyword("tcp"):
                self._next()
                host = self._string("'socket tcp'")
                port = self._optional_port(DEFAULT_FASTCGI_TCP_PORT)
                self._set_address(fastcgi, FastCGITCP(host, port), where)
            else:
                path = self._string("'socket'")
                kind, _, rest = path.partition(":")
                if kind in ("unix", "tcp", "tcp6"):
                    # An endpoint string's habit: read as a path, it names a
                    # directory "unix:" that no one made.
                    socket_path = rest.removeprefix("path=").partition(":")[0]
                    instead = (f'fastcgi socket "{socket_path}", or ' if kind == "unix" and socket_path
                               else 'fastcgi socket tcp "HOST" port N, or ' if kind != "unix" else "")
                    self._warn(where, f'socket "{path}" is read as a path: write {instead}the '
                               f'string as fastcgi endpoint "{path}"')
                self._set_address(fastcgi, FastCGISocket(path), where)
        elif token.kind is TokenKind.WORD and token.text == "spawn":
            self._set_address(fastcgi, FastCGISpawn(self._string("'spawn'")), where)
        elif token.kind is TokenKind.WORD and token.text == "endpoint":
            self._set_address(fastcgi, FastCGIEndpoint(self._string("'endpoint'")), where)
        elif token.is_keyword("param"):
            fastcgi.params.append(self._param_pair(token))
        elif token.is_keyword("strip"):
            n = self._number("'strip'")
            self._check(token, values.check_fastcgi_strip(n))
            fastcgi.strip = n
        elif token.is_keyword("tcp"):
            self._fail(
                token,
                "'fastcgi tcp' is the gmid 1.x syntax, removed in 2.0; "
                "write 'fastcgi socket tcp \"host\" port N'",
            )
        elif token.is_keyword("off") and in_block:
            self._fail(token, "'off' cannot go inside fastcgi { }; write 'fastcgi off' on its own")
        elif token.is_string() and not in_block:
            parts = [token.text]
            while self._peek().is_string():
                parts.append(self._next().text)
            path = "".join(parts)
            self._warn(
                where,
                f"'fastcgi \"{path}\"' is deprecated; write 'fastcgi socket \"{path}\"'",
            )
            self._set_address(fastcgi, FastCGISocket(path), where)
        else:
            self._fail(
                token,
                f"unknown fastcgi option {token.describe()} "
                "(use socket, spawn, endpoint, param or strip)",
            )

    def _set_address(self, fastcgi: FastCGI, address: FastCGIAddress, token: Token) -> None:
        fastcgi.address = address
        fastcgi.off = False
        fastcgi.origin = _origin(token)

    def _param_pair(self, token: Token) -> tuple[str, str]:
        name = self._string("'param'")
        equals = self._peek()
        if not equals.is_symbol("="):
            self._fail(
                equals,
                f"expected '=' after param {name}, found {equals.describe()} "
                f'(write: param {name} = "value")',
            )
        self._next()
        value = self._string(f"'param {name} ='")
        self._check(token, values.check_param("name", name))
        self._check(token, values.check_param("value", value))
        return name, value

    # -- proxy --------------------------------------------------------------

    def _proxy(self, token: Token, server: Server) -> None:
        proxy = Proxy(origin=_origin(token))
        while True:
            following = self._peek()
            if following.is_keyword("proto"):
                self._next()
                proxy.proto = self._string("'proto'")
            elif following.is_keyword("for-host"):
                self._next()
                proxy.for_host = self._string("'for-host'")
                self._warn_host_port(following, "for-host", proxy.for_host)
                # gmid: once for-host is given, the port to match defaults to 1965.
                proxy.for_port = self._optional_port(DEFAULT_PORT)
            else:
                break
        self._open_block("proxy")
        self._statements(token, "proxy { }", lambda t: self._proxy_statement(t, proxy))
        if proxy.relay_to is None:
            self._error(token, 'proxy without relay-to (add: relay-to "host" port 1965)')
        if (proxy.cert is None) != (proxy.key is None):
            self._error(
                token, "proxy needs both cert and key for a client certificate, or neither"
            )
        server.proxies.append(proxy)

    def _proxy_statement(self, token: Token, proxy: Proxy) -> None:
        if token.kind is TokenKind.KEYWORD:
            option = self.proxy_options.get(token.text)
            if option is not None:
                option(token, proxy)
                directive = "require client ca" if token.text == "require" else token.text
                proxy.origins.setdefault(directive, _origin(token))
                return
        if token.kind in (TokenKind.WORD, TokenKind.KEYWORD) and token.text in _REMOVED:
            self._fail(token, _REMOVED[token.text])
        self._fail(
            token,
            f"unknown proxy option {token.describe()} (use relay-to, cert, key, sni, use-tls, "
            "verifyname, protocols, proxy-v1 or require client ca)",
        )

    def _warn_host_port(self, token: Token, directive: str, host: str) -> None:
        old = values.old_host_port(host)
        if old is not None:
            self._warn(
                token,
                f"{directive} \"{host}\": gmid 2.x reads ':{old[1]}' as part of the host name; "
                f"write {directive} \"{old[0]}\" port {old[1]}",
            )

    def _relay_to(self, token: Token, proxy: Proxy) -> None:
        host = self._string("'relay-to'")
        self._warn_host_port(token, "relay-to", host)
        port = self._optional_port(DEFAULT_PORT)
        proxy.relay_to = (host, port)

    def _proxy_cert(self, token: Token, proxy: Proxy) -> None:
        proxy.cert = self._absolute(token, "cert")

    def _proxy_key(self, token: Token, proxy: Proxy) -> None:
        proxy.key = self._absolute(token, "key")

    def _proxy_sni(self, token: Token, proxy: Proxy) -> None:
        proxy.sni = self._string("'sni'")

    def _proxy_use_tls(self, token: Token, proxy: Proxy) -> None:
        proxy.use_tls = self._boolean("'use-tls'")

    def _proxy_verifyname(self, token: Token, proxy: Proxy) -> None:
        proxy.verifyname = self._boolean("'verifyname'")

    def _proxy_protocols(self, token: Token, proxy: Proxy) -> None:
        proxy.protocols = self._string("'protocols'")
        self._check(token, values.check_protocols(proxy.protocols))

    def _proxy_v1(self, token: Token, proxy: Proxy) -> None:
        proxy.proxy_v1 = True

    def _proxy_require_client_ca(self, token: Token, proxy: Proxy) -> None:
        self._keyword("client", "'require'", 'require client ca "/etc/ssl/ca.pem"')
        self._keyword("ca", "'require client'", 'require client ca "/etc/ssl/ca.pem"')
        proxy.require_client_ca = self._absolute(token, "require client ca")

    # -- whole-file rules -----------------------------------------------------

    def _finish(self) -> None:
        for token, n in self._port_lines:
            self._warn(token, f"'port' is deprecated; write 'listen on {self.default_address} port {n}' "
                       "in each server block instead")
        for server in self.config.servers:
            if not server.listens and id(server) not in self._listening:
                assert server.origin is not None
                self.report.warning(
                    server.origin.file,
                    server.origin.line,
                    f'server "{server.name}" has no \'listen on\'; listening on '
                    f"{self.default_address} port {self.default_port} "
                    f"(add: listen on {self.default_address} port {self.default_port})",
                )
                server.listens.append(
                    Listen(self.default_address, self.default_port, origin=server.origin)
                )
        self._check_proxy_v1_agreement()

    def _check_proxy_v1_agreement(self) -> None:
        """Every ``listen`` on one address and port must agree on proxy-v1 (gmid's rule)."""
        first: dict[tuple[str, str], Listen] = {}
        for server in self.config.servers:
            for listen in server.listens:
                key = (listen.address, str(listen.port))
                earlier = first.setdefault(key, listen)
                if earlier.proxy_v1 != listen.proxy_v1 and listen.origin is not None:
                    self.report.error(
                        listen.origin.file,
                        listen.origin.line,
                        f"listen on {listen.address} port {listen.port}: "
                        + ("a PROXY header (proxy-v1 or proxy-v2) is read here but not"
                           if listen.proxy_v1 else
                           "no PROXY header (proxy-v1 or proxy-v2) is read here but one is")
                        + f" at {earlier.origin}; every listen on the same address and port must agree",
                    )


def _parse(
    text: str,
    filename: str,
    defines: Optional[dict[str, str]],
    base_dir: Optional[str],
    real_path: Optional[str],
    start_dir: Optional[str] = None,
) -> tuple[Config, list[Diagnostic]]:
    parser = _Parser(text, filename, defines, base_dir, real_path, start_dir)
    config = parser.parse()
    report = parser.report
    if report.errors:
        raise ConfigError(report.errors, report.warnings)
    return config, report.warnings + shadow_warnings(config)


def parse_config(
    text: str,
    filename: str = "<string>",
    defines: Optional[dict[str, str]] = None,
    base_dir: Optional[str] = None,
) -> tuple[Config, list[Diagnostic]]:
    """
    Parse gmid.conf ``text``; return the config and its warnings.

    ``filename`` names the text in diagnostics and becomes ``config.source``.
    Relative ``include`` paths are resolved against ``base_dir`` (the current
    directory when ``None``). ``defines`` are ``-D NAME=VALUE`` macros; they
    win over definitions in the file. Raises ``ConfigError`` with every error.
    """
    return _parse(text, filename, defines, base_dir, real_path=None)


def load_config(
    path: Union[str, "os.PathLike[str]"], defines: Optional[dict[str, str]] = None, start_dir: Optional[str] = None
) -> tuple[Config, list[Diagnostic]]:
    """
    Read and parse the configuration file at ``path`` (and what it includes).

    Relative includes are resolved against the directory of the including
    file; one found only in ``start_dir`` (by default the current
    directory), where gmid looks, is read from there. A file that cannot be
    read is a ``ConfigError`` at ``path:1``.
    """
    # Kept as text: it names the file in every Origin and diagnostic.
    path = os.fspath(path)
    try:
        text = _read_text(path)
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(
            [Diagnostic(path, 1, f"cannot read the configuration file: {reason}")]
        ) from e
    return _parse(text, path, defines, os.path.dirname(path), os.path.realpath(path), start_dir)
