"""
Dropping privileges the way gmid does.

The process that reads keys and binds sockets starts as root; the workers
that talk to clients then ``chroot`` and become ``user``. As in gmid, a
``user`` without a ``chroot`` is chrooted into that user's home directory,
and a ``chroot`` without a ``user`` is an error. Inside the chroot, roots,
the access file and FastCGI socket paths are read as written.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Optional

from gemfcgi.config import model


class PrivilegeError(Exception):
    """A ``user``/``chroot`` setting that cannot be applied, and why; ``directive`` is the one at fault."""

    def __init__(self, message: str, directive: str = "user") -> None:
        super().__init__(message)
        self.directive = directive


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    name: str
    chroot: Optional[str]


def identity_for(config: model.Config) -> Optional[Identity]:
    """Who the workers become, or ``None`` when they keep the server's identity."""
    if config.user is None:
        if config.chroot is not None:
            raise PrivilegeError("can't chroot without a user (add: user \"name\")", "chroot")
        return None
    try:
        entry = pwd.getpwnam(config.user)
    except KeyError:
        raise PrivilegeError(f"unknown user {config.user!r}") from None
    chroot = config.chroot or entry.pw_dir
    if not os.path.isdir(chroot):
        raise PrivilegeError(
            f"chroot {chroot} is not a directory"
            + ("" if config.chroot else f" (the home of {config.user}; set chroot)"),
            "chroot" if config.chroot else "user",
        )
    return Identity(entry.pw_uid, entry.pw_gid, entry.pw_name, chroot)


def path_in_chroot(chroot: str, path: str) -> Optional[str]:
    """
    Where ``path`` (absolute or relative to its ``/``) leads inside
    ``chroot``, as a path of this process: symlinks are followed as a
    process inside it follows them, an absolute target starting again at
    the chroot. ``None`` for a loop of symlinks.
    """
    chroot = os.path.abspath(chroot)
    parts = [part for part in path.split("/") if part]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        outside = os.path.join(chroot, *resolved, part)
        if not os.path.islink(outside):
            resolved.append(part)
            continue
        hops += 1
        if hops > 40:
            return None
        target = os.readlink(outside)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p] + parts
    return os.path.join(chroot, *resolved)


def host_path(chroot: str, path: str) -> str:
    """
    ``path`` inside ``chroot`` as this process opens it: followed as
    ``path_in_chroot`` follows it, or, through a loop of symlinks, joined
    as written, so that opening it fails there as it will inside.
    """
    return path_in_chroot(chroot, path) or os.path.join(chroot, path.lstrip("/"))


def may_read_directory(path: str, identity: Identity) -> bool:
    """
    Whether ``identity`` may list ``path`` and open what is in it, by the
    mode bits of it and of every directory above it up to its chroot (ACLs
    are not read).
    """
    return _granted(path, identity, os.R_OK | os.X_OK, os.path.abspath(identity.chroot or "/"))


def may_execute(path: str, identity: Identity, script: bool = False) -> bool:
    """
    Whether ``identity`` may run the program ``path`` (a spawned FastCGI
    program, which runs outside the chroot; a ``script`` must be readable
    too): by the mode bits of the file and of every directory above it.
    """
    return _granted(path, identity, os.X_OK | (os.R_OK if script else 0), "/")


def may_read(path: str, identity: Identity) -> bool:
    """Whether ``identity`` may read the file ``path``, outside the chroot, by mode bits."""
    return _granted(path, identity, os.R_OK, "/")


def _granted(path: str, identity: Identity, needed: int, top: str) -> bool:
    """``needed`` on ``path`` and the search bit on each directory above it, up to ``top``."""
    if identity.uid == 0:
        return True
    groups = set(os.getgrouplist(identity.name, identity.gid))
    current = os.path.abspath(path)
    while True:
        try:
            info = os.stat(current)
        except OSError:
            return False
        if info.st_uid == identity.uid:
            granted = (info.st_mode >> 6) & 0o7
        elif info.st_gid in groups:
            granted = (info.st_mode >> 3) & 0o7
        else:
            granted = info.st_mode & 0o7
        if granted & needed != needed:
            return False
        parent = os.path.dirname(current)
        if current == top or parent == current:
            return True
        current, needed = parent, os.X_OK


def drop_privileges(identity: Identity) -> None:
    """chroot, then lose root for good: groups, gid, uid, in that order."""
    if os.getuid() != 0:
        raise PrivilegeError(f"need root privileges to become {identity.name}")
    if identity.chroot is not None:
        os.chroot(identity.chroot)
        os.chdir("/")
    os.initgroups(identity.name, identity.gid)
    os.setgid(identity.gid)
    os.setuid(identity.uid)
