"""Client certificates end to end, and SNI with openssl s_client."""

from __future__ import annotations

import datetime
import signal
import socket
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from gemfcgi.certificates import make_self_signed, write_key_pair
from tests.certs import NOW, issue, write
from tests.support import client_context, fetch, read_to_end, start_server

CONFIG = """
server "example.com" {{
    listen on 127.0.0.1 port 0
    alias "www.example.com"
    cert "{d}/example.com.pem"
    key "{d}/example.com.key"
    root "{d}/root"
    location "/members/*" {{ require client ca "{d}/ca.pem" }}
    location "/mine/*" {{ require client ca "{d}/pinned.pem" }}
}}
server "other.example" {{
    listen on 127.0.0.1 port 0
    cert "{d}/other.pem"
    key "{d}/other.key"
    root "{d}/root"
    require client ca "{d}/ca.pem"
}}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("clientca")
    (d / "root" / "members").mkdir(parents=True)
    (d / "root" / "index.gmi").write_text("# public\n")
    (d / "root" / "members" / "index.gmi").write_text("# members\n")
    for name, hosts in (("example.com", ["example.com", "www.example.com"]), ("other", ["other.example"])):
        cert_pem, key_pem = make_self_signed(hosts)
        write_key_pair(d / f"{name}.pem", d / f"{name}.key", cert_pem, key_pem)
    ca = issue("members ca", ca=True)
    write(d, "ca", ca)
    (d / "root" / "mine").mkdir()
    (d / "root" / "mine" / "index.gmi").write_text("# mine\n")
    clients = {
        "member": write(d, "member", issue("member", ca)),
        "stranger": write(d, "stranger", issue("stranger")),
        "expired": write(
            d, "expired",
            issue("expired", ca, not_before=NOW - datetime.timedelta(days=9),
                  not_after=NOW - datetime.timedelta(days=1)),
        ),
    }
    clients["pinned"] = write(d, "pinned", issue("me, self-signed"))
    (d / "gmid.conf").write_text(CONFIG.format(d=d))
    return d, clients


@pytest.fixture(scope="module")
def server(setup):
    d, _ = setup
    process = start_server("-c", str(d / "gmid.conf"))
    yield process
    process.stop()


def members(server, host="example.com", identity=None, clients=None):
    context = client_context(*clients[identity]) if identity else client_context()
    return fetch(server.port, f"gemini://{host}:{server.port}/members/", sni=host, context=context)


def test_no_certificate_gets_60(server, setup):
    assert members(server).status == 60


def test_certificate_not_signed_by_the_ca_gets_61(server, setup):
    assert members(server, identity="stranger", clients=setup[1]).status == 61


def test_expired_certificate_gets_62(server, setup):
    assert members(server, identity="expired", clients=setup[1]).status == 62


def test_certificate_signed_by_the_ca_is_let_in(server, setup):
    reply = members(server, identity="member", clients=setup[1])
    assert (reply.status, reply.body) == (20, b"# members\n")


def test_a_certificate_issued_after_the_servers_first_check_is_let_in(server, setup, tmp_path):
    # OpenSSL kept the time of the first check: every certificate issued
    # after it got 62 until a reload, and expired ones were let in.
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    d, clients = setup
    assert members(server, identity="member", clients=clients).status == 20
    ca = (x509.load_pem_x509_certificate((d / "ca.pem").read_bytes()),
          load_pem_private_key((d / "ca.key").read_bytes(), None))
    now = datetime.datetime.now(datetime.timezone.utc)
    newcomer = write(tmp_path, "newcomer", issue("newcomer", ca, not_before=now + datetime.timedelta(seconds=1)))
    time.sleep(2)
    reply = members(server, identity="newcomer", clients={"newcomer": newcomer})
    assert (reply.status, reply.body) == (20, b"# members\n")


def test_a_pinned_self_signed_certificate_lets_in_its_owner_alone(server, setup):
    # Its own certificate as the CA file: the usual way to keep a place to oneself.
    clients = setup[1]
    for identity, status in (("pinned", 20), ("stranger", 61), ("member", 61), (None, 60)):
        context = client_context(*clients[identity]) if identity else client_context()
        reply = fetch(server.port, f"gemini://example.com:{server.port}/mine/", sni="example.com",
                      context=context)
        assert (identity, reply.status) == (identity, status)


def test_public_pages_need_no_certificate(server):
    assert fetch(server.port, f"gemini://example.com:{server.port}/", sni="example.com").status == 20


def test_server_level_requirement_covers_every_path(server):
    reply = fetch(server.port, f"gemini://other.example:{server.port}/", sni="other.example")
    assert reply.status == 60


def s_client(server, *args, request="gemini://example.com:{port}/"):
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-ign_eof", *args],
        input=request.format(port=server.port).encode() + b"\r\n",
        capture_output=True,
        timeout=30,
    )


def certificate_subject(output: bytes) -> str:
    for line in output.decode("utf-8", "replace").splitlines():
        if line.startswith("subject="):
            return line
    return ""


@pytest.mark.parametrize(
    "sni, expected",
    [("example.com", "example.com"), ("www.example.com", "example.com"), ("other.example", "other.example")],
)
def test_s_client_gets_the_certificate_of_the_sni_name(server, sni, expected):
    result = s_client(server, "-servername", sni)
    assert f"CN = {expected}" in certificate_subject(result.stdout)


def test_s_client_without_sni_gets_the_first_servers_certificate(server):
    result = s_client(server, "-noservername")
    assert "CN = example.com" in certificate_subject(result.stdout)
    assert b"20 text/gemini" in result.stdout


@pytest.mark.parametrize("flag, version", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_s_client_with_each_tls_version(server, flag, version):
    result = s_client(server, "-servername", "example.com", flag)
    assert f"Protocol  : {version}".encode() in result.stdout or f", {version},".encode() in result.stdout
    assert b"20 text/gemini" in result.stdout


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_s_client_resumes_its_session(server, tmp_path, flag):
    session = tmp_path / "session.pem"
    first = s_client(server, "-servername", "example.com", flag, "-sess_out", str(session))
    assert b"20 text/gemini" in first.stdout
    second = s_client(server, "-servername", "example.com", flag, "-sess_in", str(session))
    assert b"Reused, TLS" in second.stdout


def test_s_client_with_a_client_certificate(server, setup):
    cert, key = setup[1]["member"]
    result = s_client(server, "-servername", "example.com", "-cert", cert, "-key", key,
                      request="gemini://example.com:{port}/members/")
    assert b"20 text/gemini" in result.stdout and b"# members" in result.stdout


def single_server(directory, server_lines: str = "", global_lines: str = ""):
    """A gmid.conf in ``directory`` with one server, its own new pair and root."""
    cert_pem, key_pem = make_self_signed(["example.com"])
    write_key_pair(directory / "c.pem", directory / "k.pem", cert_pem, key_pem)
    (directory / "root").mkdir(exist_ok=True)
    config = directory / "gmid.conf"
    config.write_text(
        (global_lines + "\n" if global_lines else "")
        + f'server "example.com" {{\n listen on 127.0.0.1 port 0\n cert "{directory}/c.pem"\n'
        f' key "{directory}/k.pem"\n root "{directory}/root"\n{server_lines}}}\n'
    )
    return config


def test_reload_picks_up_a_renewed_certificate_without_dropping_a_connection(setup, tmp_path):
    config = single_server(tmp_path)
    (tmp_path / "root" / "big.bin").write_bytes(b"r" * (4 * 1024 * 1024))
    server = start_server("-c", str(config))
    try:
        def fingerprint() -> bytes:
            with socket.create_connection(("127.0.0.1", server.port)) as raw:
                with client_context().wrap_socket(raw, server_hostname="example.com") as tls:
                    return x509.load_der_x509_certificate(
                        tls.getpeercert(binary_form=True)
                    ).fingerprint(hashes.SHA256())

        old = fingerprint()
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        slow = client_context().wrap_socket(raw, server_hostname="example.com")
        slow.sendall(f"gemini://example.com:{server.port}/big.bin\r\n".encode())
        data = slow.recv(4096)
        cert_pem, key_pem = make_self_signed(["example.com"])
        write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded")
        assert fingerprint() != old
        data, clean = read_to_end(slow, data)
        slow.close()
        assert clean and len(data.partition(b"\r\n")[2]) == 4 * 1024 * 1024
    finally:
        server.stop()


def test_reload_with_a_key_that_does_not_match_keeps_the_old_certificate(setup, tmp_path):
    config = single_server(tmp_path)
    server = start_server("-c", str(config))
    try:
        _, other_key = make_self_signed(["example.com"])
        (tmp_path / "k.pem").write_bytes(other_key)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(r"gmid\.conf:4: server 'example\.com': .*key does not match")
        assert fetch(server.port, f"gemini://example.com:{server.port}/", sni="example.com").status == 51
    finally:
        server.stop()


def make_ocsp_response(certificate, issuer, status=None, next_update=None) -> bytes:
    """A DER OCSP response about ``certificate``, signed by its issuing CA."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509 import ocsp

    status = status or ocsp.OCSPCertStatus.GOOD
    revoked = status == ocsp.OCSPCertStatus.REVOKED
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=certificate, issuer=issuer[0], algorithm=hashes.SHA256(),
            cert_status=status, this_update=min(NOW, next_update or NOW),
            next_update=next_update or NOW + datetime.timedelta(days=1),
            revocation_time=NOW if revoked else None,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer[0])
        .sign(issuer[1], hashes.SHA256())
    )
    return response.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def stapling(tmp_path):
    """Two servers whose certificates a CA issued, each with its own OCSP file.

    Stapling is for CA-issued certificates: OpenSSL staples nothing for a
    self-signed one, since no responder can speak for it.
    """
    from cryptography.hazmat.primitives import serialization

    ca = issue("stapling ca", ca=True)
    (tmp_path / "root").mkdir()
    blocks, leaves = [], {}
    for name in ("example.com", "other.example"):
        leaf = issue(name, ca)
        cert_path, key_path = write(tmp_path, name, leaf)
        # The file holds the chain, leaf first, as a CA hands it out.
        with open(cert_path, "ab") as chain:
            chain.write(ca[0].public_bytes(serialization.Encoding.PEM))
        (tmp_path / f"{name}.ocsp").write_bytes(make_ocsp_response(leaf[0], ca))
        leaves[name] = leaf[0]
        blocks.append(
            f'server "{name}" {{\n listen on 127.0.0.1 port 0\n cert "{cert_path}"\n'
            f' key "{key_path}"\n root "{tmp_path}/root"\n ocsp "{tmp_path}/{name}.ocsp"\n}}\n'
        )
    config = tmp_path / "gmid.conf"
    config.write_text("".join(blocks))
    return config, ca, leaves


def stapled_serial(output: bytes) -> str:
    """The serial number in the OCSP response s_client printed, or ''."""
    for line in output.decode("utf-8", "replace").splitlines():
        if line.strip().startswith("Serial Number:"):
            return line.split(":", 1)[1].strip()
    return ""


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("sni", ["example.com", "other.example"])
def test_ocsp_response_is_stapled_for_the_chosen_certificate(stapling, flag, sni):
    config, _, leaves = stapling
    server = start_server("-c", str(config))
    try:
        result = s_client(server, "-servername", sni, flag, "-status",
                          request=f"gemini://{sni}:{{port}}/")
    finally:
        server.stop()
    assert b"OCSP Response Status: successful" in result.stdout
    assert b"Cert Status: good" in result.stdout
    assert int(stapled_serial(result.stdout), 16) == leaves[sni].serial_number
    assert b"51 not found" in result.stdout


def test_reload_staples_the_refreshed_ocsp_response(stapling, tmp_path):
    from cryptography.x509 import ocsp

    config, ca, leaves = stapling
    server = start_server("-c", str(config))
    try:
        first = s_client(server, "-servername", "example.com", "-status")
        assert b"Cert Status: good" in first.stdout
        (tmp_path / "example.com.ocsp").write_bytes(
            make_ocsp_response(leaves["example.com"], ca, ocsp.OCSPCertStatus.REVOKED))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(r"configuration reloaded")
        second = s_client(server, "-servername", "example.com", "-status")
    finally:
        server.stop()
    assert b"Cert Status: revoked" in second.stdout


def test_empty_ocsp_file_staples_nothing(stapling, tmp_path):
    config, _, _ = stapling
    (tmp_path / "example.com.ocsp").write_bytes(b"")
    server = start_server("-c", str(config))
    try:
        result = s_client(server, "-servername", "example.com", "-status")
    finally:
        server.stop()
    assert b"OCSP response: no response sent" in result.stdout
    assert b"51 not found" in result.stdout


def test_missing_ocsp_file_is_a_config_error(tmp_path):
    config = single_server(tmp_path, f' ocsp "{tmp_path}/missing.der"\n')
    from tests.support import PROJECT_ROOT, TWISTD

    result = subprocess.run(
        [*TWISTD, "gemfcgi", "-c", str(config), "--check"], capture_output=True, timeout=60,
        env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert f"{config}:6: server 'example.com': {tmp_path}/missing.der: cannot read OCSP".encode() in result.stderr


def check_messages(config) -> list[str]:
    from gemfcgi.check import load_and_check
    from gemfcgi.config.errors import ConfigError

    try:
        _, warnings = load_and_check(str(config))
    except ConfigError as failed:
        return [str(d) for d in failed.diagnostics]
    return [str(d) for d in warnings]


def test_ocsp_file_that_is_not_a_response_is_a_config_error(stapling, tmp_path):
    config, _, _ = stapling
    (tmp_path / "example.com.ocsp").write_bytes(b"not an OCSP response")
    assert check_messages(config) == [
        f"{config}:6: server 'example.com': {tmp_path}/example.com.ocsp: not a DER OCSP response"
    ]


def test_ocsp_response_about_another_certificate_is_a_warning(stapling, tmp_path):
    config, ca, leaves = stapling
    (tmp_path / "example.com.ocsp").write_bytes(make_ocsp_response(leaves["other.example"], ca))
    [message] = check_messages(config)
    assert message.startswith(f"{config}:6: server 'example.com': {tmp_path}/example.com.ocsp: ")
    assert f"about serial {leaves['other.example'].serial_number:X}" in message


@pytest.mark.parametrize("named", ["another name", "the same name"])
def test_an_ocsp_response_about_the_same_serial_from_another_issuer_is_a_warning(stapling, tmp_path, named):
    # A serial is its issuer's: "configuration OK", and nothing stapled.
    config, ca, leaves = stapling
    leaf = leaves["example.com"]
    other_ca = issue("another ca" if named == "another name" else "stapling ca", ca=True)
    twin = (x509.CertificateBuilder().subject_name(leaf.subject).issuer_name(other_ca[0].subject)
            .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
            .serial_number(leaf.serial_number).not_valid_before(leaf.not_valid_before_utc)
            .not_valid_after(leaf.not_valid_after_utc).sign(other_ca[1], hashes.SHA256()))
    (tmp_path / "example.com.ocsp").write_bytes(make_ocsp_response(twin, other_ca))
    [message] = check_messages(config)
    assert message == (f"{config}:6: server 'example.com': {tmp_path}/example.com.ocsp: OCSP response is "
                       f"about serial {leaf.serial_number:X} of another issuer than the certificate's "
                       "(CN=stapling ca)")


@pytest.mark.parametrize("state", ["revoked", "expired"])
def test_a_revoked_or_expired_ocsp_response_is_a_warning(stapling, tmp_path, state):
    # A refresh that stopped stapled an old answer, and nothing said so:
    # clients that check it refuse the connection.
    from cryptography.x509 import ocsp

    config, ca, leaves = stapling
    if state == "revoked":
        response = make_ocsp_response(leaves["example.com"], ca, ocsp.OCSPCertStatus.REVOKED)
        said = "OCSP response says the certificate was revoked ("
    else:
        response = make_ocsp_response(leaves["example.com"], ca,
                                      next_update=NOW - datetime.timedelta(days=2))
        said = "OCSP response expired on "
    (tmp_path / "example.com.ocsp").write_bytes(response)
    [message] = check_messages(config)
    assert message.startswith(f"{config}:6: server 'example.com': {tmp_path}/example.com.ocsp: {said}")


def test_an_ocsp_response_answering_for_several_certificates_is_read_for_its_own(stapling, tmp_path):
    # RFC 6960 lets a response answer for several certificates: --check and
    # the start ended in a traceback ("contains 2 SINGLERESP structures").
    from cryptography.hazmat.primitives import serialization

    config, ca, leaves = stapling
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.crt").write_bytes(ca[0].public_bytes(pem))
    (tmp_path / "ca.key").write_bytes(ca[1].private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    index = []
    for name, leaf in leaves.items():
        (tmp_path / f"{name}.crt").write_bytes(leaf.public_bytes(pem))
        index.append(f"V\t991231000000Z\t\t{leaf.serial_number:X}\tunknown\t/CN={name}\n")
    (tmp_path / "index.txt").write_text("".join(index))
    (tmp_path / "index.txt.attr").write_text("unique_subject = no\n")
    subprocess.run(["openssl", "ocsp", "-issuer", tmp_path / "ca.crt", "-cert", tmp_path / "other.example.crt",
                    "-cert", tmp_path / "example.com.crt", "-no_nonce", "-reqout", tmp_path / "req.der"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "ocsp", "-index", tmp_path / "index.txt", "-rsigner", tmp_path / "ca.crt",
                    "-rkey", tmp_path / "ca.key", "-CA", tmp_path / "ca.crt", "-reqin", tmp_path / "req.der",
                    "-respout", tmp_path / "example.com.ocsp", "-ndays", "3"], check=True, capture_output=True)
    assert check_messages(config) == []
    server = start_server("-c", str(config))
    try:
        result = s_client(server, "-servername", "example.com", "-status")
    finally:
        server.stop()
    assert b"OCSP Response Status: successful" in result.stdout and b"51 not found" in result.stdout


@pytest.mark.parametrize("when", ["expired", "not-yet-valid"])
def test_a_server_certificate_out_of_its_dates_is_a_warning(tmp_path, when):
    # It passed --check, start-up and reloads without a word; clients
    # refused the capsule ("Certificate has expired").
    from tests.certs import issue, write

    if when == "expired":
        pair = issue("example.com", not_before=NOW - datetime.timedelta(days=60),
                     not_after=NOW - datetime.timedelta(days=30))
    else:
        pair = issue("example.com", not_before=NOW + datetime.timedelta(days=30),
                     not_after=NOW + datetime.timedelta(days=60))
    config = single_server(tmp_path)
    cert, key = write(tmp_path, "dated", pair)
    config.write_text(config.read_text().replace(f"{tmp_path}/c.pem", cert).replace(f"{tmp_path}/k.pem", key))
    [message] = check_messages(config)
    said = "expired on " if when == "expired" else "not valid before "
    assert message.startswith(f"{config}:3: server 'example.com': {cert}: {said}")
    assert message.endswith(" UTC: clients will refuse it, or warn")


def write_too_large_for_a_ticket(directory) -> None:
    """A client pair, ``big.pem`` and ``big.key``, whose certificate (66 KB) no session ticket holds."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "U" * 22000, _validate=False)] * 3)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")])
    big = (x509.CertificateBuilder().subject_name(names).issuer_name(issuer).public_key(key.public_key())
           .serial_number(1).not_valid_before(NOW - datetime.timedelta(days=1))
           .not_valid_after(NOW + datetime.timedelta(days=9)).sign(key, hashes.SHA256()))
    (directory / "big.pem").write_bytes(big.public_bytes(serialization.Encoding.PEM))
    (directory / "big.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def test_a_client_certificate_too_large_for_a_session_ticket_is_logged_when_the_handshake_fails(tmp_path):
    # The client got an internal-error alert, and the server said nothing.
    write_too_large_for_a_ticket(tmp_path)
    server = start_server("-c", str(single_server(tmp_path)))
    try:
        # OpenSSL's client asks for tickets (Python's does not, and is served).
        failed = s_client(server, "-servername", "example.com", "-cert", str(tmp_path / "big.pem"),
                          "-key", str(tmp_path / "big.key"))
        assert b"alert internal error" in failed.stderr
        server.wait_for_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed inside OpenSSL \(internal error; "
                            r"a client certificate too large for a session ticket")
        # A client's own failure (plain text to a TLS port) is not logged.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
            plain.recv(100)
        assert fetch(server.port, f"gemini://example.com:{server.port}/", sni="example.com").status == 51
        assert server.log.count("failed inside OpenSSL") == 1
    finally:
        server.stop()


def test_on_a_unix_listener_too_the_failure_is_logged_and_a_large_client_certificate_served(tmp_path):
    # Twisted's TLS layer, which unix and PROXY listeners keep, failed the
    # handshake without a line; and one of 40 KB, which a ticket holds,
    # waited out the request timeout for the rest of the server's flight.
    from tests.support import TWISTD, ServerProcess

    write_too_large_for_a_ticket(tmp_path)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "index.gmi").write_text("# here\n")
    cert_pem, key_pem = make_self_signed(["example.com"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    sock = tmp_path / "gemini.sock"
    server = ServerProcess([*TWISTD, "-n", "--pidfile=", "gemfcgi", "--root", str(tmp_path / "root"),
                            "--hostname", "example.com", "--cert", str(tmp_path / "c.pem"),
                            "--key", str(tmp_path / "k.pem"), "--listen", f"unix:{sock}"])
    try:
        server.wait_for_log("listening on")

        def ask(cert: str, key: str, *args: str, request: bytes = b"gemini://example.com/\r\n"
                ) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["openssl", "s_client", "-unix", str(sock), "-servername", "example.com", "-ign_eof",
                 "-cert", cert, "-key", key, *args],
                input=request, capture_output=True, timeout=8)

        # No request: one written as the server closes fails with EPIPE,
        # and s_client stops before it reads the alert waiting for it.
        failed = ask(str(tmp_path / "big.pem"), str(tmp_path / "big.key"), request=b"")
        assert b"alert internal error" in failed.stderr
        server.wait_for_log(r"TLS handshake with a client failed inside OpenSSL \(internal error; ")
        names = [f"n{n:04d}.example.org" for n in range(1500)]
        large_pem, large_key = make_self_signed(["visitor", *names])
        write_key_pair(tmp_path / "large.pem", tmp_path / "large.key", large_pem, large_key)
        assert 32 * 1024 < len(large_pem) < 60 * 1024
        for version in ("-tls1_2", "-tls1_3"):
            served = ask(str(tmp_path / "large.pem"), str(tmp_path / "large.key"), version)
            assert b"20 text/gemini\r\n# here\n" in served.stdout, served.stderr[-500:]
    finally:
        server.stop()


def test_a_server_certificate_whose_key_usage_forbids_signing_is_a_warning(tmp_path):
    # --check said OK; TLS 1.3 clients were served, and every TLS 1.2
    # handshake failed (ECDHE signs with the certificate's key).
    from tests.certs import issue, write

    usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=True, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False)
    config = single_server(tmp_path)
    cert, key = write(tmp_path, "agreeing", issue("example.com", key_usage=usage))
    config.write_text(config.read_text().replace(f"{tmp_path}/c.pem", cert).replace(f"{tmp_path}/k.pem", key))
    assert check_messages(config) == [
        f"{config}:3: server 'example.com': {cert}: its key usage lacks digitalSignature: TLS 1.2 "
        "handshakes fail (reissue it with digitalSignature)"
    ]
    server = start_server("-c", str(config))
    try:
        tls12 = s_client(server, "-servername", "example.com", "-tls1_2")
        tls13 = s_client(server, "-servername", "example.com", "-tls1_3")
    finally:
        server.stop()
    assert b"51 not found" not in tls12.stdout and b"51 not found" in tls13.stdout


def test_an_old_copy_of_a_renewed_ca_left_in_its_file_is_no_warning(tmp_path):
    # The warning said no client certificate the CA issued is accepted,
    # while its current copy, beside it, accepted them.
    from cryptography.hazmat.primitives import serialization

    from tests.certs import issue

    current = issue("Renewed CA", ca=True)
    old = (x509.CertificateBuilder().subject_name(current[0].subject).issuer_name(current[0].subject)
           .public_key(current[1].public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(NOW - datetime.timedelta(days=400))
           .not_valid_after(NOW - datetime.timedelta(days=2))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(current[1], hashes.SHA256()))
    (tmp_path / "cas.pem").write_bytes(old.public_bytes(serialization.Encoding.PEM)
                                       + current[0].public_bytes(serialization.Encoding.PEM))
    config = single_server(tmp_path, f' require client ca "{tmp_path}/cas.pem"\n')
    assert check_messages(config) == []
    (tmp_path / "cas.pem").write_bytes(old.public_bytes(serialization.Encoding.PEM))
    [alone] = check_messages(config)
    assert "expired on " in alone and alone.endswith("; no client certificate it issued is accepted")


def test_a_ca_whose_public_key_is_damaged_is_warned_of(tmp_path):
    # "configuration OK", and every client certificate it issued got 61.
    from cryptography.hazmat.primitives import serialization

    from tests.certs import issue, with_its_key_damaged

    authority = issue("Damaged CA", ca=True)[0]
    (tmp_path / "cas.pem").write_bytes(with_its_key_damaged(authority.public_bytes(serialization.Encoding.PEM)))
    config = single_server(tmp_path, f' require client ca "{tmp_path}/cas.pem"\n')
    [warned] = check_messages(config)
    assert warned.startswith(f"{config}:6: require client ca {tmp_path}/cas.pem: CN=Damaged CA: damaged: "
                             "its public key cannot be read (")
    assert warned.endswith("; no client certificate it issued is accepted")


def test_ocsp_for_a_self_signed_certificate_is_a_warning(tmp_path):
    from tests.support import PROJECT_ROOT, TWISTD

    config = single_server(tmp_path, f' ocsp "{tmp_path}/ocsp.der"\n')
    certificate = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    issuer = (certificate, load_key(tmp_path / "k.pem"))
    (tmp_path / "ocsp.der").write_bytes(make_ocsp_response(certificate, issuer))
    result = subprocess.run(
        [*TWISTD, "gemfcgi", "-c", str(config), "--check"], capture_output=True, timeout=60,
        env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0
    assert result.stdout == b"configuration OK\n"
    assert result.stderr.decode() == (
        f"warning: {config}:6: server 'example.com': {tmp_path}/ocsp.der: "
        "OCSP response is not stapled for a self-signed certificate\n"
    )


def load_key(path):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(path.read_bytes(), None)


@pytest.mark.parametrize(
    "protocols, offered, refused",
    [("tlsv1.3", "TLSv1.3", "TLSv1_2"), ("all:!tlsv1.3", "TLSv1.2", "TLSv1_3")],
)
def test_protocols_narrows_the_tls_versions(setup, tmp_path, protocols, offered, refused):
    import ssl

    config = single_server(tmp_path, global_lines=f'protocols "{protocols}"')
    (tmp_path / "root" / "index.gmi").write_text("# narrowed\n")
    server = start_server("-c", str(config))
    try:
        url = f"gemini://example.com:{server.port}/"
        assert fetch(server.port, url, sni="example.com").tls_version == offered
        version = getattr(ssl.TLSVersion, refused)
        other = client_context(minimum=version, maximum=version)
        with pytest.raises(ssl.SSLError):
            fetch(server.port, url, sni="example.com", context=other)
    finally:
        server.stop()


def odd_certificate(directory):
    """
    A certificate whose CN is a PrintableString holding '@', as old ones
    carry e-mail addresses: OpenSSL takes it, cryptography cannot read it.
    """
    from cryptography.hazmat.primitives import serialization

    import ssl

    certificate, key = issue("QQQQQQ")
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert der.count(b"\x0c\x06QQQQQQ") == 2  # subject and issuer, as UTF8Strings
    der = der.replace(b"\x0c\x06QQQQQQ", b"\x13\x06ab@c.d")
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(der).subject  # what the server once met unprepared
    cert_path, key_path = directory / "odd.pem", directory / "odd.key"
    cert_path.write_text(ssl.DER_cert_to_PEM_cert(der))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_a_certificate_whose_name_only_openssl_reads_is_served_logged_and_let_go(server, setup, tmp_path):
    # It was served, but its access line was a traceback, and the
    # connection was never let go: enough of them made every client get 41.
    context = client_context(*odd_certificate(tmp_path))
    for _ in range(3):
        reply = fetch(server.port, f"gemini://example.com:{server.port}/", sni="example.com", context=context)
        assert (reply.status, reply.body) == (20, b"# public\n")
    reply = fetch(server.port, f"gemini://example.com:{server.port}/members/", sni="example.com",
                  context=context)
    assert reply.status == 61
    server.wait_for_log(r"GET gemini://example\.com/members/ 61 ")
    # Every connection is let go: the count comes back to nothing (a
    # connection of the last exchange may still be closing as it is asked).
    deadline = time.monotonic() + 10
    while True:
        since = len(server.log)
        server.process.send_signal(signal.SIGUSR2)
        count = server.wait_for_log(r"(\d+) connected clients", since=since).group(1)
        if count == "0" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert count == "0"
    assert "Traceback" not in server.log and "Unhandled" not in server.log


def test_a_ca_file_whose_names_only_openssl_reads_vouches_for_its_certificates(tmp_path, certificate):
    # An old CA (its name a PrintableString holding '@') was refused at
    # load: "error parsing asn1 value", and the server would not start.
    from OpenSSL import crypto

    from tests.certs import issue_by_legacy, legacy_ca

    authority = legacy_ca()
    (tmp_path / "oldca.pem").write_bytes(crypto.dump_certificate(crypto.FILETYPE_PEM, authority[0]))
    member_pem, member_key = issue_by_legacy("member", authority)
    (tmp_path / "member.pem").write_bytes(member_pem)
    (tmp_path / "member.key").write_bytes(member_key)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "index.gmi").write_text("# old members\n")
    cert, key = certificate
    config = tmp_path / "gmid.conf"
    config.write_text(
        f'server "localhost" {{\n  listen on 127.0.0.1 port 0\n  cert "{cert}"\n  key "{key}"\n'
        f'  root "{tmp_path / "root"}"\n  require client ca "{tmp_path / "oldca.pem"}"\n}}\n'
    )
    server = start_server("-c", str(config))
    try:
        url = f"gemini://localhost:{server.port}/"
        member = fetch(server.port, url, context=client_context(str(tmp_path / "member.pem"),
                                                              str(tmp_path / "member.key")))
        assert (member.status, member.body) == (20, b"# old members\n")
        assert fetch(server.port, url).status == 60
        stranger = write(tmp_path, "stranger", issue("stranger"))
        assert fetch(server.port, url, context=client_context(*stranger)).status == 61
    finally:
        server.stop()


# -- what openssl makes, read without a traceback ---------------------------------------


def openssl(directory, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)


def openssl_ca(directory, name: str, key_args: list[str], subject: str = "") -> None:
    """``name.key`` and a self-signed CA ``name.pem``, the key made by ``openssl genpkey`` or ``ecparam``."""
    if key_args[0] == "ecparam":
        openssl(directory, *key_args, "-genkey", "-noout", "-out", f"{name}.key")
    else:
        openssl(directory, "genpkey", *key_args, "-out", f"{name}.key")
    openssl(directory, "req", "-x509", "-key", f"{name}.key", "-subj", subject or f"/CN={name}", "-days", "30",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-out", f"{name}.pem", *(["-utf8"] if subject else []))


def openssl_leaf(directory, ca: str, name: str = "example.com") -> None:
    """``name.key`` and ``name.pem`` (serial 0x42, issued by ``ca``), and ``name-chain.pem`` with the CA."""
    openssl(directory, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key")
    openssl(directory, "req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr")
    (directory / "ext.cnf").write_text(f"subjectAltName=DNS:{name}\nkeyUsage=digitalSignature\n")
    openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-set_serial", "0x42", "-days", "20", "-extfile", "ext.cnf", "-out", f"{name}.pem")
    (directory / f"{name}-chain.pem").write_bytes(
        (directory / f"{name}.pem").read_bytes() + (directory / f"{ca}.pem").read_bytes())


def openssl_ocsp(directory, ca: str, name: str, digest: str) -> None:
    """``name.ocsp``: the CA's answer for ``name.pem``, its CertID hashed with ``digest``."""
    (directory / "index.txt").write_text(f"V\t991231000000Z\t\t42\tunknown\t/CN={name}\n")
    (directory / "index.txt.attr").write_text("unique_subject = no\n")
    openssl(directory, "ocsp", "-issuer", f"{ca}.pem", digest, "-cert", f"{name}.pem", "-no_nonce",
            "-reqout", "req.der")
    openssl(directory, "ocsp", "-index", "index.txt", "-rsigner", f"{ca}.pem", "-rkey", f"{ca}.key",
            "-CA", f"{ca}.pem", "-reqin", "req.der", "-respout", f"{name}.ocsp", "-ndays", "3")


def served_with_ocsp(directory, chain: str, key: str, ocsp: str):
    (directory / "root").mkdir(exist_ok=True)
    config = directory / "gmid.conf"
    config.write_text(f'server "example.com" {{\n listen on 127.0.0.1 port 0\n cert "{directory}/{chain}"\n'
                      f' key "{directory}/{key}"\n root "{directory}/root"\n ocsp "{directory}/{ocsp}"\n}}\n')
    return config


@pytest.mark.parametrize("digest", ["-sha1", "-sha256", "-md5", "-sha3-256"])
def test_an_ocsp_response_of_any_certid_hash_is_read_without_a_false_warning(tmp_path, digest):
    # One hashed with MD5 or SHA3 ended --check and the start in a traceback.
    openssl_ca(tmp_path, "ca", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
    openssl_leaf(tmp_path, "ca")
    openssl_ocsp(tmp_path, "ca", "example.com", digest)
    assert check_messages(served_with_ocsp(tmp_path, "example.com-chain.pem", "example.com.key",
                                           "example.com.ocsp")) == []


def test_an_ocsp_response_from_a_ca_whose_key_is_a_compressed_point_is_no_other_issuers(tmp_path):
    # The key's hash was taken over cryptography's own form of it, uncompressed.
    openssl(tmp_path, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "plain.key")
    openssl(tmp_path, "ec", "-in", "plain.key", "-conv_form", "compressed", "-out", "ca.key")
    openssl(tmp_path, "req", "-x509", "-key", "ca.key", "-subj", "/CN=Compressed CA", "-days", "30",
            "-addext", "basicConstraints=critical,CA:TRUE", "-out", "ca.pem")
    openssl_leaf(tmp_path, "ca")
    openssl_ocsp(tmp_path, "ca", "example.com", "-sha1")
    assert check_messages(served_with_ocsp(tmp_path, "example.com-chain.pem", "example.com.key",
                                           "example.com.ocsp")) == []


def test_an_ocsp_response_for_a_certificate_whose_issuer_is_a_t61string_is_read(tmp_path):
    (tmp_path / "nombstr.cnf").write_text(
        "[req]\ndistinguished_name=dn\nstring_mask=nombstr\n[dn]\n")
    openssl(tmp_path, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key")
    openssl(tmp_path, "req", "-x509", "-config", "nombstr.cnf", "-utf8", "-key", "ca.key",
            "-subj", "/O=Grüße AG/CN=T61 CA", "-days", "30",
            "-addext", "basicConstraints=critical,CA:TRUE", "-out", "ca.pem")
    openssl_leaf(tmp_path, "ca")
    openssl_ocsp(tmp_path, "ca", "example.com", "-sha1")
    # A name cryptography cannot read ended --check and the start in a traceback.
    assert check_messages(served_with_ocsp(tmp_path, "example.com-chain.pem", "example.com.key",
                                           "example.com.ocsp")) == []


def test_a_ca_on_a_curve_cryptography_lacks_is_passed_over_and_one_with_explicit_parameters_warned_of(
        tmp_path):
    # The first ended --check in a traceback (UnsupportedAlgorithm), though
    # the other CA of the file served its clients; the second said nothing,
    # and every client certificate it issued got 61.
    openssl_ca(tmp_path, "odd", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp160r1"])
    openssl_ca(tmp_path, "explicit", ["ecparam", "-name", "prime256v1", "-param_enc", "explicit"])
    openssl_ca(tmp_path, "good", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
    (tmp_path / "cas.pem").write_bytes(b"".join((tmp_path / f"{name}.pem").read_bytes()
                                                for name in ("odd", "explicit", "good")))
    config = single_server(tmp_path, f' require client ca "{tmp_path}/cas.pem"\n')
    assert check_messages(config) == [
        f"{config}:6: require client ca {tmp_path}/cas.pem: CN=explicit: an ECDSA key with explicit curve "
        "parameters, which OpenSSL refuses in a chain; no client certificate it issued is accepted"]


def test_a_served_certificate_on_a_curve_cryptography_lacks_is_refused_naming_it(tmp_path):
    from gemfcgi.certificates import CertificateError, load_key_pair

    openssl_ca(tmp_path, "odd", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp160r1"])
    openssl_ca(tmp_path, "good", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
    (tmp_path / "chain.pem").write_bytes((tmp_path / "good.pem").read_bytes() + (tmp_path / "odd.pem").read_bytes())
    with pytest.raises(CertificateError) as refused:
        load_key_pair(str(tmp_path / "chain.pem"), str(tmp_path / "good.key"))
    assert str(refused.value).startswith(
        f"{tmp_path}/chain.pem: certificate 2 of the chain has a key of a kind gemfcgi cannot read (")


def test_a_ca_named_in_a_t61string_with_a_letter_beyond_ascii_is_left_to_openssl(tmp_path):
    # cryptography cannot read such a name: --check and the start ended in
    # a traceback, and a reload failed, though OpenSSL trusts the CA.
    (tmp_path / "t61.cnf").write_text("[req]\ndistinguished_name=dn\nstring_mask=nombstr\n[dn]\n")
    openssl(tmp_path, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key")
    openssl(tmp_path, "req", "-x509", "-config", "t61.cnf", "-utf8", "-key", "ca.key", "-subj", "/CN=Café CA",
            "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "ca.pem")
    config = single_server(tmp_path, f' require client ca "{tmp_path}/ca.pem"\n')
    assert check_messages(config) == []


def test_a_chain_through_a_ca_named_in_a_t61string_reaches_its_root_and_a_leaf_so_named_is_warned_of(tmp_path):
    # The check read such certificates not at all: an intermediate issued
    # by one was warned of as reaching no root, though OpenSSL accepts its
    # clients, and a leaf so named in the file drew no warning.
    (tmp_path / "t61.cnf").write_text("[req]\ndistinguished_name=dn\nstring_mask=nombstr\n[dn]\n")
    (tmp_path / "ca.cnf").write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n")
    for name in ("root", "middle", "lower", "leaf"):
        openssl(tmp_path, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", f"{name}.key")
    openssl(tmp_path, "req", "-x509", "-config", "t61.cnf", "-utf8", "-key", "root.key", "-subj", "/CN=Café CA",
            "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "root.pem")
    for name, issuer, subject, extensions in [("middle", "root", "/CN=Middle CA", "ca.cnf"),
                                              ("lower", "middle", "/CN=Lower CA", "ca.cnf")]:
        openssl(tmp_path, "req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr")
        openssl(tmp_path, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey",
                f"{issuer}.key", "-days", "20", "-extfile", extensions, "-out", f"{name}.pem")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"".join((tmp_path / f"{name}.pem").read_bytes() for name in ("lower", "middle", "root")))
    config = single_server(tmp_path, f' require client ca "{ca}"\n')
    assert check_messages(config) == []
    # A leaf named in a T61String, pinned in the file: OpenSSL refuses it as a CA.
    openssl(tmp_path, "req", "-x509", "-config", "t61.cnf", "-utf8", "-key", "leaf.key", "-subj", "/CN=Zoë",
            "-days", "30", "-addext", "basicConstraints=critical,CA:FALSE", "-out", "leaf.pem")
    (tmp_path / "leaf.cnf").write_text("basicConstraints=critical,CA:FALSE\n")
    openssl(tmp_path, "x509", "-in", "leaf.pem", "-CA", "root.pem", "-CAkey", "root.key", "-days", "20",
            "-extfile", "leaf.cnf", "-out", "leaf.pem")
    ca.write_bytes(ca.read_bytes() + (tmp_path / "leaf.pem").read_bytes())
    # Its issuer is in the file: it is let in as that root's client. The
    # warning said "neither it nor any client certificate it issued is accepted".
    openssl(tmp_path, "verify", "-CAfile", str(ca), "leaf.pem")
    assert check_messages(config) == [
        f"{config}:6: require client ca {ca}: CN=Zoë: not a CA certificate "
        "(basicConstraints CA:FALSE), nor self-signed; it vouches for no client; a client presenting it "
        "is let in through its issuer CN=Café CA, which the file holds"]
    # Alone in its file, nothing lets it in.
    alone = tmp_path / "alone.pem"
    alone.write_bytes((tmp_path / "leaf.pem").read_bytes())
    config = single_server(tmp_path, f' require client ca "{alone}"\n')
    assert f"require client ca {alone}: CN=Zoë: not a CA certificate (basicConstraints CA:FALSE), nor " \
        "self-signed; neither it nor any client certificate it issued is accepted" in \
        [message.split(": ", 1)[1] for message in check_messages(config)]


def test_an_intermediate_naming_a_t61_root_in_utf8_reaches_it_as_openssl_compares_names(tmp_path):
    # The names were compared as written: the same name as a T61String in
    # the root and a UTF8String in the intermediate's issuer drew "reaches
    # no root", though OpenSSL verifies the chain (its canonical form).
    import datetime

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    (tmp_path / "t61.cnf").write_text("[req]\ndistinguished_name=dn\nstring_mask=nombstr\n[dn]\n")
    openssl(tmp_path, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "root.key")
    openssl(tmp_path, "req", "-x509", "-config", "t61.cnf", "-utf8", "-key", "root.key", "-subj",
            "/CN=Racine Été", "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "root.pem")
    root_key = serialization.load_pem_private_key((tmp_path / "root.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    middle = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Middle CA")]))
              .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Racine Été")]))
              .public_key(key.public_key()).serial_number(7)
              .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=20))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(root_key, hashes.SHA256()))
    ca = tmp_path / "ca.pem"
    ca.write_bytes((tmp_path / "root.pem").read_bytes() + middle.public_bytes(serialization.Encoding.PEM))
    openssl(tmp_path, "verify", "-CAfile", str(ca), str(ca))  # OpenSSL takes the chain
    config = single_server(tmp_path, f' require client ca "{ca}"\n')
    assert check_messages(config) == []


def test_an_ocsp_response_that_does_not_know_the_certificate_is_a_warning(tmp_path):
    openssl_ca(tmp_path, "ca", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
    openssl_leaf(tmp_path, "ca")
    openssl_ocsp(tmp_path, "ca", "example.com", "-sha256")
    (tmp_path / "index.txt").write_text("")  # the responder knows no certificate
    openssl(tmp_path, "ocsp", "-index", "index.txt", "-rsigner", "ca.pem", "-rkey", "ca.key", "-CA", "ca.pem",
            "-reqin", "req.der", "-respout", "example.com.ocsp", "-ndays", "3")
    config = served_with_ocsp(tmp_path, "example.com-chain.pem", "example.com.key", "example.com.ocsp")
    assert check_messages(config) == [
        f"{config}:6: server 'example.com': {tmp_path}/example.com.ocsp: OCSP response says its responder "
        "does not know the certificate"]


def test_a_weak_chain_certificate_named_in_a_t61string_beyond_ascii_is_refused_saying_so(tmp_path):
    # Its name went into the message through cryptography, which cannot read it.
    from gemfcgi.certificates import CertificateError, load_key_pair

    (tmp_path / "t61.cnf").write_text("[req]\ndistinguished_name=dn\nstring_mask=nombstr\n[dn]\n")
    openssl(tmp_path, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-192", "-out", "ca.key")
    openssl(tmp_path, "req", "-x509", "-config", "t61.cnf", "-utf8", "-key", "ca.key", "-subj", "/CN=Café CA",
            "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE", "-out", "ca.pem")
    openssl_leaf(tmp_path, "ca")
    with pytest.raises(CertificateError) as refused:
        load_key_pair(str(tmp_path / "example.com-chain.pem"), str(tmp_path / "example.com.key"))
    assert str(refused.value) == (
        f"{tmp_path}/example.com-chain.pem: certificate 2 of the chain (CN=Café CA) has an "
        "ECDSA key on secp192r1, which OpenSSL refuses in a chain: every handshake would fail")
