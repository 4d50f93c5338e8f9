"""
The transport that holds a connection's socket, and what Twisted still
holds for it: the two things asked of a connection under TLS and PROXY
protocol wrappers, by the linger, the access line and the TLS layers.
"""

from __future__ import annotations

from typing import Any


def socket_transport(transport: Any) -> Any:
    """
    The transport that holds the socket, under TLS and PROXY protocol
    wrappers; ``None`` once it has let go of it. Twisted's wrappers pass
    unknown attributes on to the transport below (``ProtocolWrapper``), so
    a wrapper seems to have a ``socket`` too: only the transport that set
    one itself is it.
    """
    while transport is not None and "socket" not in getattr(transport, "__dict__", ()):
        transport = getattr(transport, "transport", None)
    return transport


def unsent_in_process(tcp: Any) -> int:
    """Bytes written to ``tcp`` that Twisted still holds, not yet handed to the kernel."""
    held = len(getattr(tcp, "dataBuffer", b"")) - getattr(tcp, "offset", 0)
    return held + getattr(tcp, "_tempDataLen", 0)
