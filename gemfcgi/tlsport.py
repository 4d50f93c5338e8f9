"""
TLS on a TCP connection in one layer, for TCP listeners.

Twisted's TLS layer (``TLSMemoryBIOProtocol``) sits between the socket and
the protocol as a protocol wrapper of its own, with interface declarations
built per connection and a reactor turn for every buffer it hands down.
For a server whose every connection is one short TLS exchange, that layer
costs more CPU than OpenSSL's own handshake work. Here the TCP transport is
the TLS layer: ``TLSServerConnection`` feeds what the socket reads into
OpenSSL's memory BIO and sends what OpenSSL produces, and the Gemini
protocol sits directly on top of it.

Bytes are batched per read. Everything OpenSSL produces while one read is
handled (the session tickets that end the handshake, the reply to a
request that came with the client's Finished, and the close_notify after
it) leaves in one ``send()``, where OpenSSL on the socket would issue one
per record; and a socket read takes all that is there, where OpenSSL would
read each record's header and body apart. Outside a read, writes go out at
once, unless made inside ``writes_batched`` (a FastCGI reply read from its
backend in one go). Whatever the socket does not take waits in Twisted's
buffer, which pauses producers as usual.

A large write (a file streamed in 256 KiB chunks) is bulk, where
copying every record out of a memory BIO costs more than batching saves.
So at the first one, once the batch is out, the connection hands the socket
to OpenSSL (``SSL_set_fd``), which from then on reads and writes it
directly, records straight to ``send()``; Twisted's buffer then holds
plaintext.

It is used for plain TCP listeners (``tcp:``, ``tcp6:``, sockets from
systemd or a parent process); listeners that need something between the
socket and TLS (a PROXY protocol header) or are not TCP keep Twisted's
layer. Both give the protocol the same transport surface: ``write``,
``loseConnection`` (after a close_notify, wait for the peer's),
``abortConnection``, ``getHandle`` (the ``SSL.Connection``), producers, and
``handshakeCompleted`` on the protocol.
"""

from __future__ import annotations

import errno
import socket
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from OpenSSL import SSL
from twisted.internet import main, tcp
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener
from twisted.logger import Logger

from gemfcgi.connections import kernel_queued_bytes, reset_by_peer
from gemfcgi.eagerwrite import EagerWriteMixin
from gemfcgi.tls import failed_here, say_failed_here

# pyOpenSSL has no public call to give a connection its socket later, nor
# to ask what its read BIO holds; without these, bulk replies simply stay
# on the memory BIOs, and every read ends with recv's WantReadError.
from gemfcgi.opensslbindings import ffi as _ffi, lib as _openssl

log = Logger()

# Plaintext written during one read beyond which the batch is sent at once,
# so a producer writing a large file from inside a read cannot pile its
# ciphertext up in memory before the transport can pause it.
BATCH_LIMIT = 64 * 1024
# A write this large means bulk data: OpenSSL gets the socket (see above).
STREAM_WRITE = 32 * 1024
# Ciphertext taken from OpenSSL per call when sending.
FLUSH_READ = 256 * 1024
# What OpenSSL may hold of its own answers (to KeyUpdates) while a reply
# from elsewhere is awaited, before they are sent without it.
HELD_ANSWERS = 16 * 1024
# The largest plaintext of one TLS record: a write beyond it makes several.
TLS_RECORD_SIZE = 16 * 1024
# A peer that ended its side with bytes of the reply still in the kernel:
# how soon to look whether it has taken them (doubling up to the last), to
# close then; the protocol's linger cuts one that takes none.
TAKEN_FIRST_LOOK = 0.01
TAKEN_LAST_LOOK = 1.0
# Linux's option to hold partial segments back until it is cleared.
TCP_CORK: Optional[int] = getattr(socket, "TCP_CORK", None)


# Linux copies TCP_NODELAY from a listening socket to the sockets it accepts.
NODELAY_INHERITED = sys.platform.startswith("linux")


def prepare_listener(port: tcp.Port) -> None:
    """
    Make ``port`` give ``TLSServerConnection`` transports, with Nagle's
    algorithm off: a close_notify sent apart from the reply it ends must not
    wait for the peer's delayed ACK of the reply. It is set once, on the
    listening socket, where accepted sockets inherit it.

    The port number is noted too: every connection accepted on a TCP port
    has that port as its own, and a request's URL is checked against it.
    """
    port.transport = TLSServerConnection
    port.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port.local_port = port.getHost().port


class TLSServerConnection(EagerWriteMixin, tcp.Server):
    """An accepted TCP connection that is also its own TLS layer."""

    # The socket is this process's alone (accepted close-on-exec, after any
    # fork of the server): close() ends it, without a shutdown() first.
    _shouldShutdown = False
    # Plaintext written that never left: its send failed (the peer reset),
    # or it came after one. The access line leaves it out.
    bytes_lost = 0

    def __init__(self, sock, protocol, client, server, sessionno, reactor) -> None:
        super().__init__(sock, protocol, client, server, sessionno, reactor)
        if not NODELAY_INHERITED:
            self.setTcpNoDelay(True)
        self._tls: SSL.Connection = server.factory.tls.server_connection()
        self._handshaking = True
        self._shutting_down = False
        # The peer has ended its side (close_notify, or TCP's FIN) while
        # the protocol still answers: nothing more is read.
        self._peer_done = False
        self._in_read = False
        self._batched = 0
        self._on_socket = False
        # Nothing is read until what was sent is out of the process: on the
        # socket, a record OpenSSL began to send; on the BIOs, what the
        # socket did not take (see ``doRead``).
        self._read_held = False
        self._ended: Optional[Exception] = None
        self._host = None
        self._taken_look: Optional[Any] = None
        # The local port without a getsockname(): the listening port's.
        self.local_port: int = server.local_port
        self._answer_waiting_hello()

    def _answer_waiting_hello(self) -> None:
        """
        Read the ClientHello now if it is already here, as it nearly always
        is: a client sends it as soon as its connect returns, before the
        server's accept. That saves the reactor turn that would otherwise
        only report the socket readable. The protocol is not connected yet,
        and need not be: no handshake completes on the client's first
        flight, so nothing reaches the protocol before the next read.

        This runs inside the port's accept loop, where an exception would
        abandon the rest of the batch; so one ends this connection only, as
        the reactor does with an exception from ``doRead``.
        """
        try:
            ended = self.doRead()
        except Exception:
            log.failure("reading a connection's ClientHello at accept failed")
            ended = main.CONNECTION_LOST
        if ended is not None:
            self._end(ended)

    def getHandle(self) -> SSL.Connection:
        return self._tls

    def getHost(self):
        # The local address never changes; asked for by routing, FastCGI
        # parameters and block messages, it would cost a getsockname() each.
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def logPrefix(self) -> str:
        return "TLS"

    # -- reading -----------------------------------------------------------

    def doRead(self) -> Optional[Any]:
        if self._on_socket:
            if not self._nothing_buffered():
                # A write OpenSSL left half-sent must be finished before it
                # reads: a KeyUpdate the client asks for an answer to would
                # be written over that record (OpenSSL: "bad length"), and
                # the download cut. Reading waits for the buffer to empty.
                self._read_held = True
                self.stopReading()
                return None
            return self._read_records()
        try:
            data = self.socket.recv(self.bufferSize)
        except OSError as problem:
            if problem.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return None
            return main.CONNECTION_LOST
        if not data:
            # TCP closed without the peer's close_notify: fine once ours is
            # out (the reply is complete); before, the peer may only have
            # ended its side, and a protocol still answering goes on.
            if self._shutting_down:
                return None if self._left_bytes_unread() else main.CONNECTION_DONE
            return self._peer_ended(main.CONNECTION_LOST)
        self._tls.bio_write(data)
        self._in_read = True
        try:
            ended = self._read_records()
        finally:
            self._in_read = False
        if ended is None and self.producer is not None and not self._shutting_down and \
                self._made_by_openssl() < HELD_ANSWERS:
            # A reply is on its way from elsewhere (FastCGI): what OpenSSL
            # produced here (the session tickets) leaves with its first bytes.
            return None
        failed = self._flush()
        if ended is None and failed is None and not self._nothing_buffered():
            # The peer does not take what was sent. What OpenSSL answers of
            # its own (a KeyUpdate asks for one) would pile up unsent for as
            # long as it kept sending: nothing more is read until it takes
            # it (``doWrite`` reads again once the buffer is empty).
            self._read_held = True
            self.stopReading()
        return ended if ended is not None else failed

    def _made_by_openssl(self) -> int:
        """Ciphertext OpenSSL holds for sending (0 where it cannot be asked)."""
        from_ssl = getattr(self._tls, "_from_ssl", None)
        if from_ssl is None or _openssl is None:
            return 0
        return _openssl.BIO_get_mem_data(from_ssl, _ffi.NULL)

    def _read_records(self) -> Optional[Any]:
        tls = self._tls
        if self._handshaking:
            try:
                tls.do_handshake()
            except SSL.WantReadError:
                return None
            except SSL.Error as error:
                # An alert OpenSSL wrote is still flushed by doRead.
                if failed_here(error):
                    say_failed_here(self.client, error)
                return main.CONNECTION_LOST
            self._handshaking = False
            if IHandshakeListener.providedBy(self.protocol):
                self.protocol.handshakeCompleted()
        protocol = self.protocol
        while True:
            if self._nothing_to_read():
                return None
            try:
                data = tls.recv(65536)
            except SSL.WantReadError:
                return None
            except SSL.ZeroReturnError:
                # The peer's close_notify: the end we wait for after ours,
                # or before it the end of the peer's side alone. (OpenSSL on
                # the socket reads TCP's FIN as one too: OP_IGNORE_UNEXPECTED_EOF.)
                if self._shutting_down:
                    return main.CONNECTION_DONE
                return self._peer_ended(main.CONNECTION_DONE)
            except SSL.Error:
                return main.CONNECTION_LOST
            if not self.disconnecting:
                protocol.dataReceived(data)

    def _peer_ended(self, reason: Any) -> Optional[Any]:
        """
        The peer has ended its side. A protocol that can take a half-close
        (``IHalfCloseableProtocol``) is told and may go on writing: a
        client that closes its side after the request, as some do, still
        gets the reply. Otherwise, or during the handshake, ``reason``
        ends the connection.
        """
        if self._handshaking or self._peer_done or not IHalfCloseableProtocol.providedBy(self.protocol):
            return reason
        self._peer_done = True
        self.stopReading()
        self.protocol.readConnectionLost()
        return None

    def _nothing_to_read(self) -> bool:
        """
        Whether ``recv`` could only raise ``WantReadError``: no byte waits in
        the read BIO and no plaintext in OpenSSL. Asking costs a fifth of
        that exception, which every read would otherwise end with.
        """
        into = getattr(self._tls, "_into_ssl", None)
        if into is None or _openssl is None:
            return False  # OpenSSL has the socket, or no way to ask: recv tells
        return _openssl.BIO_get_mem_data(into, _ffi.NULL) == 0 and not self._tls.pending()

    # -- writing -----------------------------------------------------------

    @property
    def send_failed(self) -> bool:
        """Whether a send has failed: nothing written from now on can leave."""
        return self._ended is not None

    def write(self, data: bytes) -> None:
        """Encrypt ``data``; it leaves with the read's batch, or at once."""
        if self._ended is not None:
            self.bytes_lost += len(data)
            return
        if not data or not self.connected or self._shutting_down:
            return
        if self._handshaking:
            # Nothing is written before the handshake; should a protocol
            # try, its bytes would have no keys to be encrypted with.
            return
        if self._on_socket or (len(data) >= STREAM_WRITE and self._hand_socket_to_openssl()):
            self._write_on_socket(data)
            return
        view = memoryview(data)
        try:
            while view:
                view = view[self._tls.send(view):]
        except SSL.Error:
            self.bytes_lost += self._batched + len(data)
            self._batched = 0
            self._end(main.CONNECTION_LOST)
            return
        self._batched += len(data)
        if not self._in_read or self._batched >= BATCH_LIMIT:
            failed = self._flush()
            if failed is not None:
                self._end(failed)

    @contextmanager
    def writes_batched(self) -> Iterator[None]:
        """
        What is written inside leaves in one send, as during a read: for a
        FastCGI reply whose header, body and end arrive in one backend read.
        """
        if self._in_read or self._on_socket or self.disconnected:
            yield
            return
        self._in_read = True
        try:
            yield
        finally:
            self._in_read = False
            failed = self._flush()
            if failed is not None:
                self._end(failed)

    def writeSequence(self, iovec) -> None:
        self.write(b"".join(iovec))

    def _flush(self) -> Optional[Any]:
        """Send what OpenSSL produced; queue what the socket does not take."""
        batched, self._batched = self._batched, 0
        if self._on_socket or self.disconnected:
            return None
        chunks = []
        while True:
            try:
                chunk = self._tls.bio_read(FLUSH_READ)
            except SSL.WantReadError:
                break
            chunks.append(chunk)
            if len(chunk) < FLUSH_READ:
                break  # the BIO is empty: no need to be told so by an exception
        if not chunks:
            return None
        failed = self._send_or_queue(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if failed is not None:
            self.bytes_lost += batched
        return failed

    def _end(self, reason: Exception) -> None:
        """Let the reactor end the connection, outside the caller's stack."""
        if self._ended is None:
            self._ended = reason
            self.startWriting()

    def doWrite(self) -> Optional[Any]:
        if self._ended is not None:
            return self._ended
        result = super().doWrite()
        if self._read_held and result is None and self._nothing_buffered() and self.connected:
            self._read_held = False
            if not self._peer_done:
                self.startReading()
        return result

    # -- streaming: OpenSSL on the socket ------------------------------------

    def _hand_socket_to_openssl(self) -> bool:
        """
        Let OpenSSL read and write the socket itself from now on, once the
        memory BIOs are empty: what was batched is sent first, and nothing
        may wait in Twisted's buffer, or it would be overtaken.
        """
        if self._on_socket or self._handshaking or self._shutting_down or self._ended is not None:
            return self._on_socket
        failed = self._flush()
        if failed is not None:
            self._end(failed)
            return False
        if not self._nothing_buffered():
            return False  # the socket is full: stay on the BIOs, still correct
        if not self._nothing_to_read():
            # Bytes read but not yet decrypted (the client sent more after
            # its request, part of a record): they would go with the BIO.
            return False
        tls = self._tls
        ssl = getattr(tls, "_ssl", None)
        if _openssl is None or ssl is None or not hasattr(tls, "_into_ssl"):
            return False
        if _openssl.SSL_set_fd(ssl, self.socket.fileno()) != 1:
            return False
        # OpenSSL freed the memory BIOs; pyOpenSSL must not touch them again.
        tls._into_ssl = tls._from_ssl = None
        tls._socket = self.socket
        self._on_socket = True
        return True

    def _write_on_socket(self, data: bytes) -> None:
        failed = self._send_or_queue(data)
        if failed is not None:
            self.bytes_lost += len(data)
            self._end(failed)

    def writeSomeData(self, data) -> Any:
        """
        Raw ciphertext while on the BIOs; once OpenSSL has the socket,
        plaintext, as many records as the socket takes (one per call would
        make a large file cost a reactor turn every 16 KiB).

        OpenSSL sends each 16 KiB record in a ``send()`` of its own, and with
        Nagle off each would leave as a segment of its own; the socket is
        corked while one write's records go in, so they leave in full-sized
        segments: a 10 MiB file cost the server 17 % less CPU.
        """
        if not self._on_socket:
            return super().writeSomeData(data)
        view = memoryview(data)
        written = 0
        corked = TCP_CORK is not None and len(view) > TLS_RECORD_SIZE
        if corked:
            self.socket.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 1)
        try:
            while written < len(view):
                try:
                    written += self._tls.send(view[written:])
                except (SSL.WantWriteError, SSL.WantReadError):
                    break
                except SSL.Error:
                    return main.CONNECTION_LOST if written == 0 else written
        finally:
            if corked:
                # Uncorking sends what is left at once: nothing waits for more.
                self.socket.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 0)
        return written

    # -- closing -----------------------------------------------------------

    def loseConnection(self) -> None:
        """
        With nothing queued, send close_notify now (with the batch, inside a
        read) and keep reading for the peer's.
        """
        if (
            self.connected
            and not self.disconnecting
            and not self._handshaking
            and self.producer is None
            and self._nothing_buffered()
        ):
            self.disconnecting = True
            ended = self._postLoseConnection()
            if ended is not None:
                self._end(ended)
            return
        super().loseConnection()

    def _postLoseConnection(self) -> Optional[Any]:
        """Everything is written: send close_notify, then wait for the peer's."""
        if self._handshaking:
            return main.CONNECTION_DONE
        if not self._shutting_down:
            self._shutting_down = True
            try:
                peer_closed_too = self._tls.shutdown()
            except SSL.Error:
                return main.CONNECTION_LOST
            failed = self._flush()
            if failed is not None:
                return failed
            if peer_closed_too:
                return main.CONNECTION_DONE
            if not self._nothing_buffered():
                # The close_notify is queued; doWrite calls again once it is out.
                return None
        if self._peer_done:
            # The peer has ended its side already. What the kernel still
            # holds for it is waited for as on any connection (the
            # protocol's linger: a FIN once it is taken, a reset if the peer
            # reads none of it for the idle timeout); closed now, the socket
            # would hold it past every timeout, out of this process's count.
            if self._left_bytes_unread():
                self.stopWriting()
                return None
            return main.CONNECTION_DONE
        self.stopWriting()
        self.startReading()
        return None

    def readConnectionLost(self, reason) -> None:
        # A TLS stream has no half-close: the peer's end is the connection's,
        # whatever the protocol would say to a half-close.
        if self._shutting_down and self._left_bytes_unread():
            return
        self.connectionLost(reason)

    def _left_bytes_unread(self) -> bool:
        """
        Whether the peer, ending its side after our close_notify, left bytes
        in the kernel for it. Then the protocol's linger waits for them (a
        FIN once they are taken, a reset if none is read for the idle
        timeout): closed now, the socket would hold them past every
        timeout, out of this process's count.
        """
        if not self._kernel_holds_unread():
            return False
        self._peer_done = True
        self.stopReading()
        self._look_again(TAKEN_FIRST_LOOK)
        return True

    def _look_again(self, after: float) -> None:
        if self._taken_look is None:
            self._taken_look = self.reactor.callLater(after, self._close_once_taken, after)

    def _close_once_taken(self, waited: float) -> None:
        """Close (FIN) once the peer that ended its side has taken every byte."""
        self._taken_look = None
        if self.disconnected or self._ended is not None:
            return
        if self._kernel_holds_unread():
            self._look_again(min(waited * 2, TAKEN_LAST_LOOK))
            return
        self._end(main.CONNECTION_DONE)

    def _kernel_holds_unread(self) -> bool:
        """
        Whether the kernel still holds bytes the peer may take. A peer that
        closed its socket answers our close_notify with a reset, after which
        the send queue still counts it, unacknowledged forever: such a
        connection was held to the request timeout (its slot, its memory,
        and a "59" logged for a client long gone).
        """
        queued = kernel_queued_bytes(self)
        if not queued:
            return False
        if reset_by_peer(self):
            # The reset destroyed them: the access line does not count them as sent.
            self.bytes_lost += queued
            return False
        return True

    def connectionLost(self, reason) -> None:
        look, self._taken_look = self._taken_look, None
        if look is not None and look.active():
            look.cancel()
        super().connectionLost(reason)

    def _closeWriteConnection(self) -> None:
        # Half-close would cut the TLS stream short; closing waits for the peer.
        pass
