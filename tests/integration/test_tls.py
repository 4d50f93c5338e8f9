"""TLS as Gemini wants it: versions, resumption, optional client certificates."""

from __future__ import annotations

import ssl
import subprocess

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
