"""
Certificates on disk: loading PEM pairs and making self-signed ones.

Gemini clients pin a capsule's certificate on first use, so a generated
certificate is written once and reused; it is never silently replaced.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence, Union

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import NameOID
from twisted.logger import Logger

from gemfcgi.gemini.hosts import canonical_host
from gemfcgi.opensslbindings import ffi, lib
from gemfcgi.regularfile import read_regular_file

if TYPE_CHECKING:
    from OpenSSL import crypto

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]

VALIDITY = datetime.timedelta(days=3650)

log = Logger()


class CertificateError(Exception):
    """A certificate or key that cannot be used, with the file it came from (``path``)."""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path


def _unusable(path: str, why: str) -> CertificateError:
    return CertificateError(f"{path}: {why}", path)


@dataclass(frozen=True)
class KeyPair:
    """A certificate chain (leaf first) and its private key."""

    chain: tuple[x509.Certificate, ...]
    key: PrivateKey
    cert_path: str
    key_path: str
    ocsp: bytes = b""
    # What each file held as it was read (by path): a prefork parent hands
    # these to its workers, which serve what it checked.
    files: Mapping[str, bytes] = field(default_factory=dict, compare=False, repr=False)


# The files a prefork worker was handed by its parent (``use_files``), read
# from here rather than the disk: every worker of a generation, those
# restarted later too, serves what the parent read and checked.
_handed: dict[str, bytes] = {}


def use_files(files: Mapping[str, bytes]) -> None:
    """From now on, read these paths' certificate, key, OCSP and CA files from ``files``."""
    _handed.clear()
    _handed.update(files)


def read_key_file(path: str) -> bytes:
    """A certificate, key, OCSP or CA file: as handed (``use_files``), else from the disk."""
    handed = _handed.get(path)
    return read_regular_file(path) if handed is None else handed


def load_key_pair(cert_path: str, key_path: str, ocsp_path: Optional[str] = None) -> KeyPair:
    """
    Read a PEM chain and key, checking that the key belongs to the leaf,
    and the DER OCSP response to staple (an empty file staples nothing).
    """
    ocsp = b""
    if ocsp_path is not None:
        try:
            ocsp = read_key_file(ocsp_path)
        except OSError as e:
            raise _unusable(ocsp_path, f"cannot read OCSP response: {e.strerror}") from None
    try:
        cert_data = read_key_file(cert_path)
    except OSError as e:
        raise _unusable(cert_path, f"cannot read certificate: {e.strerror}") from None
    try:
        key_data = read_key_file(key_path)
    except OSError as e:
        raise _unusable(key_path, f"cannot read key: {e.strerror}") from None
    try:
        chain = tuple(x509.load_pem_x509_certificates(cert_data))
    except x509.InvalidVersion:
        raise _unusable(cert_path, "a version 2 certificate, which gemfcgi cannot read: reissue it "
                        "as version 3") from None
    except ValueError as e:
        if b"-----BEGIN TRUSTED CERTIFICATE-----" in cert_data:
            raise _unusable(cert_path, "a TRUSTED CERTIFICATE (openssl x509 -trustout): write it "
                            "as a plain CERTIFICATE") from None
        if b"-----BEGIN CERTIFICATE-----" not in cert_data:
            hint = "" if b"-----BEGIN" in cert_data or not cert_data.strip() else \
                " (a DER file? convert it: openssl x509 -inform DER -in CERT -out CERT.pem)"
            raise _unusable(cert_path, f"no PEM certificate found{hint}") from None
        said = str(e).split(" {", 1)[0].replace(_CRYPTOGRAPHY_FAQ, "")
        number, block = _first_unreadable(cert_data)
        which = "the certificate" if number == 1 else f"certificate {number} of the chain"
        if not _openssl_reads(block):
            raise _unusable(cert_path, f"{which} is damaged or cut short ({said})") from None
        # One that only OpenSSL reads: a PrintableString holding '@' is the
        # usual cause, in old certificates.
        raise _unusable(cert_path, f"cannot read {which} ({said}): "
                        "reissue it, with its names as UTF8Strings") from None
    begun = len(_PEM_CERTIFICATE.findall(cert_data))
    if begun > len(chain):
        # cryptography passes over a block without its END line, or of
        # another label: the chain sent would lack it.
        raise _unusable(cert_path, f"the file holds {begun} certificates, of which {len(chain)} could "
                        "be read: one is cut short (no END line) or a TRUSTED CERTIFICATE, and clients "
                        "would get an incomplete chain")
    for number, certificate in enumerate(chain, 1):
        which = "the certificate" if number == 1 else f"certificate {number} of the chain"
        try:
            # cryptography reads a certificate's key only when asked.
            certificate.public_key()
        except ValueError as e:
            raise _unusable(cert_path, f"{which} is damaged: its public key cannot be read ({e})") from None
        except UnsupportedAlgorithm as e:
            raise _unusable(cert_path, f"{which} has a key of a kind gemfcgi cannot read ({e}): use "
                            "an RSA key, or ECDSA on P-256, P-384 or P-521") from None
    if not key_data.strip():
        raise _unusable(key_path, "cannot load private key: the file is empty")
    if b"-----BEGIN" not in key_data:
        raise _unusable(key_path, "cannot load private key: no PEM key found (a DER key? "
                        "convert it: openssl pkey -inform DER -in KEY -out KEY.pem)")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as e:
        raise _unusable(key_path, f"cannot load private key: {str(e).replace(_CRYPTOGRAPHY_FAQ, '')}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise _unusable(key_path, "only ECDSA and RSA keys are supported")
    # What OpenSSL would refuse as it builds the TLS context, or take and
    # then fail every handshake with, is said here: at --check and at a
    # reload, not as a traceback at start-up, nor by workers that die
    # restarting while their parent waits.
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in _TLS_CURVES:
        raise _unusable(key_path, f"an ECDSA key on {key.curve.name}, for which TLS has no "
                        "signature: use P-256, P-384 or P-521")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise _unusable(key_path, f"an RSA key of {key.key_size} bits, which OpenSSL refuses: "
                        f"use {MIN_RSA_BITS} bits or more")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != chain[0].public_key().public_bytes(
        encoding, public
    ):
        raise _unusable(key_path, f"key does not match the certificate in {cert_path}")
    for number, certificate in enumerate(chain[1:], 2):
        weak = _weak_in_a_chain(certificate)
        if weak is not None:
            raise _unusable(cert_path, f"certificate {number} of the chain "
                            f"({named(certificate)}) has {weak}, which OpenSSL refuses "
                            "in a chain: every handshake would fail")
    refused = _openssl_refuses(chain[0], key)
    if refused is not None:
        if chain[0].public_key_algorithm_oid == x509.oid.PublicKeyAlgorithmOID.RSASSA_PSS:
            refused += "; an RSA-PSS certificate: use an RSA or ECDSA one"
        raise _unusable(cert_path, f"OpenSSL cannot serve this certificate and key ({refused})")
    if ocsp:
        try:
            x509_ocsp.load_der_ocsp_response(ocsp)
        except ValueError:
            raise _unusable(ocsp_path, "not a DER OCSP response") from None
    read_files = {cert_path: cert_data, key_path: key_data}
    if ocsp_path is not None:
        read_files[ocsp_path] = ocsp
    return KeyPair(chain, key, cert_path, key_path, ocsp, read_files)


# What cryptography adds to a PEM file's error, for a reader of its own.
_CRYPTOGRAPHY_FAQ = " See https://cryptography.io/en/latest/faq/#why-can-t-i-import-my-pem-file for more details."

# The curves TLS signs with (RFC 8446 4.2.3): OpenSSL takes a key on any
# other, and then fails every handshake.
_TLS_CURVES = {"secp256r1", "secp384r1", "secp521r1"}
MIN_RSA_BITS = 2048


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----")
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)


def _first_unreadable(cert_data: bytes) -> tuple[int, bytes]:
    """The number (from 1) and PEM block of the first certificate cryptography cannot read."""
    for number, found in enumerate(_PEM_BLOCK.finditer(cert_data), 1):
        try:
            x509.load_pem_x509_certificate(found.group())
        except ValueError:
            return number, found.group()
    return 1, cert_data


def _weak_in_a_chain(certificate: x509.Certificate) -> Optional[str]:
    """A key below OpenSSL's security level in a chain certificate (what it refuses at handshakes)."""
    public = certificate.public_key()
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        return f"an RSA key of {public.key_size} bits"
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.key_size < 224:
        return f"an ECDSA key on {public.curve.name}"
    return None


def _openssl_reads(cert_data: bytes) -> bool:
    """Whether OpenSSL reads the first certificate of ``cert_data`` (where cryptography did not)."""
    from OpenSSL import crypto

    try:
        crypto.load_certificate(crypto.FILETYPE_PEM, cert_data)
    except crypto.Error:
        return False
    return True


def _openssl_refuses(leaf: x509.Certificate, key: PrivateKey) -> Optional[str]:
    """OpenSSL's reason for refusing the pair in a server context (an RSA-PSS one), or None."""
    from OpenSSL import SSL

    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    try:
        context.use_certificate(leaf)
        context.use_privatekey(key)
        context.check_privatekey()
    except SSL.Error as error:
        reasons = [reason for *_, reason in error.args[0]] if error.args and error.args[0] else []
        return "; ".join(reasons) or "refused"
    return None


def ocsp_mismatch(pair: KeyPair) -> Optional[str]:
    """
    Why the pair's OCSP response cannot be stapled usefully, or None.

    OpenSSL staples nothing for a self-signed certificate, and clients
    discard a response about another certificate, so both are worth a
    warning at ``--check`` rather than a silent no-op.
    """
    if not pair.ocsp:
        return None
    leaf = pair.chain[0]
    fields = _tbs_fields(leaf)
    if fields[ISSUER] == fields[SUBJECT]:
        return "OCSP response is not stapled for a self-signed certificate"
    response = x509_ocsp.load_der_ocsp_response(pair.ocsp)
    if response.response_status != x509_ocsp.OCSPResponseStatus.SUCCESSFUL:
        return f"OCSP response status is {response.response_status.name}, not SUCCESSFUL"
    # A response may answer for several certificates (RFC 6960); a client
    # takes the answer about its server's.
    answers = list(response.responses)
    with warnings.catch_warnings():
        # A serial of 0, which cryptography reads with a deprecation warning
        # that would come out in the check's report.
        warnings.simplefilter("ignore")
        serial = leaf.serial_number
    same_serial = [one for one in answers if one.serial_number == serial]
    if not same_serial:
        serials = ", ".join(f"{one.serial_number:X}" for one in answers) or "none"
        return f"OCSP response is about serial {serials}, not the certificate's {serial:X}"
    # A serial is its issuer's: another CA's certificate may have the same.
    answer = next((one for one in same_serial if _about_the_issuer_of(one, pair.chain)), None)
    if answer is None:
        return (f"OCSP response is about serial {serial:X} of another issuer than the "
                f"certificate's ({named(leaf, 'issuer')})")
    # A refresh that stopped (a broken cron job) staples an old answer:
    # clients that check it refuse the connection.
    if answer.certificate_status == x509_ocsp.OCSPCertStatus.UNKNOWN:
        return "OCSP response says its responder does not know the certificate"
    if answer.certificate_status == x509_ocsp.OCSPCertStatus.REVOKED:
        return f"OCSP response says the certificate was revoked ({_moment(answer.revocation_time_utc)})"
    next_update = answer.next_update_utc
    if next_update is not None and next_update < datetime.datetime.now(datetime.timezone.utc):
        return f"OCSP response expired on {_moment(next_update)} (its next update): refresh it and reload"
    return None


def _about_the_issuer_of(answer: Any, chain: Sequence[x509.Certificate]) -> bool:
    """
    Whether an OCSP answer names the issuer of ``chain``'s first certificate
    (RFC 6960 4.1.1): by the hash of its name as the certificate encodes
    it, and of its key's bits as the issuer's certificate holds them, when
    the chain has it. True where it cannot be told (a hash cryptography
    does not know).
    """
    try:
        algorithm = answer.hash_algorithm
        issuer_name = _tbs_fields(chain[0])[ISSUER]
        if _digest(algorithm, issuer_name) != answer.issuer_name_hash:
            return False
        issuer = next((each for each in chain[1:] if _tbs_fields(each)[SUBJECT] == issuer_name), None)
        if issuer is None:
            return True
        return _digest(algorithm, _key_bits(_tbs_fields(issuer)[PUBLIC_KEY])) == answer.issuer_key_hash
    except (UnsupportedAlgorithm, ValueError, IndexError):
        return True


def named(certificate: x509.Certificate, field: str = "subject") -> str:
    """
    The certificate's ``subject`` or ``issuer`` for a message; one
    cryptography cannot read (a T61String beyond ASCII) as OpenSSL reads it.
    """
    try:
        return getattr(certificate, field).rfc4514_string()
    except ValueError:
        pass
    # As OpenSSL reads it: a T61String's bytes are most often UTF-8 (what
    # ``openssl req -utf8`` writes there), else Latin-1.
    parts = []
    for kind, value in reversed(_openssl_name(certificate, field).get_components()):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")
        parts.append(f"{kind.decode('ascii', 'replace')}={text}")
    return ",".join(parts) or "an empty name"


def _openssl_name(certificate: x509.Certificate, field: str) -> Any:
    """The ``subject`` or ``issuer`` as pyOpenSSL's ``X509Name``, which OpenSSL reads whatever its strings."""
    from OpenSSL import crypto

    openssl = crypto.X509.from_cryptography(certificate)
    with warnings.catch_warnings():
        # pyOpenSSL deprecates its names for cryptography's, which are what
        # cannot read this one.
        warnings.simplefilter("ignore", DeprecationWarning)
        return openssl.get_subject() if field == "subject" else openssl.get_issuer()


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


# The fields of a TBSCertificate (RFC 5280 4.1) after its version, by position.
ISSUER, SUBJECT, PUBLIC_KEY = 2, 4, 5


def same_name(one: x509.Certificate, one_field: str, other: x509.Certificate, other_field: str) -> bool:
    """
    Whether ``one``'s ``subject`` or ``issuer`` is ``other``'s: as
    cryptography reads names, or as OpenSSL compares them where it cannot
    read one (a T61String beyond ASCII, which OpenSSL reads).
    """
    try:
        return getattr(one, one_field) == getattr(other, other_field)
    except ValueError:
        # OpenSSL's comparison (X509_NAME_cmp), on the canonical form it
        # verifies chains with: a T61String and a UTF8String of the same
        # name are the same issuer to it.
        return _openssl_name(one, one_field) == _openssl_name(other, other_field)


def signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """
    Whether ``issuer``'s key made ``certificate``'s signature. Asked of the
    key alone: cryptography's ``verify_directly_issued_by`` reads both names
    first, and fails on one it cannot read (a T61String beyond ASCII).
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import dsa, ed448, ed25519

    try:
        key = issuer.public_key()
        signature, signed = certificate.signature, certificate.tbs_certificate_bytes
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed, certificate.signature_algorithm_parameters,
                       certificate.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed, certificate.signature_algorithm_parameters)
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, signed)
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, signed, certificate.signature_hash_algorithm)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def self_issued(certificate: x509.Certificate) -> bool:
    """Whether the certificate names itself as its issuer (a root, or a pinned leaf)."""
    return same_name(certificate, "issuer", certificate, "subject")


def _tbs_fields(certificate: x509.Certificate) -> list[bytes]:
    """
    The DER of each field of ``certificate``'s TBSCertificate from its
    serial number on, as written: names and keys read this way need
    nothing of cryptography's parsing, which some encodings fail (a
    T61String name, a key on a curve it lacks) and which writes a key
    again in its own form (an EC point uncompressed).
    """
    der = certificate.tbs_certificate_bytes
    _, at, end = _der_element(der, 0)
    fields = []
    while at < end:
        tag, content, after = _der_element(der, at)
        if tag != 0xA0:  # the explicit [0] version
            fields.append(der[at:after])
        at = after
    return fields


def _key_bits(public_key_info: bytes) -> bytes:
    """The content of a SubjectPublicKeyInfo's BIT STRING, which OCSP hashes."""
    _, inside, _ = _der_element(public_key_info, 0)
    _, _, after_algorithm = _der_element(public_key_info, inside)  # AlgorithmIdentifier
    _, bits, end = _der_element(public_key_info, after_algorithm)
    return public_key_info[bits + 1:end]  # after the count of unused bits


def explicit_ec_parameters(certificate: x509.Certificate) -> bool:
    """
    Whether the certificate's EC key spells its curve out (explicit
    parameters) rather than naming it: OpenSSL refuses such a key in a
    chain it verifies.
    """
    try:
        info = _tbs_fields(certificate)[PUBLIC_KEY]
        _, inside, _ = _der_element(info, 0)
        _, algorithm, _ = _der_element(info, inside)
        _, oid, after_oid = _der_element(info, algorithm)
        if info[oid:after_oid] != _EC_PUBLIC_KEY_OID:
            return False
        return info[after_oid] == 0x30  # a SEQUENCE of parameters, not a curve's OID
    except IndexError:
        return False


# id-ecPublicKey, 1.2.840.10045.2.1, as DER content.
_EC_PUBLIC_KEY_OID = bytes.fromhex("2a8648ce3d0201")


def _der_element(der: bytes, at: int) -> tuple[int, int, int]:
    """The tag, start of content and end of the DER element at ``at``."""
    tag, length, at = der[at], der[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        length, at = int.from_bytes(der[at:at + count], "big"), at + count
    if at + length > len(der):
        raise IndexError("DER element runs past its end")
    return tag, at, at + length


def validity_problem(certificate: x509.Certificate, now: datetime.datetime) -> Optional[str]:
    """Why ``certificate`` is not valid at ``now`` (its dates); ``None`` if it is."""
    if now < certificate.not_valid_before_utc:
        return f"not valid before {_moment(certificate.not_valid_before_utc)}"
    if now > certificate.not_valid_after_utc:
        return f"expired on {_moment(certificate.not_valid_after_utc)}"
    return None


def _moment(moment: Optional[datetime.datetime]) -> str:
    return "unknown" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _subject_alternative_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """
    Each name as a certificate carries it: an IP address (``[::1]`` too) as
    one, a host name as its A-label (``bücher.example`` is
    ``xn--bcher-kva.example``), the form clients compare.
    """
    alternatives: list[x509.GeneralName] = []
    for name in names:
        canonical = canonical_host(name)
        if canonical is None:
            raise ValueError(f"not a host name or IP address: {name!r}")
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(canonical)))
        except ValueError:
            alternatives.append(x509.DNSName(canonical))
    return alternatives


def make_self_signed(names: Sequence[str], use_rsa: bool = False) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``names`` (the first is the CN), as PEM."""
    key: PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if use_rsa
        else ec.generate_private_key(ec.SECP256R1())
    )
    common_name = names[0][1:-1] if names[0].startswith("[") else names[0]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_subject_alternative_names(names)), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def write_key_pair(cert_path: Path, key_path: Path, cert_pem: bytes, key_pem: bytes) -> None:
    """Write a pair, the key readable by its owner only from the first byte."""
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(cert_pem)


def self_signed_paths(directory: Path) -> tuple[Path, Path]:
    """The certificate and key of the default pair kept in ``directory``."""
    return directory / "cert.pem", directory / "key.pem"


def ensure_self_signed(directory: Path, names: Sequence[str]) -> tuple[Path, Path]:
    """
    The default certificate pair in ``directory``, made on first use.

    Reused on every later run so that clients' trust-on-first-use holds.
    """
    cert_path, key_path = self_signed_paths(directory)
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Two first runs at once (a server and its --check, two services in
        # one state directory) must not each write half of a pair: one
        # makes it, the other waits and then finds it.
        lock = os.open(directory / ".pair.lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise _unusable(str(error.filename or directory),
                        f"cannot keep the self-signed certificate here: {error.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _half_a_pair(cert_path, key_path) is None:
            cert_pem, key_pem = make_self_signed(names)
            # Each file appears whole, the key first: a pair is never seen
            # with one part missing or half written.
            key_part, cert_part = key_path.with_suffix(".part"), cert_path.with_suffix(".part")
            try:
                write_key_pair(cert_part, key_part, cert_pem, key_pem)
                os.replace(key_part, key_path)
                os.replace(cert_part, cert_path)
            except OSError as error:
                for part in (key_part, cert_part):
                    part.unlink(missing_ok=True)
                raise _unusable(str(error.filename or directory),
                                f"cannot write the self-signed certificate: {error.strerror}") from None
            fingerprint = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
            # The fingerprint last: a colon after it was copied with it.
            log.info("made a self-signed certificate for {names} in {directory}; its SHA-256 "
                     "fingerprint, by which clients that trust it on first use will know it, is "
                     "{fingerprint}", names=", ".join(names), directory=str(directory),
                     fingerprint=fingerprint.hex(":").upper())
    finally:
        os.close(lock)  # and with it the lock
    return cert_path, key_path


def _half_a_pair(cert_path: Path, key_path: Path) -> Optional[bool]:
    """
    ``False`` for a whole pair, ``None`` for none; half of one is an error.
    A new pair would overwrite the half that is left, and every client that
    trusted the certificate would meet another: the operator decides.
    """
    for path in (cert_path, key_path):
        if os.path.islink(path) and not path.exists():
            # A link whose target is away for now (a volume not mounted, a
            # directory moved): a new pair would replace the link itself.
            raise _unusable(str(path), f"links to {os.readlink(path)}, which is missing: put it "
                            "back, or remove the link to have a new pair made")
    there = [path for path in (cert_path, key_path) if path.exists()]
    if len(there) == 2:
        return False
    if not there:
        return None
    missing = key_path if there[0] == cert_path else cert_path
    raise _unusable(str(there[0]), f"{missing} is missing: put it back, or remove {there[0]} too "
                    "to have a new pair made (clients that trusted the old certificate will warn "
                    "of the new one)")


@lru_cache(maxsize=256)
def _short_name(oid: str) -> str:
    """
    OpenSSL's own short name for ``oid`` (``OBJ_nid2sn``, through the
    OpenSSL pyOpenSSL is built on), else the dotted OID, as OpenSSL writes
    an attribute it does not know.
    """
    try:
        nid = lib.OBJ_txt2nid(oid.encode("ascii"))
        if nid:
            return ffi.string(lib.OBJ_nid2sn(nid)).decode("ascii")
    except AttributeError:  # no bindings, or none for these calls
        pass
    return oid


# cryptography reads a T61String as UTF-8 (else latin-1); its bytes are those.
_ENCODINGS = {
    "UTF8String": "utf-8", "BMPString": "utf-16-be", "UniversalString": "utf-32-be",
    "T61String": "utf-8",
}


def _value_bytes(attribute: x509.NameAttribute) -> bytes:
    """A value's bytes as encoded in the certificate, which is what OpenSSL writes out."""
    value = attribute.value
    kind = getattr(attribute, "_type", None)
    if isinstance(value, bytes):
        if getattr(kind, "name", "") == "BitString" and value:
            # A BIT STRING's first byte counts its unused bits: OpenSSL
            # holds, and writes, the bits alone, those unused cleared.
            unused, bits = value[0] & 7, value[1:]
            return bits[:-1] + bytes([bits[-1] & (0xFF << unused) & 0xFF]) if bits else bits
        return value
    # The narrow string types (Printable, IA5, Teletex) are read as latin-1.
    return value.encode(_ENCODINGS.get(getattr(kind, "name", ""), "latin-1"), "replace")


# How X509_NAME_oneline writes each byte of a value: printable ASCII as it
# is, but the separators '/' and '+' after a backslash; anything else \\xHH.
_ONE_LINE_BYTES = [
    (f"\\{chr(byte)}" if chr(byte) in "/+" else chr(byte)) if 0x20 <= byte <= 0x7E
    else f"\\x{byte:02X}"
    for byte in range(256)
]


def _one_line_name(name: x509.Name) -> str:
    """
    OpenSSL's ``/CN=x/O=y`` form (``X509_NAME_oneline``), the one gmid puts
    in REMOTE_USER: OpenSSL's short names, ``/`` and ``+`` in a value after a
    backslash, and every byte outside printable ASCII written as ``\\xHH``
    (``CN=alice é`` is ``CN=alice \\xC3\\xA9``).
    """
    parts = []
    for rdn in name.rdns:
        # The attributes of one multi-valued RDN are joined by '+'.
        fields = []
        for attribute in rdn:
            oid = attribute.oid.dotted_string
            value = "".join(_ONE_LINE_BYTES[byte] for byte in _value_bytes(attribute))
            fields.append(f"{_short_name(oid)}={value}")
        parts.append("/" + "+".join(fields))
    return "".join(parts)


@contextmanager
def _quietly() -> Iterator[None]:
    """
    Reading a client's names without cryptography's warnings about them (a
    CN over 64 characters): each new length was a line in the log that any
    client could add to.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


# NID_commonName, the same in every OpenSSL.
_COMMON_NAME_NID = 13
# An ASN1 time as OpenSSL gives it (GeneralizedTime), with what OpenSSL
# accepts and cryptography does not: fractions of a second, an offset.
_ASN1_TIME = re.compile(rb"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.\d+)?(Z|[+-]\d{4})?")
_UNKNOWN_TIME = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)


def _asn1_moment(stamp: Optional[bytes]) -> datetime.datetime:
    """A certificate's time as OpenSSL holds it; the earliest time if it means none."""
    found = _ASN1_TIME.fullmatch(stamp or b"")
    if found is None:
        return _UNKNOWN_TIME
    *fields, zone = found.groups()
    year, month, day, hour, minute, second = (int(field) for field in fields)
    try:
        # Year 0, which OpenSSL takes, is the earliest Python has.
        moment = datetime.datetime(max(1, year), month, day, hour, minute, second,
                                   tzinfo=datetime.timezone.utc)
    except ValueError:
        return _UNKNOWN_TIME
    if zone and zone != b"Z":
        sign = 1 if zone[:1] == b"+" else -1
        moment -= sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
    return moment


def _openssl_names(peer: "crypto.X509") -> tuple[str, str, Optional[str]]:
    """
    The subject and issuer in ``X509_NAME_oneline`` form, and the subject's
    first CN in UTF-8, read by the OpenSSL pyOpenSSL uses (its own name
    accessors are deprecated); empty without its bindings.
    """
    if lib is None or not hasattr(lib, "X509_NAME_oneline"):
        return "", "", None

    def one_line(name: Any) -> str:
        text = lib.X509_NAME_oneline(name, ffi.NULL, 0)  # allocated: no length limit
        if text == ffi.NULL:
            return ""
        try:
            return ffi.string(text).decode("latin-1")
        finally:
            lib.OPENSSL_free(text)

    subject = lib.X509_get_subject_name(peer._x509)
    common_name = None
    index = lib.X509_NAME_get_index_by_NID(subject, _COMMON_NAME_NID, -1)
    if index >= 0:
        value = lib.X509_NAME_ENTRY_get_data(lib.X509_NAME_get_entry(subject, index))
        utf8 = ffi.new("unsigned char **")
        length = lib.ASN1_STRING_to_UTF8(utf8, value)
        if length >= 0:
            try:
                common_name = ffi.buffer(utf8[0], length)[:].decode("utf-8", "replace")
            finally:
                lib.OPENSSL_free(utf8[0])
    return one_line(subject), one_line(lib.X509_get_issuer_name(peer._x509)), common_name


def openssl_common_name(peer: "crypto.X509") -> Optional[str]:
    """A certificate's first CN as OpenSSL decodes it, for one cryptography cannot read."""
    return _openssl_names(peer)[2]


def openssl_alternative_names(peer: "crypto.X509") -> tuple[list[str], list[str]]:
    """
    The DNS and IP subjectAltNames of a certificate cryptography cannot
    read, from its DER: pyOpenSSL no longer gives extensions, and its
    bindings have no GENERAL_NAME.
    """
    from OpenSSL import crypto

    der = crypto.dump_certificate(crypto.FILETYPE_ASN1, peer)
    dns: list[str] = []
    addresses: list[str] = []
    found = der.find(_SUBJECT_ALT_NAME_OID)
    if found < 0:
        return dns, addresses
    try:
        tag, start, end = _tlv(der, found + len(_SUBJECT_ALT_NAME_OID))
        if tag == 0x01:  # critical
            tag, start, end = _tlv(der, end)
        if tag == 0x04:  # the OCTET STRING holding the SEQUENCE of GeneralNames
            tag, position, names_end = _tlv(der, start)
            while tag == 0x30 and position < names_end:
                kind, value_start, position = _tlv(der, position)
                value = der[value_start:position]
                if kind == 0x82:  # dNSName
                    dns.append(value.decode("ascii", "replace"))
                elif kind == 0x87 and len(value) in (4, 16):  # iPAddress
                    addresses.append(str(ipaddress.ip_address(value)))
    except (IndexError, ValueError):
        pass  # what could be read stands
    return dns, addresses


# The DER of the subjectAltName extension's OID, 2.5.29.17.
_SUBJECT_ALT_NAME_OID = b"\x06\x03\x55\x1d\x11"


def _tlv(der: bytes, position: int) -> tuple[int, int, int]:
    """The tag at ``position`` of ``der``, and where its value starts and ends."""
    tag, length = der[position], der[position + 1]
    start = position + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    if start + length > len(der):
        raise ValueError("a length past the end")
    return tag, start, start + length


@dataclass(frozen=True)
class ClientCertificate:
    """
    What a request handler and a FastCGI app may know of a visitor.

    ``subject`` and ``issuer`` are in OpenSSL's one-line form (``/CN=alice``)
    as gmid sends them; ``sha256`` is the hex digest of the DER encoding, so
    values match gmid's and jetforce's for the same certificate.
    """

    subject: str
    issuer: str
    sha256: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int
    certificate: Optional[x509.Certificate] = None
    # The certificate as OpenSSL holds it, for checks against a CA; set
    # when ``certificate`` is not (one ``cryptography`` cannot read).
    openssl_certificate: Optional["crypto.X509"] = None
    # Its subject's CN as OpenSSL decodes it, with ``openssl_certificate``.
    openssl_common_name: Optional[str] = None

    @property
    def common_name(self) -> Optional[str]:
        """
        The subject's CN, which gmid's access log shows: the text itself,
        as decoded from the certificate (the log escapes what needs it),
        not its one-line form, whose escapes the log would escape again.
        """
        if self.certificate is not None:
            with _quietly():
                found = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if not found:
                return None
            value = found[0].value
            return value if isinstance(value, str) else value.decode("latin-1")
        if self.openssl_certificate is not None:
            # Not split out of the one-line subject: another attribute's
            # value may hold "/CN=" (escaped there, but the client's choice).
            return self.openssl_common_name
        for part in self.subject.split("/"):
            if part.startswith("CN="):
                return part[3:]
        return None

    @classmethod
    def from_openssl(cls, peer: "crypto.X509") -> "ClientCertificate":
        """
        A peer certificate as pyOpenSSL gives it. OpenSSL takes names that
        ``cryptography`` refuses to read (a PrintableString holding ``@``,
        as old certificates have), and any client may send one: those are
        read through OpenSSL alone.
        """
        try:
            return cls.from_certificate(peer.to_cryptography())
        except Exception:
            # ValueError for a name, InvalidVersion for a version field, and
            # whatever else a stricter parser finds: OpenSSL's reading stands.
            pass
        subject, issuer, common_name = _openssl_names(peer)
        return cls(
            subject=subject,
            issuer=issuer,
            sha256=peer.digest("sha256").decode("ascii").replace(":", "").lower(),
            not_before=_asn1_moment(peer.get_notBefore()),
            not_after=_asn1_moment(peer.get_notAfter()),
            serial=peer.get_serial_number(),
            openssl_certificate=peer,
            openssl_common_name=common_name,
        )

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate) -> "ClientCertificate":
        with _quietly():
            subject, issuer = certificate.subject, certificate.issuer
        return cls(
            certificate=certificate,
            subject=_one_line_name(subject),
            issuer=_one_line_name(issuer),
            sha256=certificate.fingerprint(hashes.SHA256()).hex(),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            serial=certificate.serial_number,
        )
