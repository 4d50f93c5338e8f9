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
    """A ``user``/``chroot`` setting that cannot be applied, and why."""


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
            raise PrivilegeError("can't chroot without a user (add: user \"name\")")
        return None
    try:
        entry = pwd.getpwnam(config.user)
    except KeyError:
        raise PrivilegeError(f"unknown user {config.user!r}") from None
    chroot = config.chroot or entry.pw_dir
    if not os.path.isdir(chroot):
        raise PrivilegeError(
            f"chroot {chroot} is not a directory"
            + ("" if config.chroot else f" (the home of {config.user}; set chroot)")
        )
    return Identity(entry.pw_uid, entry.pw_gid, entry.pw_name, chroot)


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
