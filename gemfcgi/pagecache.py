"""
Small static files kept in memory while they stay unchanged.

Every request still looks its file up: the ``lstat`` that resolves the path
below the root also tells whether the copy kept here is still the file. A
hit saves the open, fstat, read and close: four of the five system calls
of a small page.

A copy is used only while the file's device, inode, size, mtime and ctime
(in nanoseconds) are the ones it was read with. Renaming a new file over
the old one changes the inode; writing it in place, or a ``chmod``, moves
its times. Timestamps advance by clock ticks, though, so a file written
again within the tick of an earlier write can keep its times. A file is
therefore kept only once it has been left alone for ``SETTLED`` seconds
before it was read: any change after the read then has later times than
those noted. (Git trusts its index entries by the same rule.)
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

# A file is kept only if it had not changed for this long when it was read.
SETTLED = 2.0
# Larger files are read each time: they are rarer, and larger replies cost
# far more than their open and read.
MAX_FILE_BYTES = 64 * 1024
# All the copies together; the oldest go first.
MAX_TOTAL_BYTES = 4 * 1024 * 1024

_Identity = tuple[int, int, int, int, int]


def _identity(info: os.stat_result) -> _Identity:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class PageCache:
    """Copies of small files, by real path; see the module's doc."""

    def __init__(
        self,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self._clock = clock
        self._pages: dict[str, tuple[_Identity, bytes]] = {}
        self._total = 0

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, path: str, info: os.stat_result) -> Optional[bytes]:
        """The copy of ``path`` if ``info`` (its ``lstat`` now) is the file it was read from."""
        page = self._pages.get(path)
        if page is None:
            return None
        if page[0] != _identity(info):
            self._drop(path)
            return None
        return page[1]

    def put(self, path: str, info: os.stat_result, body: bytes) -> None:
        """
        Keep ``body``, read from ``path`` whose ``fstat`` was ``info``, if it
        is the whole file, small, and had settled before it was read.
        """
        size = len(body)
        if size != info.st_size or size > self.max_file_bytes or size > self.max_total_bytes:
            return
        if self._clock() - max(info.st_mtime, info.st_ctime) < SETTLED:
            return
        self._drop(path)
        while self._total + size > self.max_total_bytes:
            self._drop(next(iter(self._pages)))
        self._pages[path] = (_identity(info), body)
        self._total += size

    def _drop(self, path: str) -> None:
        page = self._pages.pop(path, None)
        if page is not None:
            self._total -= len(page[1])
