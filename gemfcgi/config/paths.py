"""
Relative paths of a configuration, made absolute once, where it is read.

Roots, the access file and FastCGI sockets may be written relative (what
is read before a chroot must be absolute, as in gmid): relative to the
directory the server started in, as gmid reads them. The server may not
stay there: twistd's ``--rundir`` changes directory after the file is
read, a reload reads it again from there, and roots and sockets are used
for every request. So each is joined to the starting directory once. With
a chroot (``user`` alone chroots into the user's home) they stay as
written: they are relative to it.
"""

from __future__ import annotations

import os
from typing import Optional

from gemfcgi.config.model import Config, FastCGISocket, LocationOptions


# What is said where the current directory is needed and gone.
DIRECTORY_GONE = ("the current directory no longer exists (it was removed): relative paths "
                  "cannot be read from it; start from a directory that exists, or write "
                  "absolute paths")


def current_directory() -> Optional[str]:
    """The current directory; ``None`` once it has been removed (``getcwd`` fails then)."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


def anchor_paths(config: Config, base: str) -> Config:
    """``config`` with its relative paths joined to ``base``; changed in place."""
    if config.chroot is not None or config.user is not None:
        return config

    def anchored(path: Optional[str]) -> Optional[str]:
        if path is None or os.path.isabs(path):
            return path
        return os.path.join(base, path)

    def anchor_options(options: LocationOptions) -> None:
        options.root = anchored(options.root)
        options.require_client_ca = anchored(options.require_client_ca)
        fastcgi = options.fastcgi
        if fastcgi is not None and isinstance(fastcgi.address, FastCGISocket):
            fastcgi.address.path = os.path.join(base, fastcgi.address.path)

    for server in config.servers:
        # (A configuration file's are absolute already; one built in Python
        # may hold relative ones.)
        server.cert, server.key, server.ocsp = map(anchored, (server.cert, server.key, server.ocsp))
        anchor_options(server.options)
        for location in server.locations:
            anchor_options(location.options)
        for proxy in server.proxies:
            proxy.cert, proxy.key = anchored(proxy.cert), anchored(proxy.key)
            proxy.require_client_ca = anchored(proxy.require_client_ca)
    config.log.access = anchored(config.log.access)
    return config
