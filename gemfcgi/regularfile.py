"""
Reading the files a configuration names: the file itself, its includes,
certificates, keys, CA files and OCSP responses.

Each must be a regular file. A FIFO would block the read until something
writes to it (at start-up, or in the middle of a reload, with the server
frozen meanwhile), and a device such as ``/dev/zero`` never ends; both are
refused with a reason, as a missing file is. ``/dev/null`` reads as the
empty file it stands for.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Optional

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_regular_file(path: str) -> bytes:
    """
    The bytes of the regular file at ``path``; an ``OSError`` whose
    ``strerror`` says why not (a directory, a FIFO, a device, or what
    ``open`` said).
    """
    # Non-blocking, so that opening a FIFO does not wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        found = os.fstat(fd)
        mode = found.st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if stat.S_ISCHR(mode) and _is_dev_null(found.st_rdev):
            return b""  # a placeholder for an empty file, as configurations use it
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a file")
            raise OSError(errno.EINVAL, f"not a regular file ({kind})", path)
        with os.fdopen(fd, "rb") as opened:
            fd = -1
            return opened.read()
    finally:
        if fd >= 0:
            os.close(fd)


def irregular_kind(path: str) -> Optional[str]:
    """
    What the file at ``path`` is when it is there but no regular file
    (``a FIFO``, ``a character device``...), without opening it; ``None``
    for a regular file, a directory, ``/dev/null``, or nothing there.
    """
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return None
    mode = found.st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or (stat.S_ISCHR(mode) and _is_dev_null(found.st_rdev)):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def _is_dev_null(device: int) -> bool:
    try:
        return device == os.stat(os.devnull).st_rdev
    except OSError:
        return False
