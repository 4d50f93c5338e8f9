"""Certificates for tests: a CA, leaves it signs, with chosen validity."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    common_name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    ca: bool | None = False,
    subject: x509.Name | None = None,
    key_usage: x509.KeyUsage | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """
    A certificate for ``common_name`` (or the whole ``subject``), self-signed
    unless ``issuer`` is given; ``ca=None`` leaves out basicConstraints.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = subject or _name(common_name)
    issuer_name = issuer[0].subject if issuer else subject
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=30))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return builder.sign(signing_key, hashes.SHA256()), key


def write(directory: Path, name: str, pair) -> tuple[str, str]:
    certificate, key = pair
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


def legacy_ca(common_name: str = "Old CA admin@example"):
    """
    A CA as old ones are: its name a PrintableString holding '@', which
    OpenSSL takes and cryptography cannot read (nor make: pyOpenSSL re-signs
    what cryptography made under another name). Returns pyOpenSSL's
    certificate and key.
    """
    import warnings

    from OpenSSL import crypto

    placeholder = "Q" * len(common_name)
    certificate, key = issue(placeholder, ca=True)
    der = certificate.public_bytes(serialization.Encoding.DER)
    utf8 = b"\x0c" + bytes([len(placeholder)]) + placeholder.encode()
    der = der.replace(utf8, b"\x13" + bytes([len(common_name)]) + common_name.encode())
    held = crypto.load_certificate(crypto.FILETYPE_ASN1, der)
    signing_key = crypto.PKey.from_cryptography_key(key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        held.sign(signing_key, "sha256")
    return held, signing_key


def issue_by_legacy(common_name: str, authority) -> tuple[bytes, bytes]:
    """A leaf for ``common_name`` signed by a ``legacy_ca``: its PEM certificate and key."""
    import warnings

    from OpenSSL import crypto

    ca, ca_key = authority
    key = ec.generate_private_key(ec.SECP256R1())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        leaf = crypto.X509()
        leaf.set_version(2)
        leaf.get_subject().CN = common_name
        leaf.set_issuer(ca.get_subject())
        leaf.set_serial_number(x509.random_serial_number())
        leaf.set_notBefore((NOW - datetime.timedelta(days=1)).strftime("%Y%m%d%H%M%SZ").encode())
        leaf.set_notAfter((NOW + datetime.timedelta(days=30)).strftime("%Y%m%d%H%M%SZ").encode())
        leaf.set_pubkey(crypto.PKey.from_cryptography_key(key))
        leaf.sign(ca_key, "sha256")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return crypto.dump_certificate(crypto.FILETYPE_PEM, leaf), key_pem


def with_its_key_damaged(pem: bytes) -> bytes:
    """``pem`` with a bit of its public key's point flipped: read whole, its key then is no point."""
    certificate = x509.load_pem_x509_certificate(pem)
    der = certificate.public_bytes(serialization.Encoding.DER)
    point = certificate.public_key().public_bytes(serialization.Encoding.X962,
                                                  serialization.PublicFormat.UncompressedPoint)
    at = der.index(point) + 1
    damaged = der[:at] + bytes([der[at] ^ 1]) + der[at + 1:]
    body = base64.encodebytes(damaged).replace(b"\n", b"")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"
