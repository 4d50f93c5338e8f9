"""The self-signed certificates gemfcgi makes for quick mode and ``--gencert``."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from gemfcgi.certificates import make_self_signed


def names_in(cert_pem: bytes) -> tuple[str, list]:
    certificate = x509.load_pem_x509_certificate(cert_pem)
    common_name = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    alternatives = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return common_name, [name.value for name in alternatives]


def test_a_unicode_host_is_certified_by_its_a_label_the_name_clients_compare():
    assert names_in(make_self_signed(["bücher.example"])[0]) == (
        "bücher.example", ["xn--bcher-kva.example"]
    )


def test_an_ip_address_in_brackets_is_an_ip_address():
    import ipaddress

    assert names_in(make_self_signed(["[::1]"])[0]) == ("::1", [ipaddress.ip_address("::1")])


def test_a_name_that_is_no_host_is_refused_with_the_name():
    with pytest.raises(ValueError, match="not a host name or IP address: 'two words'"):
        make_self_signed(["two words"])


ATTRIBUTES = st.sampled_from([
    "2.5.4.20", "2.5.4.72", "2.5.4.16", "2.5.4.3", "2.5.4.6", "2.5.4.10", "2.5.4.11", "2.5.4.5", "2.5.4.42", "2.5.4.4", "2.5.4.12",
    "1.2.840.113549.1.9.1", "0.9.2342.19200300.100.1.1", "0.9.2342.19200300.100.1.25",
    "1.2.3.4.5",
])
KINDS = st.sampled_from(["UTF8String", "BMPString", "IA5String", "T61String"])
# BMPString holds the Basic Multilingual Plane only.
TEXT = st.text(st.characters(max_codepoint=0xFFFF, blacklist_categories=["Cs"]), min_size=1, max_size=12)
KEY = None


def _certificate_named(name):
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    global KEY
    KEY = KEY or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(KEY.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(KEY, hashes.SHA256())
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ATTRIBUTES, KINDS, TEXT), min_size=1, max_size=4))
def test_a_name_is_written_as_openssls_one_line_form(attributes):
    import warnings

    from cryptography.x509.name import _ASN1Type
    from cryptography.x509.oid import ObjectIdentifier
    from OpenSSL import crypto

    from gemfcgi.certificates import _one_line_name

    entries = []
    for oid, kind, text in attributes:
        if oid == "2.5.4.6":
            text, kind = "FR", "UTF8String"  # a country is two letters
        if kind == "IA5String":
            text = text.encode("ascii", "replace").decode()
        entries.append(x509.NameAttribute(ObjectIdentifier(oid), text, _type=getattr(_ASN1Type, kind)))
    certificate = _certificate_named(x509.Name(entries))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pyOpenSSL shows a name through OpenSSL's own X509_NAME_oneline.
        expected = repr(crypto.X509.from_cryptography(certificate).get_subject())
    assert f"<X509Name object '{_one_line_name(certificate.subject)}'>" == expected


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=8), st.integers(0, 7))
def test_a_bit_string_attribute_is_written_as_openssls_one_line_form(bits, unused):
    # x500UniqueIdentifier is a BIT STRING: its byte counting unused bits
    # was written as the value's first (\x07\x80 where OpenSSL writes \x80).
    import warnings

    from cryptography.x509.name import _ASN1Type
    from cryptography.x509.oid import NameOID
    from OpenSSL import crypto

    from gemfcgi.certificates import _one_line_name

    name = x509.Name([
        x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, bytes([unused]) + bits, _type=_ASN1Type.BitString),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "o"),
    ])
    certificate = _certificate_named(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = repr(crypto.X509.from_cryptography(certificate).get_subject())
    assert f"<X509Name object '{_one_line_name(certificate.subject)}'>" == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(ATTRIBUTES, TEXT), min_size=1, max_size=3), min_size=1, max_size=3))
def test_a_name_with_multi_valued_parts_is_written_as_openssls_one_line_form(parts):
    # CN=m1 + UID=u9 in one part of the name: OpenSSL joins them with '+'.
    import warnings

    from cryptography.x509.name import _ASN1Type
    from cryptography.x509.oid import ObjectIdentifier
    from hypothesis import assume
    from OpenSSL import crypto

    from gemfcgi.certificates import _one_line_name

    rdns = []
    for part in parts:
        entries = [
            x509.NameAttribute(ObjectIdentifier(oid), "FR" if oid == "2.5.4.6" else text,
                               _type=_ASN1Type.UTF8String)
            for oid, text in part
        ]
        assume(len(set(entries)) == len(entries))
        rdns.append(x509.RelativeDistinguishedName(entries))
    certificate = _certificate_named(x509.Name(rdns))
    written = _one_line_name(certificate.subject)
    assume(len(written) < 500)  # pyOpenSSL shows the first 512 bytes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = repr(crypto.X509.from_cryptography(certificate).get_subject())
    assert f"<X509Name object '{written}'>" == expected


def test_a_first_run_beside_another_waits_for_its_pair_instead_of_writing_half_of_its_own(tmp_path):
    # Two first runs at once each wrote a key and a certificate, in turn:
    # 11 of 200 such races left a key that did not match the certificate.
    import fcntl
    import os
    import subprocess
    import sys
    import time

    from gemfcgi.certificates import load_key_pair, write_key_pair
    from tests.support import PROJECT_ROOT

    lock = os.open(tmp_path / ".pair.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # this test is the other run, making its pair
    other = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from gemfcgi.certificates import ensure_self_signed; "
         "ensure_self_signed(Path(sys.argv[1]), ['localhost'])", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    time.sleep(1.0)
    assert other.poll() is None and not (tmp_path / "key.pem").exists()
    cert_pem, key_pem = make_self_signed(["localhost"])
    write_key_pair(tmp_path / "cert.pem", tmp_path / "key.pem", cert_pem, key_pem)
    os.close(lock)
    assert other.wait(30) == 0
    assert (tmp_path / "cert.pem").read_bytes() == cert_pem
    assert (tmp_path / "key.pem").read_bytes() == key_pem
    load_key_pair(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))


def test_a_certificate_only_openssl_can_read_is_known_by_what_openssl_reads():
    import hashlib

    from cryptography.hazmat.primitives import serialization
    from OpenSSL import crypto

    from gemfcgi.certificates import ClientCertificate
    from tests.certs import issue

    certificate, _ = issue("QQQQQQ")
    der = certificate.public_bytes(serialization.Encoding.DER).replace(
        b"\x0c\x06QQQQQQ", b"\x13\x06ab@c.d")  # a PrintableString with '@'
    identity = ClientCertificate.from_openssl(crypto.load_certificate(crypto.FILETYPE_ASN1, der))
    assert (identity.subject, identity.issuer, identity.common_name) == ("/CN=ab@c.d", "/CN=ab@c.d", "ab@c.d")
    assert identity.sha256 == hashlib.sha256(der).hexdigest()
    assert identity.serial == certificate.serial_number
    assert (identity.not_before, identity.not_after) == (
        certificate.not_valid_before_utc, certificate.not_valid_after_utc)
    assert identity.certificate is None and identity.openssl_certificate is not None


def test_what_openssl_alone_reads_of_a_certificate_is_read_whole_and_as_written():
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from OpenSSL import crypto

    from gemfcgi.certificates import ClientCertificate
    from tests.certs import NOW

    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [cx509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"unit {i:03d} " + "x" * 50)
                  for i in range(100)]  # a subject of some 6 KB
    # Another attribute's value, spelt to pass for a CN, then the CN.
    attributes += [cx509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "x/CN=admin@"),
                   cx509.NameAttribute(NameOID.COMMON_NAME, "Zoë real")]
    name = cx509.Name([cx509.RelativeDistinguishedName([a]) for a in attributes])
    certificate = (cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(5).not_valid_before(NOW).not_valid_after(NOW).sign(key, hashes.SHA256()))
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert der.count(b"\xa0\x03\x02\x01\x02") == 1
    # X.509 version 4, which there is not: cryptography refuses the whole certificate.
    der = der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x03")
    identity = ClientCertificate.from_openssl(crypto.load_certificate(crypto.FILETYPE_ASN1, der))
    assert identity.certificate is None
    assert identity.common_name == "Zoë real"
    assert identity.subject.endswith("/OU=x\\/CN=admin@/CN=Zo\\xC3\\xAB real")  # not cut at 4 KB
    assert identity.subject.startswith("/OU=unit 000 ")


@pytest.mark.parametrize("stamp, moment", [
    (b"20261126113454Z", (2026, 11, 26, 11, 34, 54)),
    (b"20261126113454.5Z", (2026, 11, 26, 11, 34, 54)),  # fractions of a second
    (b"20300101000000+0100", (2029, 12, 31, 23, 0, 0)),  # an offset
    (b"00000101000000Z", (1, 1, 1, 0, 0, 0)),  # year 0
    (b"garbage", (1, 1, 1, 0, 0, 0)),
    (b"20261301000000Z", (1, 1, 1, 0, 0, 0)),  # a month 13: no time at all
])
def test_a_certificates_time_is_read_as_openssl_takes_it(stamp, moment):
    import datetime

    from gemfcgi.certificates import _asn1_moment

    assert _asn1_moment(stamp) == datetime.datetime(*moment, tzinfo=datetime.timezone.utc)


def test_a_server_certificate_cryptography_cannot_read_is_said_so_not_missing(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from OpenSSL import crypto

    from gemfcgi.certificates import CertificateError, load_key_pair
    from tests.certs import legacy_ca

    held, key = legacy_ca("Old server admin@example")
    (tmp_path / "cert.pem").write_bytes(crypto.dump_certificate(crypto.FILETYPE_PEM, held))
    (tmp_path / "key.pem").write_bytes(key.to_cryptography_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(CertificateError) as raised:
        load_key_pair(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert str(raised.value) == (
        f"{tmp_path / 'cert.pem'}: cannot read the certificate (error parsing asn1 value: ParseError): "
        "reissue it, with its names as UTF8Strings"
    )


def test_a_client_names_odd_length_adds_no_warning_to_the_log():
    # cryptography warns of a CN over 64 characters: one line per new length,
    # as many as a client cares to send.
    import warnings

    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from OpenSSL import crypto

    from gemfcgi.certificates import ClientCertificate
    from tests.certs import NOW

    key = ec.generate_private_key(ec.SECP256R1())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the builder warns too
        name = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "c" * 300, _validate=False)])
    certificate = (cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(7).not_valid_before(NOW).not_valid_after(NOW).sign(key, hashes.SHA256()))
    peer = crypto.X509.from_cryptography(certificate)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        identity = ClientCertificate.from_openssl(peer)
        assert identity.common_name == "c" * 300
    assert [str(w.message) for w in seen] == []


def test_alternative_names_are_read_from_the_der_as_openssl_holds_them():
    import ipaddress

    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from OpenSSL import crypto

    from gemfcgi.certificates import _tlv, openssl_alternative_names
    from tests.certs import NOW

    key = ec.generate_private_key(ec.SECP256R1())
    name = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "up.test")])
    names = [cx509.DNSName("up.test"), cx509.DNSName("*.wild.test"), cx509.IPAddress(ipaddress.ip_address("::1")),
             cx509.IPAddress(ipaddress.ip_address("192.0.2.7")), cx509.RFC822Name("me@example")]
    certificate = (cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(3).not_valid_before(NOW).not_valid_after(NOW)
                   .add_extension(cx509.SubjectAlternativeName(names), critical=True)
                   .sign(key, hashes.SHA256()))
    peer = crypto.X509.from_cryptography(certificate)
    assert openssl_alternative_names(peer) == (["up.test", "*.wild.test"], ["::1", "192.0.2.7"])
    # Lengths, short and long form; one past the end is refused, not read.
    assert _tlv(b"\x04\x02ab", 0) == (0x04, 2, 4)
    assert _tlv(b"\x30\x81\x02ab", 0) == (0x30, 3, 5)
    with pytest.raises(ValueError):
        _tlv(b"\x04\x05ab", 0)


@pytest.mark.parametrize("which", ["cert", "key", "ocsp", "ca"])
def test_a_certificate_file_that_is_a_device_or_a_fifo_is_refused(tmp_path, which):
    # /dev/zero was read until memory ran out; a FIFO blocked the start.
    import os

    from gemfcgi.certificates import CertificateError, load_key_pair
    from gemfcgi.handlers.clientca import load_authorities
    from tests.certs import issue, write

    cert, key = write(tmp_path, "server", issue("localhost"))
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    for special, kind in (("/dev/zero", "a character device"), (fifo, "a FIFO")):
        with pytest.raises(CertificateError) as raised:
            if which == "ca":
                load_authorities([special])
            else:
                paths = {"cert": cert, "key": key, "ocsp": None, which: special}
                load_key_pair(paths["cert"], paths["key"], paths["ocsp"])
        assert f"not a regular file ({kind})" in str(raised.value)
        assert str(raised.value).startswith(special)


def _self_signed_files(tmp_path, key) -> tuple[str, str]:
    import datetime

    from cryptography.hazmat.primitives import hashes, serialization

    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(1)
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
                   .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")


@pytest.mark.parametrize("make, said", [
    (lambda: rsa.generate_private_key(65537, 1024),
     "an RSA key of 1024 bits, which OpenSSL refuses: use 2048 bits or more"),
    (lambda: ec.generate_private_key(ec.SECP256K1()),
     "an ECDSA key on secp256k1, for which TLS has no signature: use P-256, P-384 or P-521"),
    (lambda: ec.generate_private_key(ec.SECP192R1()),
     "an ECDSA key on secp192r1, for which TLS has no signature: use P-256, P-384 or P-521"),
], ids=["rsa-1024", "secp256k1", "p-192"])
def test_a_key_openssl_would_refuse_or_no_handshake_could_use_is_refused_as_it_is_read(tmp_path, make, said):
    # --check said "configuration OK"; the start then ended in a traceback
    # (or every handshake failed, unlogged), and prefork workers died
    # restarting while the parent listened.
    from gemfcgi.certificates import CertificateError, load_key_pair

    cert, key = _self_signed_files(tmp_path, make())
    with pytest.raises(CertificateError) as raised:
        load_key_pair(cert, key)
    assert str(raised.value) == f"{key}: {said}"


def test_an_rsa_pss_certificate_is_refused_as_it_is_read(tmp_path):
    import subprocess

    from gemfcgi.certificates import CertificateError, load_key_pair

    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa-pss", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "30", "-subj", "/CN=localhost"], check=True, capture_output=True)
    with pytest.raises(CertificateError) as raised:
        load_key_pair(cert, key)
    assert str(raised.value) == (f"{cert}: OpenSSL cannot serve this certificate and key (no certificate "
                                 "assigned; an RSA-PSS certificate: use an RSA or ECDSA one)")


def test_damaged_and_misformatted_files_are_named_for_what_they_are(tmp_path):
    # A cut or damaged certificate was told to be reissued "with its names
    # as UTF8Strings"; an empty or DER key got cryptography's FAQ link.
    from cryptography.hazmat.primitives import serialization

    from gemfcgi.certificates import CertificateError, load_key_pair

    key = ec.generate_private_key(ec.SECP256R1())
    cert, key_path = _self_signed_files(tmp_path, key)
    pem = (tmp_path / "cert.pem").read_bytes()
    lines = pem.splitlines(keepends=True)
    files = {
        "cut.pem": b"".join(lines[:5] + lines[-1:]),
        "trusted.pem": pem.replace(b"CERTIFICATE", b"TRUSTED CERTIFICATE"),
        "cert.der": x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER),
        "empty.key": b"",
        "key.der": key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    def refusal(cert_name: str, key_name: str) -> str:
        with pytest.raises(CertificateError) as raised:
            load_key_pair(str(tmp_path / cert_name), str(tmp_path / key_name))
        return str(raised.value).removeprefix(f"{tmp_path}/")

    assert refusal("cut.pem", "key.pem").startswith("cut.pem: the certificate is damaged or cut short (")
    assert "UTF8String" not in refusal("cut.pem", "key.pem")
    assert refusal("trusted.pem", "key.pem") == (
        "trusted.pem: a TRUSTED CERTIFICATE (openssl x509 -trustout): write it as a plain CERTIFICATE")
    assert refusal("cert.der", "key.pem") == ("cert.der: no PEM certificate found (a DER file? convert "
                                              "it: openssl x509 -inform DER -in CERT -out CERT.pem)")
    assert refusal("cert.pem", "empty.key") == "empty.key: cannot load private key: the file is empty"
    assert refusal("cert.pem", "key.der") == ("key.der: cannot load private key: no PEM key found (a DER "
                                              "key? convert it: openssl pkey -inform DER -in KEY -out KEY.pem)")
    load_key_pair(cert, key_path)  # the pair itself is fine


@pytest.mark.parametrize("gone", ["cert.pem", "key.pem"])
def test_half_a_self_signed_pair_is_an_error_and_the_half_left_is_kept(tmp_path, gone):
    # A new pair was made over it, at a start or a reload: every client that
    # trusted the certificate met another, and the other half was lost.
    from gemfcgi.certificates import CertificateError, ensure_self_signed

    ensure_self_signed(tmp_path, ["localhost"])
    kept = "key.pem" if gone == "cert.pem" else "cert.pem"
    before = (tmp_path / kept).read_bytes()
    (tmp_path / gone).rename(tmp_path / f"{gone}.away")
    with pytest.raises(CertificateError) as raised:
        ensure_self_signed(tmp_path, ["localhost"])
    assert str(raised.value) == (
        f"{tmp_path / kept}: {tmp_path / gone} is missing: put it back, or remove {tmp_path / kept} "
        "too to have a new pair made (clients that trusted the old certificate will warn of the new one)")
    assert (tmp_path / kept).read_bytes() == before and not (tmp_path / gone).exists()


def test_a_new_self_signed_pair_is_logged_with_its_fingerprint(tmp_path):
    from cryptography.hazmat.primitives import hashes
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi.certificates import ensure_self_signed

    with capturedLogs() as events:
        cert_path, _ = ensure_self_signed(tmp_path / "state", ["localhost", "127.0.0.1"])
        ensure_self_signed(tmp_path / "state", ["localhost", "127.0.0.1"])
    fingerprint = x509.load_pem_x509_certificate(cert_path.read_bytes()).fingerprint(hashes.SHA256())
    assert [formatEvent(event) for event in events] == [
        f"made a self-signed certificate for localhost, 127.0.0.1 in {tmp_path / 'state'}; its SHA-256 "
        "fingerprint, by which clients that trust it on first use will know it, is "
        f"{fingerprint.hex(':').upper()}"
    ]


@pytest.mark.parametrize("where", ["under-a-file", "in-proc"])
def test_a_state_directory_that_cannot_hold_the_pair_is_said_in_one_line(tmp_path, where):
    # Each was a traceback (NotADirectoryError, FileNotFoundError).
    from pathlib import Path

    from gemfcgi.certificates import CertificateError, ensure_self_signed

    (tmp_path / "index.gmi").write_text("x")
    directory = tmp_path / "index.gmi" / "state" if where == "under-a-file" else Path("/proc/gemfcgi-state")
    with pytest.raises(CertificateError) as raised:
        ensure_self_signed(directory, ["localhost"])
    assert str(raised.value).startswith(str(directory))
    assert ": cannot keep the self-signed certificate here: " in str(raised.value)


def _chain_files(tmp_path, intermediate_key) -> tuple[bytes, bytes, str]:
    """A leaf issued by an intermediate with ``intermediate_key``: the leaf's PEM, the intermediate's, the key's path."""
    import datetime

    from cryptography.hazmat.primitives import hashes, serialization

    now = datetime.datetime.now(datetime.timezone.utc)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "root")])
    middle_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "middle")])
    middle = (x509.CertificateBuilder().subject_name(middle_name).issuer_name(root_name)
              .public_key(intermediate_key.public_key()).serial_number(2)
              .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(root_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(middle_name).public_key(leaf_key.public_key()).serial_number(3)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=20))
            .sign(intermediate_key, hashes.SHA256()))
    (tmp_path / "key.pem").write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pem = serialization.Encoding.PEM
    return leaf.public_bytes(pem), middle.public_bytes(pem), str(tmp_path / "key.pem")


@pytest.mark.parametrize("make, said", [
    (lambda: rsa.generate_private_key(65537, 1024), "an RSA key of 1024 bits"),
    (lambda: ec.generate_private_key(ec.SECP192R1()), "an ECDSA key on secp192r1"),
], ids=["rsa-1024", "p-192"])
def test_a_chain_certificate_openssl_refuses_at_each_handshake_is_refused_as_it_is_read(tmp_path, make, said):
    # --check passed it; then every handshake failed with an internal error,
    # and the server logged nothing.
    from gemfcgi.certificates import CertificateError, load_key_pair

    leaf, middle, key = _chain_files(tmp_path, make())
    (tmp_path / "chain.pem").write_bytes(leaf + middle)
    with pytest.raises(CertificateError) as raised:
        load_key_pair(str(tmp_path / "chain.pem"), key)
    assert str(raised.value) == (f"{tmp_path / 'chain.pem'}: certificate 2 of the chain (CN=middle) has "
                                 f"{said}, which OpenSSL refuses in a chain: every handshake would fail")


def test_a_chain_with_a_damaged_cut_or_trusted_certificate_is_refused_naming_it(tmp_path):
    # A cut last certificate and a TRUSTED one were left out without a
    # word (clients got an incomplete chain); a damaged intermediate was
    # told to be reissued "with its names as UTF8Strings".
    from gemfcgi.certificates import CertificateError, load_key_pair

    leaf, middle, key = _chain_files(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    lines = middle.splitlines(keepends=True)
    files = {
        "cut": leaf + b"".join(lines[:4]),
        "trusted": leaf + middle.replace(b"CERTIFICATE", b"TRUSTED CERTIFICATE"),
        "damaged": leaf + b"".join(lines[:2] + lines[3:]),
    }
    said = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CertificateError) as raised:
            load_key_pair(str(tmp_path / name), key)
        said[name] = str(raised.value).removeprefix(f"{tmp_path / name}: ")
    incomplete = ("the file holds 2 certificates, of which 1 could be read: one is cut short (no END line) "
                  "or a TRUSTED CERTIFICATE, and clients would get an incomplete chain")
    assert said["cut"] == said["trusted"] == incomplete
    assert said["damaged"].startswith("certificate 2 of the chain is damaged or cut short (")
    (tmp_path / "whole").write_bytes(leaf + middle)
    load_key_pair(str(tmp_path / "whole"), key)


def test_a_certificate_whose_public_key_is_damaged_is_refused_naming_it_not_with_a_traceback(tmp_path):
    # cryptography reads the key only when asked: --check and the start
    # ended in a traceback ("ValueError: Invalid key").
    from gemfcgi.certificates import CertificateError, load_key_pair
    from tests.certs import with_its_key_damaged

    leaf, middle, key = _chain_files(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    said = {}
    for name, data in {"leaf": with_its_key_damaged(leaf) + middle,
                       "middle": leaf + with_its_key_damaged(middle)}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CertificateError) as raised:
            load_key_pair(str(tmp_path / name), key)
        said[name] = str(raised.value).removeprefix(f"{tmp_path / name}: ")
    assert said["leaf"].startswith("the certificate is damaged: its public key cannot be read (")
    assert said["middle"].startswith("certificate 2 of the chain is damaged: its public key cannot be read (")


def _as_version_2(pem: bytes) -> bytes:
    """``pem`` marked as a version 2 certificate (its signature no longer holds: only its reading matters)."""
    import base64

    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    marked = der.replace(bytes.fromhex("a003020102"), bytes.fromhex("a003020101"), 1)
    body = base64.encodebytes(marked).replace(b"\n", b"")
    return (b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(body[i:i + 64] for i in range(0, len(body), 64))
            + b"\n-----END CERTIFICATE-----\n")


def test_a_version_2_certificate_is_refused_as_served_and_left_to_openssl_as_a_ca(tmp_path):
    # cryptography raises InvalidVersion, no ValueError: both were tracebacks.
    from gemfcgi.certificates import CertificateError, load_key_pair
    from gemfcgi.handlers.clientca import _read_authorities

    cert, key = _self_signed_files(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    old = _as_version_2((tmp_path / "cert.pem").read_bytes())
    (tmp_path / "v2.pem").write_bytes(old)
    with pytest.raises(CertificateError) as refused:
        load_key_pair(str(tmp_path / "v2.pem"), key)
    assert str(refused.value) == (f"{tmp_path}/v2.pem: a version 2 certificate, which gemfcgi cannot read: "
                                  "reissue it as version 3")
    authorities = _read_authorities(old + (tmp_path / "cert.pem").read_bytes())
    assert (len(authorities.certificates), len(authorities.openssl_only)) == (1, 1)


@pytest.mark.parametrize("der", [b"\x30\x05\x02\x01", b"\x30\x82\x01", b"\x30", b""],
                         ids=["content cut", "length cut", "no length", "nothing"])
def test_der_that_runs_past_its_end_is_an_index_error_the_callers_catch(der):
    # Each caller of the DER reader takes IndexError for "cannot be told":
    # anything else out of it would be a traceback in the check.
    from gemfcgi.certificates import _der_element, _key_bits

    with pytest.raises(IndexError):
        _der_element(der, 0)
    with pytest.raises(IndexError):
        _key_bits(der)
