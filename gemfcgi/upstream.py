"""
A request relayed to another Gemini server (a ``proxy`` block).

Shaped like the FastCGI relay: ``UpstreamProtocol`` is the upstream
connection, a thin layer that hands each event to ``ProxyRelay``; the relay
pairs it with the Gemini connection, sends the upstream's reply through
``send_header`` and ``client_write``, and is the producer the Gemini
transport pauses when the client reads slowly, which pauses the upstream
socket in turn.

What gmid does, and what is added here:

* The request goes upstream as the client wrote it, but with the
  upstream's port (``upstream_request_line``); with ``proxy-v1``, after a
  PROXY v1 line naming the client. Nothing else is sent: Gemini requests
  have no body.
* TLS to the upstream checks no certificate chain (Gemini servers' are
  mostly self-signed), but with ``verifyname`` (the default) the
  certificate must name the server asked for (``sni``, else the host of
  ``relay-to``), and the request is only sent once it does.
* A 2x reply is streamed; any other is relayed as its header alone.
* Every wait has a timer: the connect, the handshake (5 s, as gmid), the
  header and each stretch of body while the client reads. gmid has only
  the handshake's.
* Every fault ends in ``ProxyRelay._fail``: before the header the client
  gets ``43`` with gmid's META (``proxy error``, ``handshake failed``,
  ``timeout``, ``protocol error``), and a log line names the client, the
  URL, the upstream and the fault. A body the upstream breaks off (closed
  without TLS close_notify) is cut short to the client the same way, so
  that the client can tell that it is not whole; gmid passes it off as
  complete.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.hazmat import (
    DNS_ID,
    DNSPattern,
    IPAddress_ID,
    IPAddressPattern,
    verify_service_identity,
)
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gemfcgi.certificates import KeyPair, openssl_alternative_names, openssl_common_name
from gemfcgi.deadlines import deadlines_for
from gemfcgi.gemini import status
from gemfcgi.gemini.hosts import canonical_host, ipv4_unmapped, is_address
from gemfcgi.gemini.reply import GeminiReplyReader, ReplyHeader
from gemfcgi.gemini.request import DEFAULT_PORT, MAX_REQUEST_BYTES, Request
from gemfcgi.pacedrelay import UNSHOWN_REPLY, PacedRelay, twisted_connect_timeout
from gemfcgi.proxyv1 import v1_header
from gemfcgi.textlog import printable
from gemfcgi.tls import TLS12_CIPHERS, TLS13_SUITES, protocol_range

if TYPE_CHECKING:
    from gemfcgi.server import GeminiProtocol

log = Logger()


@dataclass(frozen=True)
class UpstreamTimeouts:
    """
    Seconds. ``connect``: name lookup and TCP connect. ``handshake``: TLS
    with the upstream (gmid's 5 s). ``reply``: from the request sent to a
    whole header, and between body bytes while the client is reading.
    """

    connect: float = 5.0
    handshake: float = 5.0
    reply: float = 60.0


class Fault(enum.Enum):
    """What went wrong with an upstream, as the log line names it."""

    CONNECT = "cannot connect"
    HANDSHAKE = "handshake failed"
    NAME = "certificate does not name the server"
    HANDSHAKE_TIMEOUT = "handshake timeout"
    REPLY_TIMEOUT = "reply timeout"
    BAD_REPLY = "bad reply"
    TRUNCATED = "reply truncated"


# gmid's META for each fault.
_META = {
    Fault.CONNECT: "proxy error",
    Fault.HANDSHAKE: "handshake failed",
    Fault.NAME: "handshake failed",
    Fault.HANDSHAKE_TIMEOUT: "timeout",
    Fault.REPLY_TIMEOUT: "timeout",
    Fault.BAD_REPLY: "protocol error",
    Fault.TRUNCATED: "protocol error",
}


def _accept_any_chain(connection, certificate, errno, depth, ok) -> bool:
    return True


def certificate_name_problem(certificate: x509.Certificate, name: str) -> Optional[str]:
    """
    Why ``certificate`` is not for ``name`` (a canonical host or an
    address), as a relay with ``verifyname`` checks it; ``None`` if it is.
    """
    try:
        written, usable = _names_checked(certificate)
    except ValueError as error:
        # cryptography reads the extension only when asked (an address of 5 bytes).
        return f"the certificate is not for {name} (its subjectAltName extension cannot be read: {error})"
    if not written:
        # No DNS name or address in a subjectAltName, as in many a
        # self-signed Gemini certificate: libtls, which gmid checks with,
        # then matches the subject's common name (RFC 6125 6.4.4); so does
        # this. One that has some never falls back on it, even where none
        # of them can match a host.
        if common_name_matches(certificate, name):
            return None
        return f"the certificate is not for {name} (no subjectAltName names a host, nor does its common name)"
    if not usable:
        # service_identity would say it holds none: it holds names that no
        # host can match, and the common name is not looked at then.
        return (f"the certificate is not for {name} (its subjectAltNames, {_alternative_names(certificate)}, "
                "can name no host, and its common name counts only without any)")
    try:
        wanted = IPAddress_ID(name) if is_address(name) else DNS_ID(name)
        verify_service_identity(cert_patterns=usable, obligatory_ids=[wanted], optional_ids=[])
    except ValueError:
        # A name no DNS name can be, all digits as "2130706433", which the
        # lookup reads as an address.
        return f"the certificate is not for {name} (no DNS name can be {name})"
    except (CertificateError, VerificationError):
        return f"the certificate is not for {name} (its subjectAltNames: {_alternative_names(certificate)})"
    return None


def _alternative_names(certificate: x509.Certificate, shown: int = 5) -> str:
    """The DNS names and addresses of a certificate's subjectAltNames, as a log line gives them."""
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    written = [*(f"DNS:{dns_name}" for dns_name in names.get_values_for_type(x509.DNSName)),
               *(f"IP:{address}" for address in names.get_values_for_type(x509.IPAddress))]
    more = f" and {len(written) - shown} more" if len(written) > shown else ""
    return printable(", ".join(written[:shown])) + more


def _names_checked(certificate: x509.Certificate) -> tuple[int, list[Any]]:
    """
    How many DNS names and addresses the certificate's subjectAltNames
    hold, and those of them a relay's name may match. A name no host can
    match (``*.lan``, ``*``, ``a.*.example``) is passed over, as libtls
    passes over it, where service_identity would refuse the whole
    certificate, ``localhost`` beside it too.
    """
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return 0, []
    addresses = names.get_values_for_type(x509.IPAddress)
    dns_names = names.get_values_for_type(x509.DNSName)
    usable: list[Any] = [IPAddressPattern(address) for address in addresses]
    for dns_name in dns_names:
        try:
            usable.append(DNSPattern.from_bytes(dns_name.encode("utf-8")))
        except CertificateError:
            continue
    return len(addresses) + len(dns_names), usable


@implementer(IOpenSSLClientConnectionCreator)
class UpstreamTLS:
    """
    TLS towards one upstream: its context, built once per configuration,
    the name sent as SNI, and the name its certificate must hold.
    """

    def __init__(
        self,
        server_name: str,
        verify_name: bool = True,
        client_pair: Optional[KeyPair] = None,
        protocols: Optional[str] = None,
    ) -> None:
        # One spelling for SNI and for the certificate check: the A-label
        # (``check.proxy_problems`` refuses a name that has none).
        self.server_name = canonical_host(server_name) or server_name
        self.verify_name = verify_name
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        low, high = protocol_range(protocols)
        context.set_min_proto_version(low)
        context.set_max_proto_version(high)
        context.set_options(SSL.OP_NO_COMPRESSION)
        context.set_cipher_list(TLS12_CIPHERS)
        context.set_tls13_ciphersuites(TLS13_SUITES)
        # The chain is not judged (see the module's doc): the callback
        # accepts it, so that the name can be checked once it is known.
        context.set_verify(SSL.VERIFY_PEER, _accept_any_chain)
        if client_pair is not None:
            context.use_certificate(client_pair.chain[0])
            for extra in client_pair.chain[1:]:
                context.add_extra_chain_cert(extra)
            context.use_privatekey(client_pair.key)
            context.check_privatekey()
        self._context = context
        self._address = is_address(self.server_name)
        self._sni = None if self._address else self.server_name.encode("ascii")

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        connection.set_connect_state()
        return connection

    def name_problem(self, connection: SSL.Connection) -> Optional[str]:
        """Why the upstream's certificate is not for ``server_name``; ``None`` if it is."""
        if not self.verify_name:
            return None
        peer = connection.get_peer_certificate()
        if peer is None:
            return "no certificate"
        try:
            certificate = peer.to_cryptography()
            certificate.subject  # read now: OpenSSL takes names cryptography cannot read
        except Exception:
            return self._openssl_name_problem(peer)
        return certificate_name_problem(certificate, self.server_name)

    def _openssl_name_problem(self, peer: crypto.X509) -> Optional[str]:
        """``name_problem`` for a certificate only OpenSSL reads, by the same rules."""
        dns, addresses = openssl_alternative_names(peer)
        common_name = openssl_common_name(peer)
        if self._address:
            wanted = ipaddress.ip_address(self.server_name)
            if any(_same_address(address, wanted) for address in addresses):
                return None
        elif any(name_matches(pattern, self.server_name) for pattern in dns):
            return None
        if not dns and not addresses and common_name and name_matches(common_name, self.server_name):
            return None
        return f"the certificate is not for {self.server_name}"


def _same_address(text: str, wanted: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == wanted
    except ValueError:
        return False


def common_name_matches(certificate: x509.Certificate, name: str) -> bool:
    """
    Whether a common name of ``certificate``'s subject is ``name`` (an
    A-label or an address), or a wildcard (``*.example.org``) standing for
    its first label.
    """
    return any(
        isinstance(attribute.value, str) and name_matches(attribute.value, name)
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    )


def name_matches(pattern: str, name: str) -> bool:
    """Whether a certificate's name ``pattern`` is ``name``, or a wildcard for its first label."""
    if pattern.startswith("*."):
        parent = canonical_host(pattern[2:])
        first, dot, rest = name.partition(".")
        return bool(parent and "." in parent and first and dot and rest == parent and not is_address(name))
    return canonical_host(pattern) == name


@dataclass
class Upstream:
    """Where one ``proxy`` block relays to, and how."""

    host: str
    port: int
    tls: Optional[UpstreamTLS]
    proxy_v1: bool = False

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def endpoint(self, reactor, timeout: float) -> IStreamClientEndpoint:
        """
        An address is connected to as it is; a name is looked up first
        (off the reactor's thread), each of its addresses tried in turn.
        """
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            return HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)
        kind = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
        return kind(reactor, self.host, self.port, timeout=timeout)


def upstream_request_line(request: Request, port: int) -> bytes:
    """
    The request line the upstream gets: the client's, with the upstream's
    ``port`` in place of the one it named (none for 1965). The upstream then
    finds its own port in the URL: a server that refuses URLs naming
    another port (gemfcgi does, with ``53``) serves it, and one that
    ignores ports (gmid) sees what gmid's proxy sends.
    """
    url = request.url
    start = url.index("//") + 2
    ends = [i for i in (url.find("/", start), url.find("?", start)) if i >= 0]
    end = min(ends, default=len(url))
    authority = url[start:end]
    if authority.startswith("["):
        host = authority[: authority.index("]") + 1]
    else:
        host = authority.rpartition(":")[0] if ":" in authority else authority
    rest = url[end:] or "/"
    line = f"{url[:start]}{host}{rest}".encode("utf-8")
    with_port = f"{url[:start]}{host}:{port}{rest}".encode("utf-8")
    if port != DEFAULT_PORT and len(with_port) <= MAX_REQUEST_BYTES:
        # (A URL the port would make too long goes without it: an upstream
        # that checks ports may then refuse it, one that does not serves it.)
        line = with_port
    return line + b"\r\n"


# This process's open upstream connections, by both ends ((address, port)
# here, then there), each with the proxy blocks (their ids) the request it
# carries went through: a client connection that is one of them, seen from
# the other end, is this process relaying to itself, and a loop if it meets
# one of those blocks. Both ends: Linux gives one local port to connections
# to different places, so a client's may be a relay's too.
OWN_ENDS: dict[tuple[tuple[str, int], tuple[str, int]], frozenset[int]] = {}


def _end_of(address: Any) -> Optional[tuple[str, int]]:
    host = getattr(address, "host", None)
    if host is None:
        return None
    # A dual-stack listener sees an IPv4 connection as IPv4-mapped.
    return (ipv4_unmapped(host), getattr(address, "port", 0))


def blocks_behind(peer: Any, host: Any) -> frozenset[int]:
    """
    The proxy blocks a request went through, if its connection (from
    ``peer`` to ``host``) is one of this process's upstream connections;
    none if not.
    """
    there, here = _end_of(peer), _end_of(host)
    if there is None or here is None:
        return frozenset()
    return OWN_ENDS.get((there, here), frozenset())


def _socket_peer(transport: Any) -> Optional[tuple[str, int]]:
    """
    Where the kernel connected ``transport``: Twisted's ``getPeer`` gives
    the address asked for, and 0.0.0.0 or :: reach this machine's own
    127.0.0.1 or ::1, which is what a listener here sees.
    """
    sock = getattr(transport, "socket", None)
    try:
        peer = sock.getpeername() if sock is not None else None
    except OSError:
        peer = None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return (ipv4_unmapped(peer[0]), peer[1])
    return _end_of(transport.getPeer())


class _UpstreamFactory(Factory):
    """
    The one connection of one relay, without a log line per request.

    Twisted's client connection is a reference cycle of its own (connector,
    transport, the endpoint's factory and Deferred), left to the garbage
    collector; once the relay is finished, neither this factory nor the
    protocol holds it, so that it, and the client's connection behind it,
    are freed at once.
    """

    noisy = False

    def __init__(self, relay: "ProxyRelay") -> None:
        self.relay: Optional[ProxyRelay] = relay

    def buildProtocol(self, addr) -> Optional["UpstreamProtocol"]:
        if self.relay is None:
            return None  # the relay is over: no connection is wanted now
        return UpstreamProtocol(self.relay)


@implementer(IHandshakeListener)
class UpstreamProtocol(Protocol):
    """The upstream connection: its events, passed to the relay while it has one."""

    def __init__(self, relay: "ProxyRelay") -> None:
        self.relay: Optional[ProxyRelay] = relay
        self._ends: Optional[tuple[tuple[str, int], tuple[str, int]]] = None

    def connectionMade(self) -> None:
        relay = self.relay
        if relay is None:
            self.transport.abortConnection()
            return
        here, there = _end_of(self.transport.getHost()), _socket_peer(self.transport)
        if here is not None and there is not None:
            self._ends = (here, there)
            OWN_ENDS[self._ends] = relay.client.relayed_through
        relay.upstream_connected(self)

    def handshakeCompleted(self) -> None:
        if self.relay is not None:
            self.relay.handshake_completed()

    def dataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.upstream_data(data)

    def connectionLost(self, reason: Failure = None) -> None:
        if self._ends is not None:
            OWN_ENDS.pop(self._ends, None)
        relay, self.relay = self.relay, None
        if relay is not None:
            relay.upstream_closed(reason)


class ProxyRelay(PacedRelay):
    """
    One relayed request from connect to the last byte, and the producer the
    Gemini transport pauses when the client reads slowly; registered before
    the upstream is even connected, so a client that goes away at any
    moment reaches ``stopProducing``, which closes the upstream.
    """

    BAD_REPLY = Fault.BAD_REPLY
    REPLY_TIMEOUT = Fault.REPLY_TIMEOUT

    def __init__(
        self,
        client: "GeminiProtocol",
        upstream: Upstream,
        request_line: bytes,
        timeouts: UpstreamTimeouts,
        reactor,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.timeouts = timeouts
        self.reactor = reactor
        self.finished = False
        self._request_line = request_line
        self._reader: Optional[GeminiReplyReader] = GeminiReplyReader()
        self._protocol: Optional[UpstreamProtocol] = None
        self._connecting: Optional[Deferred] = None
        self._factory: Optional[_UpstreamFactory] = None
        self._handshaking = False
        self._paused = False
        self._deadlines = deadlines_for(reactor)

    # -- start -------------------------------------------------------------

    def start(self) -> None:
        self.client.stream(self)
        self._factory = _UpstreamFactory(self)
        connecting = self.upstream.endpoint(self.reactor, self.timeouts.connect).connect(self._factory)
        if not (self.finished or connecting.called):
            # The name lookup has no timeout of its own: this one bounds both.
            self._connecting = connecting
            self._arm(self.timeouts.connect, self._connect_timed_out)
        connecting.addErrback(self._connect_failed)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if self.finished or failure.check(CancelledError):
            return
        if twisted_connect_timeout(failure):
            self._connect_timed_out()
            return
        self._fail(Fault.CONNECT, failure.getErrorMessage())

    def upstream_connected(self, protocol: UpstreamProtocol) -> None:
        self._connecting = None
        if self.finished:
            protocol.transport.abortConnection()
            return
        self._protocol = protocol
        transport = protocol.transport
        if self._paused:
            transport.pauseProducing()
        if self.upstream.proxy_v1:
            transport.write(v1_header(self.client.peer, transport.getPeer()))
        if self.upstream.tls is None:
            self._send_request()
            return
        self._handshaking = True
        self._arm(self.timeouts.handshake, self._handshake_timed_out)
        try:
            transport.startTLS(self.upstream.tls)
        except Exception as problem:  # OpenSSL refusing the connection's settings
            log.failure("TLS towards {upstream} could not start", upstream=self.upstream.name)
            self._fail(Fault.HANDSHAKE, f"TLS could not start: {problem}")

    def handshake_completed(self) -> None:
        self._handshaking = False
        if self.finished or self._protocol is None or self.upstream.tls is None:
            return
        problem = self.upstream.tls.name_problem(self._protocol.transport.getHandle())
        if problem is not None:
            self._fail(Fault.NAME, problem)
            return
        self._send_request()

    def _send_request(self) -> None:
        assert self._protocol is not None
        self._protocol.transport.write(self._request_line)
        self._arm(self.timeouts.reply, self._reply_timed_out)

    # -- the reply -----------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        if not self.finished:
            with self.client.batched():
                self.reply_data(data)

    def _relay_header(self, reply: ReplyHeader) -> None:
        if not reply.sends_body:
            self.client.send_header(reply.code, reply.meta)
            # Nothing more is wanted of the upstream: the connection is
            # aborted, not closed with a close_notify that would wait for
            # the upstream's, which it need never send.
            self._close(abort=True)
            self.client.finish()
            return
        self.client.send_header(reply.code, reply.meta, reply.body)
        if self._paused:
            self._disarm()
        else:
            self._arm(self.timeouts.reply, self._reply_timed_out)

    def upstream_closed(self, reason: Optional[Failure]) -> None:
        self._protocol = None
        if self.finished:
            return
        why = reason.getErrorMessage() if reason is not None else "connection closed"
        if self._handshaking:
            if reason is not None and reason.check(SSL.Error) and "wrong version number" in why:
                why += " (not TLS: for a plaintext upstream, write use-tls off)"
            elif reason is None or not reason.check(SSL.Error):
                # Closed without a TLS alert: most often a PROXY header the
                # two ends do not agree on.
                why += (" (the upstream closed during the handshake: does it read PROXY headers? "
                        "this block sends one)" if self.upstream.proxy_v1 else
                        " (the upstream closed during the handshake: if it listens with proxy-v1, "
                        "this block needs proxy-v1 too)")
            self._fail(Fault.HANDSHAKE, why)
        elif self._reader is not None:
            clean = reason is None or reason.check(ConnectionDone)
            if not clean and self._reader.received == 0 and reason.check(SSL.Error):
                # TLS 1.3: the upstream judges a client certificate after
                # the handshake is done on this side, and says no with an alert.
                self._fail(Fault.HANDSHAKE, f"refused after the handshake: {why}")
                return
            detail = self._reader.end().message
            self._fail(Fault.BAD_REPLY, detail if clean else f"{detail}: {why}")
        elif reason is None or reason.check(ConnectionDone):
            # TLS: the upstream's close_notify; plain TCP: its FIN.
            self._end()
        elif self.upstream.tls is None:
            self._fail(Fault.TRUNCATED, f"connection lost ({why})")
        else:
            self._fail(Fault.TRUNCATED, f"closed without close_notify ({why})")

    # -- timers --------------------------------------------------------------

    def _connect_timed_out(self) -> None:
        self._fail(Fault.CONNECT, f"not connected after {self.timeouts.connect:g} s")

    def _handshake_timed_out(self) -> None:
        self._fail(Fault.HANDSHAKE_TIMEOUT, f"no TLS handshake after {self.timeouts.handshake:g} s")

    # -- IPushProducer, driven by the Gemini transport ---------------------

    def stopProducing(self) -> None:
        """The client went away: close the upstream, free everything."""
        self._close(abort=True)

    # -- the ends -------------------------------------------------------------

    def _fail(self, fault: Fault, detail: str) -> None:
        """
        The one place an upstream fault becomes a reply and a log line:
        ``43`` before the header, a cut connection after it.
        """
        if self.finished:
            return
        header_sent = self._reader is None
        if fault is Fault.BAD_REPLY and not self.client.record.enabled:
            detail = UNSHOWN_REPLY  # it quotes what the upstream sent
        log.warn(
            "{client} {url}: proxy upstream {upstream}: {fault}: {detail}{after}",
            client=self.client.record.client,
            url=self.client.record.url,
            upstream=self.upstream.name,
            fault=fault.value,
            detail=detail,
            after="; body cut short" if header_sent else "",
        )
        self._close(abort=True)
        if header_sent:
            self.client.cut()
            return
        self.client.send_header(status.PROXY_ERROR, _META[fault])
        self.client.finish()

    def _end(self) -> None:
        """The reply is whole: close both sides cleanly."""
        if self.finished:
            return
        self._close(abort=False)
        self.client.finish()

    def _close(self, abort: bool) -> None:
        if self.finished:
            return
        self.finished = True
        self._disarm()
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            if abort:
                protocol.transport.abortConnection()
            else:
                protocol.transport.loseConnection()
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        factory, self._factory = self._factory, None
        if factory is not None:
            factory.relay = None
