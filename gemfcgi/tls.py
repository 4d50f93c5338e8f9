"""
TLS for Gemini: one context per certificate, chosen by SNI.

Contexts are built once per configuration (building one costs far more
than a whole handshake) and swapped in from the servername callback. Every
context requests a client certificate but accepts any: self-signed client
certificates are how Gemini visitors identify themselves, and only
``require client ca`` (checked per request, after TLS) judges them.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Optional, Sequence

from OpenSSL import SSL
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport
from zope.interface import implementer

from gemfcgi.certificates import ClientCertificate, KeyPair
from gemfcgi.config.values import check_server_protocols, tls_versions
from gemfcgi.gemini.hosts import canonical_host
from gemfcgi.opensslbindings import lib as _openssl
from gemfcgi.socketbuffer import socket_transport, unsent_in_process
from gemfcgi.textlog import LogLimiter, MonotonicClock

log = Logger()

# Bytes left untaken by the peer beyond which a connection on Twisted's TLS
# layer is no longer read from: past a reply's own (a 256 KiB chunk of a
# file, and Twisted's 64 KiB buffer), so only what the peer's own records
# made OpenSSL answer gets there. And how often such a connection is looked
# at again, to read once it has taken half.
HELD_BEYOND = 1024 * 1024
HELD_LOOK = 0.1

# A fixed session id context: without one, OpenSSL refuses to resume a
# session of a connection that was asked for a client certificate.
SESSION_ID_CONTEXT = b"gemfcgi"

# Forward-secret AEAD suites only, as libtls's "secure" set, AES-128 first:
# the key schedule of a SHA-384 suite costs more per handshake than any
# margin AES-256 adds (Go and BoringSSL servers prefer AES-128 likewise).
TLS13_SUITES = b"TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
TLS12_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
)

_VERSIONS = {
    "tlsv1.2": SSL.TLS1_2_VERSION,
    "tlsv1.3": SSL.TLS1_3_VERSION,
}


class ProtocolsError(ValueError):
    """A ``protocols`` string gemfcgi cannot honour."""


def protocol_range(protocols: Optional[str]) -> tuple[int, int]:
    """
    Minimum and maximum TLS version from a libtls ``protocols`` string.

    gemfcgi never goes below TLS 1.2, so ``all``, ``legacy`` and older
    versions are narrowed to 1.2 and 1.3; a string allowing only versions
    below 1.2 is an error rather than a silent upgrade.
    """
    if protocols is None:
        return SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION
    problem = check_server_protocols(protocols)
    if problem is not None:
        raise ProtocolsError(problem)
    chosen = [_VERSIONS[word] for word in tls_versions(protocols) if word in _VERSIONS]
    return min(chosen), max(chosen)


def _accept_any_certificate(connection, certificate, errno, depth, ok) -> bool:
    return True


def build_context(
    pair: KeyPair,
    protocols: Optional[str] = None,
    servername_callback: Optional[Callable[[SSL.Connection], None]] = None,
) -> SSL.Context:
    """A server context for one certificate; immutable once used."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    low, high = protocol_range(protocols)
    context.set_min_proto_version(low)
    context.set_max_proto_version(high)
    # A client's FIN without close_notify, read by OpenSSL on the socket
    # (``gemfcgi.tlsport``), ends its side as a close_notify does, rather
    # than failing the connection and its reply: the request is whole by
    # then, its CRLF says so.
    # TLS 1.2 renegotiation is refused, whatever the OpenSSL build's default:
    # a client could ask for a full handshake's work again and again on
    # one connection, and a reply written across one would be cut.
    context.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_IGNORE_UNEXPECTED_EOF
        | SSL.OP_NO_RENEGOTIATION)
    context.set_cipher_list(TLS12_CIPHERS)
    context.set_tls13_ciphersuites(TLS13_SUITES)
    # Idle connections (waiting for a request, or for the peer's
    # close_notify) give their 34 KiB of record buffers back.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.use_certificate(pair.chain[0])
    for extra in pair.chain[1:]:
        context.add_extra_chain_cert(extra)
    context.use_privatekey(pair.key)
    context.check_privatekey()
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, _accept_any_certificate)
    context.set_session_id(SESSION_ID_CONTEXT)
    # Sessions resume by ticket (TLS 1.2 and 1.3), which the client keeps.
    # OpenSSL's own cache would keep, for two hours and up to 20,480 of
    # them, each TLS 1.2 session of a client that takes no ticket, with
    # the client's certificate: 100 KB of names make 300 KB of memory per
    # connection, for anyone to fill.
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    if servername_callback is not None:
        context.set_tlsext_servername_callback(servername_callback)
    if pair.ocsp:
        staple = pair.ocsp
        context.set_ocsp_server_callback(lambda connection, data: staple)
    return context


class CertificateStore:
    """
    The TLS contexts of one configuration, one per server block (blocks
    with the same key pair share one).

    With several pairs, every context carries the same servername
    callback, which moves the connection to the context of the first
    server matching the SNI name; unknown names and clients without SNI
    keep the listener's default. Session tickets stay with the listener's default context
    (OpenSSL keeps the initial context for sessions), so resumption works
    across servers. With one pair there is nothing to choose, and no
    callback: a call from OpenSSL into Python costs every handshake about
    3 % of its time.
    """

    def __init__(
        self,
        pairs: Sequence[KeyPair],
        choose: Callable[[str], Optional[int]],
        protocols: Optional[str] = None,
    ) -> None:
        self._choose = choose
        self._pairs = list(pairs)
        self._protocols = protocols
        # One context per pair, which servers naming the same files share
        # (``load_key_pairs``): 4,000 hosts under one wildcard certificate
        # built 4,000 contexts, 2.4 s and 125 MB at each start and reload.
        built: dict[int, SSL.Context] = {}
        callback = self._on_servername if len({id(pair) for pair in self._pairs}) > 1 else None
        self.contexts = []
        for pair in self._pairs:
            if id(pair) not in built:
                built[id(pair)] = build_context(pair, protocols, callback)
            self.contexts.append(built[id(pair)])

    def renewed(self) -> "CertificateStore":
        """
        The same certificates in new contexts, hence with new session ticket
        keys: pyOpenSSL has no call to set ticket keys, so rotating them
        means replacing the contexts. Tickets issued before no longer resume.
        """
        return CertificateStore(self._pairs, self._choose, self._protocols)

    def _on_servername(self, connection: SSL.Connection) -> None:
        # An exception here becomes a fatal alert: never let one escape.
        try:
            raw = connection.get_servername()
            if not raw:
                return
            # Clients send A-labels; one that sends the name in UTF-8 means
            # the same host.
            host = canonical_host(raw.decode("utf-8", "replace"))
            index = self._choose(host) if host else None
            if index is not None:
                connection.set_context(self.contexts[index])
        except Exception:
            log.failure("choosing a certificate by SNI failed; using the default")


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The connection creator of one listener: the store's contexts, starting
    from the certificate of the first server on this listener.

    ``update`` swaps in a new store (a reload); connections already made
    keep the context they started with.
    """

    def __init__(self, store: CertificateStore, default_index: int = 0) -> None:
        self.update(store, default_index)

    def update(self, store: CertificateStore, default_index: int = 0) -> None:
        self.store, self.default_index = store, default_index

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        """A connection for Twisted's TLS layer (unix sockets, PROXY headers)."""
        return HalfClosingConnection(self.store.contexts[self.default_index], tlsProtocol)

    def server_connection(self) -> SSL.Connection:
        """A server-side connection on memory BIOs (``gemfcgi.tlsport``)."""
        connection = SSL.Connection(self.store.contexts[self.default_index], None)
        connection.set_accept_state()
        return connection


class HalfClosingConnection(SSL.Connection):
    """
    A connection under Twisted's TLS layer whose peer's close_notify ends
    the peer's side alone, as it does on gemfcgi's own TLS transport.

    Twisted answers a close_notify with its own and drops what the protocol
    writes after it: a client that closes its side after the request (Go's
    ``CloseWrite``) got a reply cut short that ended as if whole. Here the
    TLS protocol (``HalfClosingTLSProtocol``) tells its protocol, and to
    Twisted the stream just has nothing more to read. The protocol's own
    ``loseConnection`` sends the close_notify as usual; a close_notify that
    answers the server's own completes the close, as before.
    """

    def __init__(self, context: SSL.Context, tls_protocol) -> None:
        super().__init__(context, None)
        self._tls_protocol = tls_protocol

    def recv(self, bufsiz: int, flags: Optional[int] = None) -> bytes:
        try:
            return super().recv(bufsiz, flags)
        except SSL.ZeroReturnError:
            if self.get_shutdown() & SSL.SENT_SHUTDOWN:
                raise  # the answer to ours: the close is complete
            ended = getattr(self._tls_protocol, "end_the_peers_side", None)
            if ended is not None and ended():
                raise SSL.WantReadError() from None
            raise


# Handshakes that fail inside OpenSSL on the server's side (its "internal
# error": a client certificate too large for a session ticket), said a few
# times in ten seconds; a client's own failures (scanners, plain text,
# old versions) are not logged at all.
failures_here = LogLimiter(MonotonicClock(), limit=5, window=10.0)


def failed_here(error: SSL.Error) -> bool:
    """Whether a handshake failed inside OpenSSL, not by the client's doing."""
    return any(reason == "internal error" for *_, reason in (error.args[0] if error.args else []))


def say_failed_here(peer: Any, error: SSL.Error) -> None:
    """Log such a failure with the client (``(host, port)``), within the limit."""
    allowed, dropped = failures_here.allow()
    if not allowed:
        return
    where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "a client"
    log.warn("TLS handshake with {client} failed inside OpenSSL (internal error; a client "
             "certificate too large for a session ticket, over about 64 KB, is one cause){dropped}",
             client=where,
             dropped=LogLimiter.dropped_note(dropped))


@implementer(IHalfCloseableProtocol)
class HalfClosingTLSProtocol(BufferingTLSTransport):
    """
    Twisted's TLS protocol, taking the end of the peer's side, by its
    close_notify (``HalfClosingConnection``) or by TCP's FIN, as a
    half-close when its protocol can take one: a client that sends both
    after its request still gets its reply.
    """

    _peer_ended = False
    # TCP's FIN came: the peer can send nothing more, its close_notify
    # included, so ours is the last word and the socket closes after it.
    _fin_received = False
    # Reading is held while the peer leaves what was sent untaken: the
    # call that looks again (see ``dataReceived``).
    _held: Optional[IDelayedCall] = None

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self._held is None:
            self._hold_while_untaken()

    def _hold_while_untaken(self) -> None:
        """
        Read nothing more while Twisted holds more than ``HELD_BEYOND`` bytes
        the socket did not take. What OpenSSL answers of its own (a KeyUpdate
        asks for one) would pile up unsent, and cost a turn each, for as long
        as a peer that reads nothing went on sending: it now fills its own
        socket instead. (Below that, what was just written waits for the
        reactor's next turn, as every handshake flight and reply does.)
        """
        connection = socket_transport(self.transport)
        if connection is None or not connection.connected or unsent_in_process(connection) <= HELD_BEYOND:
            return
        connection.pauseProducing()
        self._held = connection.reactor.callLater(HELD_LOOK, self._look_again, connection)

    def _look_again(self, connection: Any) -> None:
        self._held = None
        if not connection.connected:
            return
        if unsent_in_process(connection) > HELD_BEYOND // 2:
            self._held = connection.reactor.callLater(HELD_LOOK, self._look_again, connection)
        else:
            connection.resumeProducing()

    # Plaintext written after the TLS connection failed (the peer sent a
    # record that does not decrypt), before the connection's end reaches
    # the protocol: dropped, and left out of the access line.
    bytes_lost = 0

    def _write(self, data: bytes) -> None:
        if self._lostTLSConnection:
            self.bytes_lost += len(data)
            return
        super()._write(data)

    def connectionLost(self, reason: Any) -> None:
        if self._held is not None and self._held.active():
            self._held.cancel()
        self._held = None
        super().connectionLost(reason)

    def end_the_peers_side(self) -> bool:
        """Tell the protocol (once) that the peer has ended its side; False if it cannot take it."""
        if self._peer_ended:
            return True
        protocol = self.wrappedProtocol
        if not self._handshakeDone or not IHalfCloseableProtocol.providedBy(protocol):
            return False
        self._peer_ended = True
        protocol.readConnectionLost()
        return True

    def readConnectionLost(self) -> None:
        self._fin_received = True
        if not self.end_the_peers_side():
            # As Twisted would have done without a half-close: the end.
            self.transport.loseConnection()
        elif self.disconnecting and self._tlsConnection is not None and (
            self._tlsConnection.get_shutdown() & SSL.SENT_SHUTDOWN
        ):
            # Our close_notify is out and waits for an answer that cannot come.
            self.transport.loseConnection()

    def _shutdownTLS(self) -> None:
        super()._shutdownTLS()
        if self._fin_received and self.transport is not None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def _flushSendBIO(self) -> None:
        # Twisted takes one 32 KiB read of what OpenSSL made: the rest of a
        # larger flight (a certificate of 40 KB, the session ticket that
        # holds a client's) waited in the BIO until the request timeout
        # flushed it. All of it goes now, as gemfcgi's own TLS layer sends it.
        while True:
            try:
                data = self._tlsConnection.bio_read(2**15)
            except SSL.WantReadError:
                return
            self.transport.write(data)

    def _tlsShutdownFinished(self, reason) -> None:
        if (reason is not None and not self._handshakeDone and isinstance(reason.value, SSL.Error)
                and failed_here(reason.value)):
            peer = self.getPeer()
            say_failed_here((peer.host, peer.port) if hasattr(peer, "port") else None, reason.value)
        streaming = self._producer is not None
        super()._tlsShutdownFinished(reason)
        if reason is not None and streaming and self.transport is not None:
            # The TLS connection failed (a record that does not decrypt)
            # while a reply streams: Twisted's transport would close only
            # once its producer ends, and a FastCGI reply may never end
            # (or a paused one never be resumed). Nothing written can leave
            # now: the connection ends, and with it the reply's producer.
            self.transport.abortConnection()


class TLSFacts:
    """
    The negotiated parameters of a connection.

    The server name is read at once (every request is checked against it);
    the rest is read from the connection on first use and kept, because
    most requests (static files) never need it and each read is a call into
    OpenSSL.
    """

    def __init__(self, connection: SSL.Connection) -> None:
        self._connection = connection
        raw_name = connection.get_servername()
        try:
            # Bytes that are not UTF-8 name no host (\xff and \xfe were
            # both U+FFFD, one name): malformed, as a URL's host would be.
            self.server_name: Optional[str] = (
                canonical_host(raw_name.decode("utf-8")) if raw_name else None
            )
        except UnicodeDecodeError:
            self.server_name = None
        # A name sent that is no host name at all (``evil/x``): not the
        # same as none, which lets the URL's host choose.
        self.malformed_name = bool(raw_name) and self.server_name is None

    @cached_property
    def version(self) -> str:
        return self._connection.get_protocol_version_name()

    @cached_property
    def name_may_be_an_earlier_ones(self) -> bool:
        """
        Whether ``server_name`` may not be the name the client sent now: on
        a session resumed below TLS 1.3, OpenSSL reports the name of the
        handshake that made the session (RFC 6066 would have the server
        refuse such a resumption, which pyOpenSSL gives no hook for).
        """
        if self.version == "TLSv1.3" or _openssl is None:
            return False
        connection = getattr(self._connection, "_ssl", None)
        return connection is None or bool(_openssl.SSL_session_reused(connection))

    @cached_property
    def cipher(self) -> str:
        return self._connection.get_cipher_name() or ""

    @cached_property
    def cipher_bits(self) -> Optional[int]:
        return self._connection.get_cipher_bits()

    @cached_property
    def client_certificate(self) -> Optional[ClientCertificate]:
        peer = self._connection.get_peer_certificate()
        return ClientCertificate.from_openssl(peer) if peer is not None else None
