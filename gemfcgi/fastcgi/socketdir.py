"""
The private directories that hold spawned programs' sockets.

A server that stops removes its directory; one that is killed outright
(SIGKILL, a crash, the machine's OOM killer) cannot, and would leave it in
the temporary directory for good. So every directory is claimed with an
``flock`` on it, held by the descriptor the server keeps open until it
removes the directory. The kernel drops the lock when the last process
holding that descriptor ends, however it ends; forked worker processes
inherit it, so a directory in use by any of them stays claimed.

Before making its own, a server removes the directories of its kind that
nobody holds. One younger than ``ABANDONED_AFTER`` is left alone: it may be
another server's, made an instant ago and not yet locked. So is one whose
socket still takes connections: the directory of a server of an earlier
version, which took no lock, or of a program that outlived its server. A
lock does not depend on process ids, so servers in other pid namespaces
sharing the directory (containers with a common ``/tmp``) see each other's
as taken.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import stat
import tempfile
import time
from typing import Optional

from twisted.logger import Logger

from gemfcgi.textlog import printable

log = Logger()

PREFIX = "gemfcgi-spawn-"
SOCKET_NAME = "fastcgi.sock"
# Seconds between making a directory and locking it are microseconds; this
# leaves room for a machine that is very busy.
ABANDONED_AFTER = 60.0


class SocketDirectory:
    """One claimed directory; ``close`` removes it and lets the claim go."""

    def __init__(self, parent: Optional[str] = None) -> None:
        self.path = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
        self._claim: Optional[int]
        try:
            self._claim = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            os.rmdir(self.path)
            raise
        try:
            # Nobody else may lock it: it is new, and others leave young ones be.
            fcntl.flock(self._claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # a file system without locks: its socket, while it listens, keeps it

    def at(self, name: str) -> str:
        """
        A path to ``name`` in this very directory, through the descriptor
        that claims it (``/proc/self/fd/N/name``): a link or a directory
        another user puts at the directory's path, once something removed it,
        is never followed (a connect by path went to their socket). The
        path itself where ``/proc`` is not to be had.
        """
        if self._claim is not None and os.path.isdir(f"/proc/self/fd/{self._claim}"):
            return f"/proc/self/fd/{self._claim}/{name}"
        return os.path.join(self.path, name)

    def holds_socket(self, name: str) -> bool:
        """Whether this very directory holds a socket ``name`` (not through a link)."""
        if self._claim is None:
            return False
        try:
            return stat.S_ISSOCK(os.stat(name, dir_fd=self._claim, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def remove(self, name: str) -> None:
        """Remove ``name`` from this very directory, wherever its path leads now."""
        if self._claim is None:
            return
        try:
            os.unlink(name, dir_fd=self._claim)
        except OSError:
            pass

    def give(self, name: str, owner: tuple[int, int]) -> None:
        """``name`` in this very directory to ``owner``, not through a link."""
        assert self._claim is not None
        os.chown(name, *owner, dir_fd=self._claim, follow_symlinks=False)

    def give_itself(self, owner: tuple[int, int]) -> None:
        """This very directory to ``owner``."""
        assert self._claim is not None
        os.fchown(self._claim, *owner)

    def intact(self) -> bool:
        """Whether the directory at its path is still the one made and claimed here (not removed, not replaced)."""
        if self._claim is None:
            return False
        try:
            there, claimed = os.lstat(self.path), os.fstat(self._claim)
        except OSError:
            return False
        return stat.S_ISDIR(there.st_mode) and (there.st_dev, there.st_ino) == (claimed.st_dev, claimed.st_ino)

    def make_again(self) -> None:
        """
        The directory at its path again, after something removed it (a hand,
        a clean-up of the temporary directory that ignores the claim), and
        claimed anew: its path is the one every worker knows the socket by.
        ``FileExistsError`` where something else took that path meanwhile
        (``mkdir`` follows no link): it is no directory of this server's.
        """
        os.mkdir(self.path, 0o700)
        claim = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass
        previous, self._claim = self._claim, claim
        if previous is not None:
            os.close(previous)

    def close(self) -> None:
        if self._claim is None:
            return
        if self.intact():
            # What took its path after it was removed is someone else's, left as it is.
            shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._claim)
        self._claim = None


def remove_abandoned(parent: Optional[str] = None) -> list[str]:
    """
    Remove the socket directories in ``parent`` (the temporary directory by
    default) whose server ended without removing them; return their paths.
    Whatever cannot be read, locked or removed is left as it is.
    """
    parent = parent or tempfile.gettempdir()
    now = time.time()
    removed = []
    try:
        names = [name for name in os.listdir(parent) if name.startswith(PREFIX)]
    except OSError:
        return removed
    for name in sorted(names):
        path = os.path.join(parent, name)
        if _remove_if_abandoned(path, now):
            removed.append(path)
    for path in removed:
        log.info(
            "removed {path}: the socket directory of a spawned program whose server"
            " ended without stopping",
            path=printable(path),  # a name anyone may give a directory in /tmp
        )
    return removed


def _remove_if_abandoned(path: str, now: float) -> bool:
    try:
        claim = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False  # not a directory, or not ours to read
    try:
        if now - os.fstat(claim).st_mtime < ABANDONED_AFTER:
            return False
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: its server, or one of its workers, lives
        if _answers(os.path.join(path, SOCKET_NAME)):
            return False  # a server of a version before the locks, or its program, lives
        shutil.rmtree(path, ignore_errors=True)
        return not os.path.lexists(path)
    finally:
        os.close(claim)


def _answers(path: str) -> bool:
    """Whether something listens on the unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except BlockingIOError:
        return True  # listening, with a full backlog
    except OSError:
        return False
    finally:
        probe.close()
    return True
