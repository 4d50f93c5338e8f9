"""The twistd plugin, the embedded default, --gencert, and the example .tac."""

from __future__ import annotations

import os
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support import PROJECT_ROOT, TWISTD, fetch, start_command, start_server


def twistd(*args, env=None):
    full_env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    full_env.update(env or {})
    return subprocess.run([*TWISTD, *args], capture_output=True, timeout=60, env=full_env)


def fingerprint(path) -> bytes:
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256())


def test_twistd_help_lists_gemfcgi():
    assert b"gemfcgi" in twistd("--help").stdout


def test_embedded_default_serves_the_demo_capsule_and_keeps_its_certificate(tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    server = start_server("--listen", "tcp:0:interface=127.0.0.1", env=env)
    try:
        reply = fetch(server.port, f"gemini://localhost:{server.port}/")
        links = [line.split()[1] for line in reply.body.decode().splitlines() if line.startswith("=> ")]
        linked = {link: fetch(server.port, f"gemini://localhost:{server.port}{link}") for link in links}
        # The certificate names the loopback addresses too, and so does the
        # server: a URL written with one of them (no SNI then) is served.
        by_address = {
            host: fetch(server.port, f"gemini://{host}:{server.port}/", sni=None).header
            for host in ("127.0.0.1", "[::1]", "[::2]")
        }
    finally:
        server.stop()
    assert reply.header == b"20 text/gemini"
    assert b"gemfcgi" in reply.body and "/app/hello" in links and "/about.gmi" in links
    assert {link: r.status for link, r in linked.items()} == {link: 20 for link in links}
    assert b"This page comes from a FastCGI application" in linked["/app/hello"].body
    assert by_address == {
        "127.0.0.1": b"20 text/gemini",
        "[::1]": b"20 text/gemini",
        "[::2]": b"53 host not served here",
    }
    cert = tmp_path / "state" / "gemfcgi" / "cert.pem"
    key = tmp_path / "state" / "gemfcgi" / "key.pem"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert isinstance(parsed.public_key(), ec.EllipticCurvePublicKey)
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    first = fingerprint(cert)
    again = start_server("--listen", "tcp:0:interface=127.0.0.1", env=env)
    again.stop()
    assert fingerprint(cert) == first


def test_state_dir_option_is_used(tmp_path):
    server = start_server(
        "--listen", "tcp:0:interface=127.0.0.1", "--state-dir", str(tmp_path / "mine")
    )
    server.stop()
    assert (tmp_path / "mine" / "cert.pem").exists()


def test_gencert_writes_an_ecdsa_pair_by_default_and_rsa_on_request(tmp_path):
    result = twistd("gemfcgi", "--gencert", "--hostname", "example.org",
                    "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    ec_cert = x509.load_pem_x509_certificate((tmp_path / "example.org.pem").read_bytes())
    assert isinstance(ec_cert.public_key(), ec.EllipticCurvePublicKey)
    result = twistd("gemfcgi", "--gencert", "--rsa", "--hostname", "rsa.example",
                    "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rsa_cert = x509.load_pem_x509_certificate((tmp_path / "rsa.example.pem").read_bytes())
    assert isinstance(rsa_cert.public_key(), rsa.RSAPublicKey)
    assert rsa_cert.public_key().key_size == 2048


def test_gencert_never_overwrites_a_certificate(tmp_path):
    twistd("gemfcgi", "--gencert", "--hostname", "keep.example", "--state-dir", str(tmp_path))
    before = (tmp_path / "keep.example.pem").read_bytes()
    result = twistd("gemfcgi", "--gencert", "--hostname", "keep.example",
                    "--state-dir", str(tmp_path))
    assert result.returncode != 0
    assert b"already exists" in result.stderr + result.stdout
    assert (tmp_path / "keep.example.pem").read_bytes() == before


def test_example_tac_serves_a_directory(tmp_path, certificate):
    (tmp_path / "index.gmi").write_text("# from the tac\n")
    cert, key = certificate
    env = {
        "GEMINI_ROOT": str(tmp_path),
        "GEMINI_CERT": cert,
        "GEMINI_KEY": key,
        "GEMINI_LISTEN": "tcp:0:interface=127.0.0.1",
    }
    tac = str(PROJECT_ROOT / "conf" / "gemfcgi.tac")
    server = start_command([*TWISTD, "-n", "--pidfile=", "-y", tac], env=env)
    try:
        reply = fetch(server.port, f"gemini://localhost:{server.port}/")
    finally:
        server.stop()
    assert reply.body == b"# from the tac\n"
