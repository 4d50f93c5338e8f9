"""
Choosing a certificate by SNI, on handshakes in memory.

A store of several certificates asks which server a name belongs to on
every handshake; a store of one has nothing to choose and never asks.
"""

from __future__ import annotations

from typing import Optional

import pytest
from OpenSSL import SSL

from gemfcgi.certificates import load_key_pair
from gemfcgi.tls import CertificateStore, ServerTLS, TLSFacts, build_context
from tests import certs


def handshake(tls: ServerTLS, name: bytes, highest: Optional[int] = None) -> tuple[SSL.Connection, SSL.Connection]:
    """A full handshake (TLS 1.3, or ``highest``) between a client sending ``name`` and ``tls``."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if highest is not None:
        context.set_max_proto_version(highest)
    client = SSL.Connection(context)
    client.set_connect_state()
    client.set_tlsext_host_name(name)
    server = tls.server_connection()
    for _ in range(3):
        for side, peer in ((client, server), (server, client)):
            try:
                side.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                peer.bio_write(side.bio_read(65536))
            except SSL.WantReadError:
                pass
    return client, server


def key_pairs(tmp_path, *names: str):
    return [load_key_pair(*certs.write(tmp_path, name, certs.issue(name))) for name in names]


def presented(client: SSL.Connection) -> str:
    peer = client.get_peer_certificate(as_cryptography=True)
    return peer.subject.rfc4514_string()


def test_with_several_certificates_the_sni_name_picks_one(tmp_path):
    asked: list[str] = []

    def choose(host: str) -> Optional[int]:
        asked.append(host)
        return {"a.example": 0, "b.example": 1}.get(host)

    store = CertificateStore(key_pairs(tmp_path, "a.example", "b.example"), choose)
    client, server = handshake(ServerTLS(store), b"B.example")
    assert presented(client) == "CN=b.example"
    assert asked == ["b.example"]
    # An unknown name keeps the listener's default.
    client, _ = handshake(ServerTLS(store, default_index=1), b"c.example")
    assert presented(client) == "CN=b.example"


def test_one_certificate_is_presented_without_asking(tmp_path):
    asked: list[str] = []

    def choose(host: str) -> Optional[int]:
        asked.append(host)
        return 0

    store = CertificateStore(key_pairs(tmp_path, "only.example"), choose)
    client, server = handshake(ServerTLS(store), b"other.example")
    assert presented(client) == "CN=only.example"
    assert asked == []
    # The name the client sent is still what requests are checked against.
    assert TLSFacts(server).server_name == "other.example"
    assert client.get_protocol_version_name() == "TLSv1.3"


def test_a_name_sent_in_utf8_rather_than_as_its_a_label_picks_the_same_certificate(tmp_path):
    def choose(host: str) -> Optional[int]:
        return {"a.example": 0, "xn--bcher-kva.example": 1}.get(host)

    store = CertificateStore(key_pairs(tmp_path, "a.example", "xn--bcher-kva.example"), choose)
    client, server = handshake(ServerTLS(store), "bücher.example".encode("utf-8"))
    assert presented(client) == "CN=xn--bcher-kva.example"
    assert TLSFacts(server).server_name == "xn--bcher-kva.example"


def test_servers_of_one_certificate_share_its_context_and_are_presented_it_without_asking(tmp_path):
    # 4,000 hosts under one wildcard certificate built 4,000 contexts (2.4 s
    # and 125 MB at each start and reload), and each handshake called into
    # Python to choose among identical ones.
    from gemfcgi.config import model
    from gemfcgi.service import load_key_pairs

    wildcard = certs.write(tmp_path, "star", certs.issue("*.example"))
    other = certs.write(tmp_path, "other", certs.issue("other.test"))
    config = model.Config(servers=[
        model.Server(name=name, cert=files[0], key=files[1])
        for name, files in (("a.example", wildcard), ("b.example", wildcard), ("other.test", other))])
    pairs = load_key_pairs(config)
    assert pairs[0] is pairs[1] and pairs[2] is not pairs[0]
    asked: list[str] = []

    def choose(host: str) -> Optional[int]:
        asked.append(host)
        return {"a.example": 0, "b.example": 1, "other.test": 2}.get(host)

    store = CertificateStore(pairs, choose)
    assert store.contexts[0] is store.contexts[1] is not store.contexts[2]
    client, _ = handshake(ServerTLS(store, default_index=2), b"b.example")
    assert presented(client) == "CN=*.example"
    single = CertificateStore(pairs[:2], choose)
    asked.clear()
    client, _ = handshake(ServerTLS(single, default_index=1), b"a.example")
    assert presented(client) == "CN=*.example" and asked == []


def test_a_tls_1_2_client_asking_to_renegotiate_is_refused(tmp_path):
    # Set on the context itself, not left to the OpenSSL build's default.
    pairs = key_pairs(tmp_path, "a.example")
    assert build_context(pairs[0]).set_options(0) & SSL.OP_NO_RENEGOTIATION
    tls = ServerTLS(CertificateStore(pairs, lambda host: 0))
    client, server = handshake(tls, b"a.example", SSL.TLS1_2_VERSION)
    assert client.get_protocol_version_name() == "TLSv1.2"
    assert client.renegotiate()
    try:
        client.do_handshake()
    except SSL.WantReadError:
        pass
    server.bio_write(client.bio_read(65536))
    try:
        server.recv(1024)
    except SSL.WantReadError:
        pass
    client.bio_write(server.bio_read(65536))
    with pytest.raises(SSL.Error, match="no renegotiation"):
        client.recv(1024)
