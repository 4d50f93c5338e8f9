"""
The C bindings pyOpenSSL itself calls (``OpenSSL._util``), imported in one place.

pyOpenSSL has no Python call for a few things gemfcgi needs: giving a
connection its socket once the handshake is done (``SSL_set_fd``), asking
what a read BIO holds, whether a session was resumed, and the names of a
certificate that ``cryptography`` cannot read. Those come from its private
bindings module, which a pyOpenSSL may lack: ``ffi`` and ``lib`` are then
``None``, and each caller does without (bulk replies stay on memory BIOs,
a resumption is assumed, a name is left empty).
"""

from __future__ import annotations

from typing import Any

ffi: Any
lib: Any
try:
    from OpenSSL._util import ffi, lib
except ImportError:  # pragma: no cover - a pyOpenSSL without it
    ffi = lib = None
