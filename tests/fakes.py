"""Stand-ins for unit tests: what the Gemini protocol sees of TLS and its transport."""

from __future__ import annotations

from typing import Optional

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport


class FakeTLSConnection:
    """What GeminiProtocol reads from the SSL connection after the handshake."""

    def __init__(self, server_name: Optional[bytes] = b"localhost", peer_certificate=None) -> None:
        self.server_name = server_name
        self.peer_certificate = peer_certificate

    def get_servername(self):
        return self.server_name

    def get_peer_certificate(self, as_cryptography=False):
        """As pyOpenSSL gives it: its own X509, or cryptography's on request."""
        if self.peer_certificate is None or as_cryptography:
            return self.peer_certificate
        from OpenSSL import crypto

        return crypto.X509.from_cryptography(self.peer_certificate)

    def get_protocol_version_name(self):
        return "TLSv1.3"

    def get_cipher_name(self):
        return "TLS_AES_256_GCM_SHA384"

    def get_cipher_bits(self):
        return 256


class TLSStringTransport(StringTransport):
    """A StringTransport that looks like a TLS connection to GeminiProtocol."""

    def __init__(
        self,
        server_name: Optional[bytes] = b"localhost",
        port: int = 1965,
        peer: str = "127.0.0.1",
    ) -> None:
        super().__init__(
            hostAddress=IPv4Address("TCP", "127.0.0.1", port),
            peerAddress=IPv4Address("TCP", peer, 40000),
        )
        self.handle = FakeTLSConnection(server_name)
        self.aborted = False

    def getHandle(self):
        return self.handle

    def abortConnection(self):
        self.aborted = True
        super().abortConnection()


class Trims:
    """A stand-in for ``malloc_trim(0)`` that counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        self.count += 1
        return 1
