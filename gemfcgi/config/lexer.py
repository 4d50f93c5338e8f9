"""
The gmid.conf lexer: characters in, tokens out, with macros and includes.

It follows gmid 2.x ``parse.y`` closely so that existing files lex the same:

* ``#`` starts a comment up to the end of the line;
* a newline or ``;`` ends a statement (both become an ``END`` token);
* ``"..."`` and ``'...'`` are strings; inside them a backslash escapes the
  quote character, a space or a tab, a newline (with or without a backslash
  before it) is dropped, and any other backslash is kept as written (gmid's
  rule, so ``"a\\\\"`` is still unterminated, as in gmid);
* outside quotes a backslash-newline continues the line;
* a bare word starts with a letter, digit, ``:`` or ``_`` and continues with
  letters, digits and any punctuation except ``( ) { } ! = # , ;``;
* a number is ``-?digits`` followed by the end of the word; ``1965abc`` is a
  word. One past a C ``long long`` is an error, as in gmid. (gmid also
  lets ``/`` end a number; we let a number end wherever a word cannot
  continue, which also accepts ``strip 1;``.)
* words in ``KEYWORDS`` are reserved and come out as ``KEYWORD`` tokens;
* ``$name`` becomes one ``STRING`` token holding the macro's value;
* ``@name`` feeds the macro's value back into the lexer, so it can hold
  whole directives. Tokens that come from it carry the file and line of the
  ``@name``. Unlike gmid, ``$`` and ``@`` are expanded inside an ``@`` value
  too; a macro that expands itself is an error.

``Lexer`` is a token stream with one token of lookahead. ``push_file`` makes
the tokens of an included file come next (ahead of a token already peeked),
and the end of an included file produces an ``END`` token so the last
statement in it ends there.

A ``\\r`` is treated as a space, so files saved with CRLF line ends work
(gmid rejects them).
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional, Union

# gmid 2.x keyword table (``parse.y``), minus nothing: ``to-ext`` is reserved
# although no rule uses it. ``spawn`` and ``endpoint`` are NOT here: they are
# gemfcgi's additions and only mean something right after ``fastcgi``.
KEYWORDS = frozenset(
    """
    access alias auto block ca cert cgi chroot client default facility
    fastcgi for-host include index ipv6 key lang listen location log ocsp off
    on param port prefork proto protocols proxy proxy-v1 proxy-v2 relay-to require
    return root server sni socket strip style syslog tcp to-ext type types
    use-tls user verifyname
    """.split()
)

# Characters that may follow the first one of a bare word: gmid's
# ``allowed_in_string`` (alnum, or punctuation other than these).
_NOT_IN_WORD = frozenset("(){}!=#,;")
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_SPACE = frozenset(" \t\r\f\v")
_DIGITS = frozenset("0123456789")
# What bytes that are not UTF-8 became as the file was read (surrogateescape).
_UNDECODED = re.compile("[\udc80-\udcff]")

# Macros may hold macros; this bounds the depth so a chain cannot run away.
MAX_MACRO_DEPTH = 32
# And what one ``@name`` written in the file may expand to, the macros in
# it with it: macros that each use the one below twice double at each level.
MAX_MACRO_EXPANSION = 1 << 20
# What all the ``@name`` uses of a configuration may expand to together:
# MAX_MACRO_EXPANSION, and this many characters more for each character of
# its files (includes too). A bound on the whole alone failed 600 uses of a
# 2 KB macro (33 times the file); one on each use alone let a line of
# 540,000 characters written 40 times in 573 bytes take 27 s. This way
# macros make a file at most about this many times slower to read.
MACRO_EXPANSION_PER_CHARACTER = 64
# gmid's numbers are C ``long long``.
MAX_NUMBER = (1 << 63) - 1


def _long_long(text: str) -> Optional[int]:
    """
    ``-?digits`` as a C ``long long``, ``None`` past one; its digits are
    counted first (Python's ``int`` refuses more than 4300 of them).
    """
    digits = text.lstrip("-").lstrip("0") or "0"
    if len(digits) > len(str(MAX_NUMBER)):
        return None
    value = -int(digits) if text.startswith("-") else int(digits)
    return value if -MAX_NUMBER - 1 <= value <= MAX_NUMBER else None


def _word_start(c: str) -> bool:
    return c.isalnum() or c in ":_"


def _word_char(c: str) -> bool:
    return c.isalnum() or (c in _ASCII_PUNCT and c not in _NOT_IN_WORD)


def _name_char(c: str) -> bool:
    """Characters of a macro name after ``$`` or ``@`` (ASCII, as in C)."""
    return c.isascii() and (c.isalnum() or c == "_")


class TokenKind(enum.Enum):
    WORD = "word"  # a bare word that is not a keyword
    STRING = "string"  # a quoted string, or the value of a $macro
    NUMBER = "number"
    KEYWORD = "keyword"
    SYMBOL = "symbol"  # any other single character: { } = * ...
    END = "end"  # newline, ';' or the end of an included file
    EOF = "eof"
    ERROR = "error"  # the lexer already reported a problem here


@dataclass(frozen=True)
class Token:
    """A token and where it was written."""

    kind: TokenKind
    text: str
    file: str
    line: int

    @property
    def number(self) -> int:
        value = _long_long(self.text)
        assert value is not None, "the lexer makes no NUMBER past a long long"
        return value

    def is_keyword(self, *words: str) -> bool:
        return self.kind is TokenKind.KEYWORD and self.text in words

    def is_symbol(self, symbol: str) -> bool:
        return self.kind is TokenKind.SYMBOL and self.text == symbol

    def is_string(self) -> bool:
        """Whether gmid's grammar would accept this token as a STRING."""
        return self.kind in (TokenKind.WORD, TokenKind.STRING)

    def describe(self) -> str:
        """How to name this token in an error message."""
        if self.kind is TokenKind.END:
            return "';'" if self.text == ";" else "end of line"
        if self.kind is TokenKind.EOF:
            return "end of file"
        if self.kind is TokenKind.STRING:
            return f'string "{self.text}"'
        if self.kind is TokenKind.NUMBER:
            return f"number {self.text}"
        if self.kind is TokenKind.KEYWORD:
            return f"keyword '{self.text}'"
        return f"'{self.text}'"


ErrorSink = Callable[[str, int, str], None]


class _TextSource:
    """
    Characters still to lex from a file or a macro value.

    ``fixed_line`` is set for ``@macro`` values: their tokens report the
    line of the ``@name``, not a line inside the value.
    """

    def __init__(
        self,
        text: str,
        file: str,
        line: int = 1,
        *,
        fixed_line: bool = False,
        real_path: Optional[str] = None,
        macro: Optional[str] = None,
        included: bool = False,
    ) -> None:
        self.text = text
        self.file = file
        self.pos = 0
        self.line = line
        self.fixed_line = fixed_line
        self.real_path = real_path
        self.macro = macro
        self.included = included
        # An included file whose end has been given as an END token.
        self.ended = False

    def peek(self, quoted: bool = False) -> str:
        """
        The next character, or ``""`` at the end.

        Backslash-newline pairs are skipped (they continue the line). Outside
        quotes any other backslash is dropped too: gmid returns the character
        after it as if the backslash were not there.
        """
        text = self.text
        while True:
            if text.startswith("\\\n", self.pos) or text.startswith("\\\r\n", self.pos):
                self.pos += 2 if text[self.pos + 1] == "\n" else 3
                if not self.fixed_line:
                    self.line += 1
            elif not quoted and self.pos + 1 < len(text) and text[self.pos] == "\\":
                self.pos += 1
            else:
                break
        return text[self.pos] if self.pos < len(text) else ""

    def advance(self) -> str:
        c = self.text[self.pos]
        self.pos += 1
        if c == "\n" and not self.fixed_line:
            self.line += 1
        return c


class _TokenSource:
    """Tokens already lexed that must come back (the lookahead before an include)."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens


_Source = Union[_TextSource, _TokenSource]


class _Pushed(enum.Enum):
    PUSHED = "pushed"


_PUSHED = _Pushed.PUSHED


class Lexer:
    """
    A stream of tokens over a file, its includes and its macros.

    ``macros`` is shared with the parser, which adds definitions as it reads
    them; a token is only lexed when the parser asks for it, so a macro is
    usable from the statement after its definition.
    """

    def __init__(
        self,
        text: str,
        file: str,
        macros: dict[str, str],
        on_error: ErrorSink,
        real_path: Optional[str] = None,
    ) -> None:
        self.macros = macros
        self._on_error = on_error
        self._stack: list[_Source] = [_TextSource(text, file, real_path=real_path)]
        self._lookahead: Optional[Token] = None
        self._expanded = 0
        self._expanded_in_all = 0
        self._clean_values: set[str] = set()
        self._read = len(text)
        # The real paths of the files on the stack, kept as it changes: an
        # include asks whether its file is one (a loop), and looking
        # through the stack made nested includes quadratic.
        self._open: Counter[str] = Counter([real_path] if real_path is not None else [])

    # -- the token stream -------------------------------------------------

    def peek(self) -> Token:
        if self._lookahead is None:
            self._lookahead = self._produce()
        return self._lookahead

    def next(self) -> Token:
        token = self.peek()
        self._lookahead = None
        return token

    def push_file(self, text: str, file: str, real_path: Optional[str]) -> None:
        """Make an included file's tokens come next, before any peeked token."""
        if self._lookahead is not None:
            self._stack.append(_TokenSource([self._lookahead]))
            self._lookahead = None
        self._stack.append(_TextSource(text, file, real_path=real_path, included=True))
        self._read += len(text)
        if real_path is not None:
            self._open[real_path] += 1

    def is_open(self, real_path: str) -> bool:
        """Whether the file at ``real_path`` is being read (an include of it is a loop)."""
        return self._open[real_path] > 0

    def _pop(self) -> None:
        source = self._stack.pop()
        if isinstance(source, _TextSource) and source.real_path is not None:
            self._open[source.real_path] -= 1

    # -- producing tokens -------------------------------------------------

    def _produce(self) -> Token:
        while True:
            source = self._stack[-1]
            if isinstance(source, _TokenSource):
                if source.tokens:
                    return source.tokens.pop(0)
                self._pop()
                continue
            token = self._lex(source)
            if token is _PUSHED:
                continue  # an @macro was pushed: lex from it
            if token is not None:
                return token
            if len(self._stack) == 1:
                return Token(TokenKind.EOF, "", source.file, max(source.line, 1))
            if source.included and not source.ended:
                # The end of an included file ends its last statement. The
                # file stays open until the token after: an ``include`` on
                # its last line is pushed above it, and a loop is seen.
                source.ended = True
                return Token(TokenKind.END, "", source.file, max(source.line, 1))
            self._pop()

    def _token(self, kind: TokenKind, text: str, source: _TextSource, line: int) -> Token:
        if _UNDECODED.search(text):
            shown = text.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            return self._error(source, line, f'"{shown}" is not UTF-8: gemfcgi reads its '
                               "configuration as UTF-8")
        return Token(kind, text, source.file, line)

    def _error(self, source: _TextSource, line: int, message: str) -> Token:
        self._on_error(source.file, line, message)
        return Token(TokenKind.ERROR, "", source.file, line)

    def _lex(self, source: _TextSource) -> Union[Token, None, _Pushed]:
        """
        The next token of ``source``, ``None`` once it is used up, or
        ``_PUSHED`` when an ``@macro`` was pushed and lexing must restart.
        """
        while True:
            c = source.peek()
            while c in _SPACE and c:
                source.advance()
                c = source.peek()
            line = source.line
            if c == "":
                return None
            if c == "#":
                while c not in ("\n", ""):
                    source.advance()
                    c = source.peek()
                continue
            if c in "\n;":
                source.advance()
                return self._token(TokenKind.END, c, source, line)
            if c in "$@":
                return self._macro(source, line)
            if c in "\"'":
                return self._quoted(source, line)
            if c == "-" or (c.isascii() and c.isdigit()):
                number = self._number(source, line)
                if number is not None:
                    return number
                c = source.peek()
                if c == "-":
                    source.advance()
                    return self._token(TokenKind.SYMBOL, "-", source, line)
            if _word_start(c):
                return self._word(source, line)
            source.advance()
            return self._token(TokenKind.SYMBOL, c, source, line)

    def _quoted(self, source: _TextSource, line: int) -> Token:
        quote = source.advance()
        chars: list[str] = []
        # A NUL is said once the string is read to its end: the lexer then
        # goes on after it, not inside it (a "missing cert" for the line
        # after, a "never closed" for a block that is).
        nul = False
        while True:
            c = source.peek(quoted=True)
            if c == "":
                return self._error(
                    source, line, f"unterminated string: missing closing {quote}"
                )
            source.advance()
            if c == quote:
                break
            if c == "\n" or (c == "\r" and source.text.startswith("\n", source.pos)):
                # gmid drops it (and counts the line): a string may be wrapped.
                continue
            if c == "\\":
                following = source.text[source.pos : source.pos + 1]
                if following in (quote, " ", "\t"):
                    source.advance()
                    c = following
            elif c == "\0":
                nul = True
            chars.append(c)
        if nul:
            return self._error(source, line, "NUL character in a string")
        return self._token(TokenKind.STRING, "".join(chars), source, line)

    def _number(self, source: _TextSource, line: int) -> Optional[Token]:
        """A number, or ``None`` (position unchanged) when this is a word."""
        start_pos, start_line = source.pos, source.line
        chars = [source.advance()]
        while source.peek() in _DIGITS:
            chars.append(source.advance())
        text = "".join(chars)
        following = source.peek()
        if text != "-" and (following == "" or not _word_char(following)):
            if _long_long(text) is None:
                shown = text if len(text) <= 40 else f"{text[:20]}...{text[-10:]}"
                return self._error(source, line, f'"{shown}" invalid number: too large')
            return self._token(TokenKind.NUMBER, text, source, line)
        source.pos, source.line = start_pos, start_line
        return None

    def _word(self, source: _TextSource, line: int) -> Token:
        chars = [source.advance()]
        while True:
            c = source.peek()
            if not c or not _word_char(c):
                break
            chars.append(source.advance())
        word = "".join(chars)
        kind = TokenKind.KEYWORD if word in KEYWORDS else TokenKind.WORD
        return self._token(kind, word, source, line)

    def _macro(self, source: _TextSource, line: int) -> Union[Token, _Pushed]:
        """``$name`` gives a STRING; ``@name`` pushes its value."""
        sigil = source.advance()
        chars: list[str] = []
        while _name_char(source.peek()):
            chars.append(source.advance())
        name = "".join(chars)
        if not name:
            return self._error(
                source, line, f"'{sigil}' must be followed by a macro name (letters, digits, '_')"
            )
        value = self.macros.get(name)
        if value is None:
            return self._error(
                source,
                line,
                f"macro '{name}' is not defined (define it first: {name} = \"value\")",
            )
        if sigil == "$":
            if value in self._clean_values:
                return Token(TokenKind.STRING, value, source.file, line)
            token = self._token(TokenKind.STRING, value, source, line)
            if token.kind is TokenKind.STRING:
                # Looked through once per value, not at each use: a value
                # of 60,000 characters used 100,000 times took 19 s.
                self._clean_values.add(value)
            return token
        expanding = [s.macro for s in self._stack if isinstance(s, _TextSource) and s.macro]
        if name in expanding:
            return self._error(source, line, f"macro '{name}' expands itself through @{name}")
        if len(expanding) >= MAX_MACRO_DEPTH:
            return self._error(source, line, f"macros nested too deeply at @{name}")
        if not expanding:
            self._expanded = 0  # a use written in the file: its expansion is counted anew
        self._expanded += len(value)
        self._expanded_in_all += len(value)
        in_all = MAX_MACRO_EXPANSION + MACRO_EXPANSION_PER_CHARACTER * self._read
        if self._expanded > MAX_MACRO_EXPANSION or self._expanded_in_all > in_all:
            # What the macros being expanded still hold is dropped: each of
            # its @names would be this error again.
            while isinstance(self._stack[-1], _TextSource) and self._stack[-1].macro:
                self._pop()
            if self._expanded > MAX_MACRO_EXPANSION:
                return self._error(source, line, f"macros expand to more than {MAX_MACRO_EXPANSION} "
                                   f"characters at @{name}")
            return self._error(source, line, f"macros expand to more than {in_all} characters in all "
                               f"at @{name} ({MAX_MACRO_EXPANSION} and {MACRO_EXPANSION_PER_CHARACTER} "
                               "more for each character of the configuration)")
        self._stack.append(
            _TextSource(value, source.file, line, fixed_line=True, macro=name)
        )
        return _PUSHED
