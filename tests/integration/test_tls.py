"""TLS as Gemini wants it: versions, resumption, optional client certificates."""

from __future__ import annotations

import ssl
import subprocess
import threading
import time

import pytest

from gemfcgi.certificates import make_self_signed, write_key_pair
from tests.support import client_context, fetch


def url(server):
    return f"gemini://localhost:{server.port}/"


def test_tls_1_3_is_preferred(server):
    assert fetch(server.port, url(server)).tls_version == "TLSv1.3"


def test_tls_1_2_is_accepted(server):
    context = client_context(maximum=ssl.TLSVersion.TLSv1_2)
    reply = fetch(server.port, url(server), context=context)
    assert (reply.status, reply.tls_version) == (20, "TLSv1.2")


def test_tls_1_1_is_refused(server):
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
         "-servername", "localhost", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
        input=f"gemini://localhost:{server.port}/\r\n".encode(),
        capture_output=True,
        timeout=30,
    )
    assert b"20 text/gemini" not in result.stdout
    assert result.returncode != 0


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_resumption_works(server, version):
    context = client_context(minimum=version, maximum=version)
    first = fetch(server.port, url(server), context=context)
    assert first.session is not None
    second = fetch(server.port, url(server), context=context, session=first.session)
    assert second.status == 20
    assert second.session_reused


def test_a_tls_1_2_session_without_a_ticket_is_not_kept_by_the_server(server, tmp_path):
    # OpenSSL's server cache kept each such session, with the client's
    # certificate, for two hours: 300 KB per connection with 100 KB of
    # names, 20,480 sessions at most, for any client to fill.
    cert_pem, key_pem = make_self_signed(["visitor"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    context = client_context(maximum=ssl.TLSVersion.TLSv1_2, cert=str(tmp_path / "c.pem"),
                             key=str(tmp_path / "k.pem"))
    context.options |= ssl.OP_NO_TICKET
    first = fetch(server.port, url(server), context=context)
    second = fetch(server.port, url(server), context=context, session=first.session)
    assert (first.status, second.status) == (20, 20)
    assert not second.session_reused


def test_client_certificate_is_optional(server):
    assert fetch(server.port, url(server)).status == 20


def test_any_client_certificate_is_accepted_at_the_tls_layer(server, tmp_path):
    cert_pem, key_pem = make_self_signed(["visitor"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    context = client_context(cert=str(tmp_path / "c.pem"), key=str(tmp_path / "k.pem"))
    assert fetch(server.port, url(server), context=context).status == 20
    server.wait_for_log(r"GET gemini://localhost/ 20 text/gemini")


def test_server_requests_a_client_certificate(server):
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
         "-servername", "localhost", "-tls1_2", "-state"],
        input=f"gemini://localhost:{server.port}/\r\n".encode(),
        capture_output=True,
        timeout=30,
    )
    assert b"certificate request" in (result.stdout + result.stderr).lower()


def test_key_updates_the_client_asks_for_during_a_large_download_leave_it_whole(server):
    # RFC 8446 4.6.3: a KeyUpdate may come at any time after the handshake,
    # and one with update_requested is answered with the server's own. In
    # a large reply OpenSSL writes to the socket itself; one read while a
    # record it began to send was not all out wrote the answer over it
    # ("bad length"), and the download was reset after about 7 MB.
    client = subprocess.Popen(
        ["openssl", "s_client", "-tls1_3", "-connect", f"127.0.0.1:{server.port}",
         "-servername", "localhost"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )

    def ask() -> None:
        # The request, then six KeyUpdates ("K" asks s_client for one with
        # update_requested) while the reply fills the socket.
        try:
            client.stdin.write(f"gemini://localhost:{server.port}/big.bin\r\n".encode())
            client.stdin.flush()
            time.sleep(0.8)
            for _ in range(6):
                client.stdin.write(b"K\n")
                client.stdin.flush()
                time.sleep(0.15)
        except OSError:
            pass  # s_client has ended: the assertion below says how

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    received = 0
    try:
        # Read slowly (about 6 MB/s) for 3 seconds, then as fast as possible.
        started = time.monotonic()
        while received < 24 * 1024 * 1024:
            chunk = client.stdout.read1(65536)
            if not chunk:
                break
            received += len(chunk)
            if time.monotonic() - started < 3:
                time.sleep(0.01)
    finally:
        client.kill()
        _, errors = client.communicate(timeout=10)
        asking.join(timeout=5)
    assert received >= 24 * 1024 * 1024, errors.decode(errors="replace")[-300:]
