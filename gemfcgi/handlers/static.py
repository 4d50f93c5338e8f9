"""
Static files and directories under a location's root.

The request path is already decoded and free of dot segments; what is
left to defend is symlinks, so every path is resolved and must stay under
the resolved root. Only regular files are ever opened for reading, and they
are opened non-blocking so that a FIFO can never stall the reactor.
"""

from __future__ import annotations

import collections
import errno
import io
import os
import stat
import time
import unicodedata
from contextvars import ContextVar
from functools import lru_cache
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Optional
from urllib.parse import quote

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from gemfcgi.gemini import status
from gemfcgi.gemini.request import Request, can_be_requested
from gemfcgi.mime import GEMINI, MimeTable
from gemfcgi.pagecache import SETTLED, PageCache
from gemfcgi.routing import PathSettings
from gemfcgi.textlog import LogLimiter, MonotonicClock, printable

if TYPE_CHECKING:
    from gemfcgi.server import GeminiProtocol

# Large reads keep the per-chunk Python and TLS record overhead small; the
# transport pauses us as soon as one chunk fills its buffer.
CHUNK_SIZE = 256 * 1024
# Bytes written in one reactor turn before yielding to other connections,
# for clients whose socket keeps accepting.
MAX_BYTES_PER_TURN = 4 * 1024 * 1024

URL_SAFE = "/-._~!$&'()*+,;=:@"

log = Logger()

# Whether the request being served may be named in the log: under 'log off'
# a warning names no file it asked for (its path spells out the request's).
_request_logged: ContextVar[bool] = ContextVar("request_logged", default=True)
_REQUEST_FIELDS = frozenset({"path", "real", "opened"})
UNLOGGED_FILE = "a file (log off)"

# What an open (or a directory read) fails with when the file is not there
# for this server to serve: 51, as in gmid. Anything else is the server's
# trouble, not the page's: a crawler told 51 would drop a page that exists.
NOT_THERE = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENAMETOOLONG,
     errno.ENXIO, errno.EISDIR}
)
# Short of something for now: 41, as for a connection beyond the limit.
SHORT_OF = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.EAGAIN})

# Linux's view of a process's descriptors, and its flag to open a file as
# a place only (see ``_open_regular``).
_PROC_FD = "/proc/self/fd/"
_O_PATH: Optional[int] = getattr(os, "O_PATH", None)


def path_for_meta(path: str, room: int) -> str:
    """
    ``path`` as written into a reply's META: percent-encoded, or as an IRI
    where that takes more than ``room`` bytes.
    """
    encoded = quote(path, safe=URL_SAFE)
    return encoded if len(encoded) <= room else iri_path(path)


def iri_path(path: str, loose: bool = False) -> str:
    """
    ``path`` with its printable non-ASCII characters as they are, as clients
    may send them. A percent-encoded UTF-8 character takes three times its
    bytes, so a path that came in a 1024-byte request can need more than a
    META may hold; as an IRI it needs no more than the request did. With
    ``loose``, the spaces and format characters an IRI may hold (no-break
    and ideographic spaces, joiners) stay as they are too: only controls,
    and what no IRI holds, are escaped.
    """
    return "".join(
        char if ord(char) > 127 and (char.isprintable() or (loose and _iri_may_hold(char)))
        else quote(char, safe=URL_SAFE)
        for char in path
    )


def _iri_may_hold(char: str) -> bool:
    # RFC 3987's ucschar: no controls, surrogates, private use or unassigned.
    return unicodedata.category(char) not in ("Cc", "Cs", "Co", "Cn")


# Under a shortage every request may fail: a few lines, and a count of the rest.
_failures = LogLimiter(MonotonicClock(), limit=5, window=10.0)
# Symlinks out of the root are any client's to ask for: a limit of their
# own, so that asking for one again and again hides no other warning.
_symlinks_out = LogLimiter(MonotonicClock(), limit=5, window=10.0)


@lru_cache(maxsize=256)
def real_root(root: str) -> str:
    """
    ``root`` with its symlinks resolved. Roots are few and fixed by the
    configuration, so each is resolved once per configuration, not per
    request: a reload resolves them again (``forget_roots``), so a root
    that is a symlink switched to a new release is followed then, as gmid
    opens its roots again on reload.
    """
    return os.path.realpath(root)


def forget_roots() -> None:
    """A new configuration: resolve every root again on its next use."""
    real_root.cache_clear()
    _listings.clear()


def strip_components(path: str, count: int) -> str:
    """``path`` without its first ``count`` components (gemfcgi strips exactly N)."""
    if count <= 0:
        return path
    parts = path.split("/")[1:]
    rest = parts[count:]
    return "/" + "/".join(rest)


def _resolve(root: str, path: str) -> tuple[Optional[str], Optional[os.stat_result]]:
    """
    The real path for ``path`` under ``root`` and its ``lstat``, if it exists.

    The root is resolved once; below it, each component is looked at with
    one ``lstat``, so a page two levels deep costs two system calls rather
    than one per component of the whole absolute path. Only when a symlink
    is met is the whole path resolved and checked against the root.
    """
    resolved_root = real_root(root)
    current = resolved_root.rstrip("/")
    info: Optional[os.stat_result] = None
    for part in path.split("/"):
        if not part:
            continue
        if part == "..":
            # Paths from requests are normalised; one joined with a
            # configured name (``index``) must not climb out either.
            return current, None
        current = f"{current}/{part}"
        try:
            info = os.lstat(current)
        except OSError:
            # Missing or unreadable: nothing below it can be served either.
            return current, None
        if stat.S_ISLNK(info.st_mode):
            asked = os.path.join(resolved_root, path.lstrip("/"))
            try:
                real = os.path.realpath(asked)
            except (OSError, RecursionError):
                # A link changed into something else while it was read, or
                # a chain of links longer than Python's recursion allows.
                return None, None
            if is_under(real, resolved_root):
                try:
                    # Followed by the kernel, which refuses a chain of more
                    # than 40 links (ELOOP), as an open would.
                    return real, os.stat(asked)
                except OSError:
                    return real, None
            # gmid follows it: a capsule moved here would get 51 for its
            # pages without a word.
            _warn_limited("{path}: a symlink on it leads outside the root {root} (to {real}): "
                          "answered 51", path=asked, root=resolved_root, real=real,
                          limiter=_symlinks_out)
            return None, None
    if info is None:
        # The root itself.
        try:
            info = os.stat(resolved_root)
        except OSError:
            return resolved_root, None
    return current or "/", info


def is_under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both resolved)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _opened_path(fd: int) -> Optional[str]:
    """
    Where what ``fd`` has open lies now, as the kernel tells it; ``None``
    where it cannot (no ``/proc``, as in a chroot).
    """
    try:
        where = os.readlink(f"{_PROC_FD}{fd}")
        # The kernel marks what was removed since it was opened; a name
        # that only ends so (a root "r (deleted)") is no such mark.
        if where.endswith(" (deleted)") and os.fstat(fd).st_nlink == 0:
            return where.removesuffix(" (deleted)")
    except OSError:
        return None
    return where


def _outside(fd: int, path: str, root: str) -> bool:
    """
    Whether ``fd``, opened by ``path``, has something outside ``root`` open.

    ``path`` was checked before it was opened, but a directory on it can be
    swapped for a symlink in between (``rename`` is atomic): anyone who may
    write a directory inside the root could then have any file this process
    may read served. So what was opened is checked too. Where the kernel
    cannot say (no ``/proc``, as in a chroot), the chroot bounds what can
    be opened, as it bounds gmid.
    """
    opened = _opened_path(fd)
    if opened is None or is_under(opened, root):
        return False
    _warn_limited(
        "{path} led outside the root {root} as it was opened ({opened}): a symlink changed "
        "under it since it was looked up; answered 51",
        path=path, root=root, opened=opened,
    )
    return True


def _open_regular(path: str, root: str) -> int:
    """
    A descriptor open for reading on ``path``, if it is a regular file under
    ``root`` (resolved) when it is opened; ``OSError`` otherwise (``ENOENT``
    outside the root, ``ENXIO`` for what is not a regular file).

    Where Linux allows, ``path`` is first opened with ``O_PATH``, which
    reads nothing and opens no device or FIFO; only once that is known to
    be a regular file under the root is it opened for reading, through
    ``/proc``, so the file checked is the file read.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if _O_PATH is None:
        return os.open(path, flags)
    handle = os.open(path, _O_PATH | os.O_CLOEXEC)
    try:
        if _outside(handle, path, root):
            raise OSError(errno.ENOENT, "outside the root", path)
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise OSError(errno.ENXIO, "not a regular file", path)
        try:
            return os.open(f"{_PROC_FD}{handle}", flags)
        except FileNotFoundError:
            return os.open(path, flags)  # no /proc: as without O_PATH
    finally:
        os.close(handle)


def with_lang(mime: str, settings: PathSettings) -> str:
    """gmid appends ``lang`` only to a bare ``text/gemini``."""
    if settings.lang and mime == GEMINI:
        return f"{mime};lang={settings.lang}"
    return mime


def serve_static(
    client: "GeminiProtocol",
    request: Request,
    settings: PathSettings,
    mime: MimeTable,
    pages: Optional[PageCache] = None,
) -> None:
    logged = _request_logged.set(settings.log)
    try:
        _serve_static(client, request, settings, mime, pages)
    finally:
        _request_logged.reset(logged)


def _serve_static(
    client: "GeminiProtocol",
    request: Request,
    settings: PathSettings,
    mime: MimeTable,
    pages: Optional[PageCache],
) -> None:
    if settings.root is None:
        client.respond(status.NOT_FOUND, "not found")
        return
    path = strip_components(request.path, settings.strip)
    real, info = _resolve(settings.root, path)
    if real is None or info is None:
        _say_if_the_root_is_gone(settings.root)
        client.respond(status.NOT_FOUND, "not found")
        return
    if stat.S_ISDIR(info.st_mode):
        if not request.path.endswith("/"):
            query = "" if request.query is None else "?" + request.query
            room = status.MAX_META_BYTES - 1 - len(query.encode("utf-8"))
            target = path_for_meta(request.path, room) + "/" + query
            if len(target.encode("utf-8")) > status.MAX_META_BYTES:
                # Spaces other than ASCII's and format characters, escaped
                # above, can triple a path that filled its request: then
                # they are written as the client could send them, which
                # takes no more than its request did.
                target = iri_path(request.path, loose=True) + "/" + query
            if len(target.encode("utf-8")) > status.MAX_META_BYTES:
                client.respond(status.BAD_REQUEST, "path too long to redirect to its directory")
                return
            client.respond(status.REDIRECT_PERMANENT, target)
            return
        index_path = os.path.join(path, settings.index)
        index, index_info = _resolve(settings.root, index_path)
        if index is not None and index_info is not None and stat.S_ISREG(index_info.st_mode):
            # The type goes by the name asked for, as in gmid, not by
            # where a symlink leads (index.gmi -> README.md is text/gemini).
            index_mime = with_lang(mime.lookup(index_path, settings.default_type), settings)
            # An index that cannot be opened is as good as none (gmid).
            unreadable = (
                (lambda: _send_listing(client, real, request.path, settings))
                if settings.auto_index
                else None
            )
            _send_file(client, index, index_mime, index_info, pages, real_root(settings.root),
                       unreadable)
        elif settings.auto_index:
            # Titled by the path asked for, not the one left after ``strip``
            # (gmid): the page's links are relative to it.
            _send_listing(client, real, request.path, settings)
        else:
            # The index may be there, in a root this process may not read.
            _say_if_the_root_is_gone(settings.root)
            client.respond(status.NOT_FOUND, "not found")
        return
    if not stat.S_ISREG(info.st_mode) or path.endswith("/"):
        # A file asked for as a directory is not there, as open("file/")
        # fails and gmid answers: served, its relative links would resolve
        # under a directory that does not exist.
        client.respond(status.NOT_FOUND, "not found")
        return
    _send_file(client, real, with_lang(mime.lookup(path, settings.default_type), settings), info,
               pages, real_root(settings.root))


def _send_file(
    client: "GeminiProtocol",
    path: str,
    mime: str,
    info: os.stat_result,
    pages: Optional[PageCache],
    root: str,
    unreadable: Optional[Callable[[], None]] = None,
) -> None:
    """
    ``path``, whose ``lstat`` (``stat`` behind a symlink) is ``info``, under
    the resolved ``root``; ``unreadable`` answers instead of ``51`` when it
    cannot be opened.
    """
    if pages is not None:
        body = pages.get(path, info)
        if body is not None:
            client.send_header(status.SUCCESS, mime, body)
            client.finish()
            return
    try:
        fd = _open_regular(path, root)
    except OSError as error:
        if error.errno not in NOT_THERE:
            _cannot_read(client, path, error)
        elif unreadable is not None:
            unreadable()
        else:
            client.respond(status.NOT_FOUND, "not found")
        return
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            os.close(fd)
            client.respond(status.NOT_FOUND, "not found")
            return
        body = None
        if opened.st_size <= CHUNK_SIZE:
            # Most capsule pages: one read, one write, no producer to register.
            body = os.read(fd, CHUNK_SIZE + 1)
            if len(body) > CHUNK_SIZE:
                body = None
                os.lseek(fd, 0, os.SEEK_SET)
    except OSError as error:
        # An I/O error, most often met on the first read rather than the open.
        os.close(fd)
        _cannot_read(client, path, error)
        return
    if body is not None:
        os.close(fd)
        if pages is not None:
            pages.put(path, opened, body)
        client.send_header(status.SUCCESS, mime, body)
        client.finish()
        return
    FileSender(client, os.fdopen(fd, "rb", buffering=0), opened.st_size, path,
               mtime_ns=opened.st_mtime_ns).start(mime)


def directory_listing(real_dir: str, path: str, root: str) -> bytes:
    """
    gmid's auto index of ``real_dir`` under the resolved ``root``: a title,
    ``=> ./name`` links, directories with ``/``, in gmid's order (by the
    name's bytes, the ``/`` not counted, ``..`` among them). A name no request can reach (one
    that is not UTF-8, or holds a control character: the request would get
    ``59``) is left out, where gmid links it.
    """
    title = path if path.endswith("/") else path + "/"
    lines = [f"# Index of {title}", ""]
    fd = os.open(real_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _outside(fd, real_dir, root):
            raise OSError(errno.ENOENT, "outside the root", real_dir)
        with os.scandir(fd) as entries:
            found = [(entry.name, entry.is_dir(follow_symlinks=False))
                     for entry in entries if can_be_requested(entry.name)]
    finally:
        os.close(fd)
    if title != "/":
        # Sorted among the names, as gmid's alphasort puts it: after " x" and "-x".
        found.append(("..", True))
    # UTF-8 keeps the order of code points: sorting the names sorts their bytes.
    found.sort()
    lines.extend(
        f"=> ./{quote(name, safe=URL_SAFE)}/" if is_dir else f"=> ./{quote(name, safe=URL_SAFE)}"
        for name, is_dir in found
    )
    return ("\n".join(lines) + "\n").encode("utf-8")


def _send_listing(
    client: "GeminiProtocol", real_dir: str, path: str, settings: PathSettings
) -> None:
    try:
        body = _listing(real_dir, path, real_root(settings.root))
    except OSError as error:
        if error.errno not in NOT_THERE:
            _cannot_read(client, real_dir, error)
        else:
            client.respond(status.NOT_FOUND, "not found")
        return
    if len(body) > CHUNK_SIZE:
        # Streamed as a file is, from the one copy its readers share: sent
        # whole, each slow reader held the megabytes of a large directory's
        # listing in TLS records of its own.
        FileSender(client, io.BytesIO(body), len(body), real_dir).start(with_lang(GEMINI, settings))
        return
    client.send_header(status.SUCCESS, with_lang(GEMINI, settings), body)
    client.finish()


# Listings larger than a chunk, kept while their directory is unchanged
# (its identity and times, as the page cache keeps files, once settled),
# the most recent few: a directory of 40,000 entries takes a fifth of a
# second to list, and every client reading its listing shares one copy.
LISTINGS_KEPT = 4
_listings: "collections.OrderedDict[tuple, bytes]" = collections.OrderedDict()


def _listing(real_dir: str, path: str, root: str) -> bytes:
    info = os.stat(real_dir)
    key = (real_dir, path, root, info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)
    body = _listings.get(key)
    if body is not None:
        _listings.move_to_end(key)
        return body
    body = directory_listing(real_dir, path, root)
    if len(body) > CHUNK_SIZE and time.time() - max(info.st_mtime, info.st_ctime) >= SETTLED:
        _listings[key] = body
        while len(_listings) > LISTINGS_KEPT:
            _listings.popitem(last=False)
    return body


def _warn_limited(text: str, limiter: Optional[LogLimiter] = None, **fields: Any) -> None:
    """
    A warning under a rate limit (by default the shortage's, ``_failures``),
    with the count it dropped. For a request under ``log off``, the files
    it names (``_REQUEST_FIELDS``) are not shown: their paths spell out the
    request's.
    """
    allowed, dropped = (limiter or _failures).allow()
    if allowed:
        hidden = not _request_logged.get()
        # Names from the disk are anyone's who may write under the root
        # (or name a symlink's target): escaped as request data is.
        log.warn(
            text + "{dropped}",
            dropped=LogLimiter.dropped_note(dropped),
            **{name: UNLOGGED_FILE if hidden and name in _REQUEST_FIELDS else
               printable(value) if isinstance(value, str) else value for name, value in fields.items()},
        )


def _say_if_the_root_is_gone(root: str) -> None:
    """
    A root renamed or removed while serving, or one this process may not
    read, makes every page ``51``, which on its own looks like a capsule of
    broken links: the log says why (a look on the not-found path only).
    """
    resolved = real_root(root)
    if not os.path.isdir(resolved):
        _warn_limited(
            "root {root} is not a directory any more: every request under it gets 51 "
            "until it is back (or a reload names another)",
            root=root,
        )
    elif not os.access(resolved, os.R_OK | os.X_OK):
        # A root the workers' user may not read (owned by root, mode 700).
        _warn_limited(
            "root {root} cannot be read by this process (uid {uid}): every request under it "
            "gets 51",
            root=root,
            uid=os.geteuid(),
        )


def _cannot_read(client: "GeminiProtocol", path: str, error: OSError) -> None:
    """A file that is there but cannot be read now: ``41`` or ``40``, and a log line."""
    _warn_limited("cannot read {path}: {reason}", path=path, reason=error.strerror or str(error))
    if error.errno in SHORT_OF:
        client.respond(status.SERVER_UNAVAILABLE, "server busy, try again later")
    else:
        client.respond(status.TEMPORARY_FAILURE, "cannot read the file")


@implementer(IPushProducer)
class FileSender:
    """
    Streams one file to a client, as fast as the client reads and no faster.

    A file that ends before the size it had when it was opened (truncated
    while it was sent) is not whole: the connection is cut, without the
    close_notify that would pass it for complete, and the log says so. So
    is one whose modification time moved while it was sent (``mtime_ns``,
    that of the file as opened): rewritten in place (``cp``, a shell's
    ``>``), it may have come back to its size, the client holding old bytes
    before and new ones after; appended to, it is no longer the file whose
    size the read began with. The time is what tells: a ``touch`` cuts it
    too, a ``chmod`` does not.
    """

    def __init__(self, client: "GeminiProtocol", file: BinaryIO, size: int, path: str,
                 mtime_ns: Optional[int] = None) -> None:
        self.client = client
        self.file = file
        self.size = size
        self.path = path
        self.mtime_ns = mtime_ns
        self.sent = 0
        self.paused = False
        self.done = False
        self._scheduled = None

    def start(self, mime: str) -> None:
        if not self.client.send_header(status.SUCCESS, mime):
            self._close()
            return
        self.client.stream(self)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        if self._scheduled is not None or self.done:
            return
        written = 0
        while not self.paused and not self.done:
            if written >= MAX_BYTES_PER_TURN:
                self._scheduled = self.client.clock.callLater(0, self._next_turn)
                return
            try:
                data = self.file.read(CHUNK_SIZE)
            except OSError as error:
                self._close()
                log.warn(
                    "cannot read {path} after {sent} bytes ({reason}): {client} {url} cut short",
                    path=self._shown_path(), sent=self.sent, reason=error.strerror or str(error),
                    client=self.client.record.client, url=self.client.record.url,
                )
                self.client.cut()
                return
            if not data:
                changed = self._changed()
                self._close()
                if self.sent < self.size:
                    log.warn(
                        "{path} ended at {sent} of its {size} bytes while it was sent "
                        "(truncated?): {client} {url} cut short",
                        path=self._shown_path(), sent=self.sent, size=self.size,
                        client=self.client.record.client, url=self.client.record.url,
                    )
                    self.client.cut()
                elif changed:
                    log.warn(
                        "{path} was modified while it was sent ({sent} bytes, {size} when "
                        "opened): {client} {url} cut short",
                        path=self._shown_path(), sent=self.sent, size=self.size,
                        client=self.client.record.client, url=self.client.record.url,
                    )
                    self.client.cut()
                else:
                    self.client.finish()
                return
            written += len(data)
            self.sent += len(data)
            self.client.client_write(data)

    def _shown_path(self) -> str:
        """The file as a warning names it: not at all for a request under ``log off``."""
        return printable(self.path) if self.client.record.enabled else UNLOGGED_FILE

    def _changed(self) -> bool:
        """Whether the open file's modification time moved since it was opened."""
        if self.mtime_ns is None:
            return False
        try:
            return os.fstat(self.file.fileno()).st_mtime_ns != self.mtime_ns
        except OSError:
            return False  # a read error would have said so already

    def _next_turn(self) -> None:
        self._scheduled = None
        if not self.paused:
            self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self._close()

    def _close(self) -> None:
        self.done = True
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        self.file.close()
