"""The API README documents for Twisted code that knows its visitors by certificate."""

from __future__ import annotations

from twisted.internet.task import Clock

import gemfcgi
from gemfcgi.certificates import make_self_signed, write_key_pair
from gemfcgi.config import model
from gemfcgi.server import GeminiProtocol
from tests.certs import issue
from tests.fakes import TLSStringTransport


def greet(client, request, settings):
    """The handler shown in README, word for word in what it does."""
    visitor = client.tls.client_certificate
    if visitor is None:
        client.respond(60, "a client certificate is required")
        return
    client.send_header(20, "text/gemini", f"# Hello, {visitor.common_name}\n".encode())
    client.finish()


def visit(service, certificate=None) -> bytes:
    protocol = GeminiProtocol(service.site, Clock())
    transport = TLSStringTransport()
    transport.handle.peer_certificate = certificate
    protocol.makeConnection(transport)
    protocol.handshakeCompleted()
    protocol.dataReceived(b"gemini://localhost/\r\n")
    return transport.value()


def make_service(tmp_path):
    cert_pem, key_pem = make_self_signed(["localhost"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    config = model.Config(servers=[model.Server(
        name="localhost", cert=str(tmp_path / "c.pem"), key=str(tmp_path / "k.pem"),
        options=model.LocationOptions(root=str(tmp_path)))])
    service = gemfcgi.makeService(config, listen=["tcp:0:interface=127.0.0.1"])
    service.site.handlers["static"] = greet
    return service


def test_a_handler_greets_the_visitor_by_certificate(tmp_path):
    alice, _ = issue("alice")
    assert visit(make_service(tmp_path), alice) == b"20 text/gemini\r\n# Hello, alice\n"


def test_a_handler_sees_no_certificate_as_none(tmp_path):
    assert visit(make_service(tmp_path)) == b"60 a client certificate is required\r\n"


def test_the_certificate_facts_match_the_fastcgi_parameters(tmp_path):
    from cryptography.hazmat.primitives import hashes

    alice, _ = issue("alice")
    seen = []
    service = make_service(tmp_path)
    service.site.handlers["static"] = lambda client, request, settings: (
        seen.append(client.tls.client_certificate), client.respond(51, "seen"))
    visit(service, alice)
    [facts] = seen
    assert isinstance(facts, gemfcgi.ClientCertificate)
    assert (facts.subject, facts.issuer, facts.common_name) == ("/CN=alice", "/CN=alice", "alice")
    assert facts.sha256 == alice.fingerprint(hashes.SHA256()).hex()
    assert facts.serial == alice.serial_number
    assert (facts.not_before, facts.not_after) == (alice.not_valid_before_utc, alice.not_valid_after_utc)
