"""
``require client ca``: who may see a location.

TLS accepts any client certificate (self-signed ones are Gemini's norm);
this is where one is judged, per request: none is ``60``, one the CA file
does not vouch for is ``61``, one outside its validity dates is ``62``. The
judgement is OpenSSL's own (``X509_verify_cert``, with the file's
certificates as the only ones trusted), as in gmid: a chain up to a root of
the file, every certificate of it valid now, each issuer a CA; a
self-signed certificate listed in the file lets in itself (a pinned
certificate). Intermediates the client sends are not used, as in gmid.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from OpenSSL import crypto

from gemfcgi.certificates import (
    CertificateError,
    explicit_ec_parameters,
    read_key_file,
    self_issued,
    validity_problem,
)
from gemfcgi.gemini import status
from gemfcgi.gemini.request import Request
from gemfcgi.routing import PathSettings

if TYPE_CHECKING:
    from gemfcgi.server import GeminiProtocol

# OpenSSL's verify errors about the dates of the certificate judged itself.
_OUT_OF_DATES = {9, 10}  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED


@dataclass
class Authorities:
    """
    The certificates of one CA file, and the OpenSSL store that trusts them
    alone. ``certificates`` are those ``cryptography`` reads, which the
    configuration check looks at; ``openssl_only`` those only OpenSSL reads
    (an old CA whose name is a PrintableString holding ``@``), trusted all
    the same, as gmid's OpenSSL trusts them.
    """

    certificates: list[x509.Certificate]
    openssl_only: list[crypto.X509] = field(default_factory=list)
    _trusted: list[crypto.X509] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._trusted = [crypto.X509.from_cryptography(c) for c in self.certificates]
        self._trusted += self.openssl_only

    def store_at(self, now: datetime.datetime) -> crypto.X509Store:
        """
        A store that trusts these certificates alone, judging at ``now``.
        A new one each time: OpenSSL keeps the first time a store is
        given, and a store kept would judge every later certificate at the
        time of its first check (a new one refused, an expired one let in).
        """
        store = crypto.X509Store()
        for certificate in self._trusted:
            store.add_cert(certificate)
        store.set_time(now)
        return store


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _read_authorities(data: bytes) -> Authorities:
    try:
        certificates = x509.load_pem_x509_certificates(data)
        for certificate in certificates:
            certificate.subject, certificate.issuer  # read now, not when judging
        return Authorities(certificates)
    except (ValueError, x509.InvalidVersion):
        pass
    readable: list[x509.Certificate] = []
    openssl_only: list[crypto.X509] = []
    for block in _PEM_CERTIFICATE.findall(data):
        try:
            certificate = x509.load_pem_x509_certificate(block)
            certificate.subject, certificate.issuer  # read now, not when judging
        except (ValueError, x509.InvalidVersion):
            # A name cryptography cannot read (a T61String holding 'é'),
            # a version 2 certificate: OpenSSL's alone.
            openssl_only.append(crypto.load_certificate(crypto.FILETYPE_PEM, block))
        else:
            readable.append(certificate)
    if not readable and not openssl_only:
        raise ValueError("no PEM certificate found")
    return Authorities(readable, openssl_only)


def authority_files(paths: Iterable[str]) -> dict[str, bytes]:
    """What each CA file holds, read once and checked (``CertificateError`` as ``load_authorities``)."""
    files = {}
    for path in paths:
        if path not in files:
            files[path] = _load_authorities_file(path)[0]
    return files


def load_authorities(paths: Iterable[str]) -> dict[str, Authorities]:
    """Every CA file a configuration names, loaded once per configuration."""
    loaded: dict[str, Authorities] = {}
    for path in paths:
        if path not in loaded:
            loaded[path] = _load_authorities_file(path)[1]
    return loaded


def _load_authorities_file(path: str) -> tuple[bytes, Authorities]:
    try:
        data = read_key_file(path)
        return data, _read_authorities(data)
    except OSError as error:
        reason = error.strerror or str(error)
        raise CertificateError(f"{path}: cannot load CA certificates: {reason}") from None
    except (ValueError, crypto.Error) as error:
        raise CertificateError(f"{path}: cannot load CA certificates: {error}") from None


def _extension(certificate: x509.Certificate, kind: type) -> Any:
    """The value of ``certificate``'s extension of ``kind``, or ``None``."""
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def authority_problem(authority: x509.Certificate, now: datetime.datetime) -> str | None:
    """Why ``authority`` cannot vouch for anyone at ``now``; ``None`` if it can."""
    try:
        authority.public_key()
    except ValueError as error:
        return f"damaged: its public key cannot be read ({error})"
    except UnsupportedAlgorithm:
        pass  # a kind cryptography lacks, which OpenSSL may know: nothing to tell
    if explicit_ec_parameters(authority):
        return "an ECDSA key with explicit curve parameters, which OpenSSL refuses in a chain"
    self_signed = self_issued(authority)
    constraints = _extension(authority, x509.BasicConstraints)
    if constraints is not None and not constraints.ca and not self_signed:
        return "not a CA certificate (basicConstraints CA:FALSE), nor self-signed"
    usage = _extension(authority, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign and not self_signed:
        return "not a CA certificate (its key usage has no keyCertSign), nor self-signed"
    if constraints is None and not self_signed:
        # Without basicConstraints, OpenSSL takes no certificate but a
        # self-signed one for a CA (a key usage with keyCertSign is not enough).
        return "not a CA certificate (no basicConstraints CA:TRUE), nor self-signed"
    return validity_problem(authority, now)


def judge(
    certificate: x509.Certificate | crypto.X509 | None,
    authorities: Authorities,
    now: datetime.datetime,
) -> tuple[int, str] | None:
    """The refusal for ``certificate``, or ``None`` when it may pass."""
    if certificate is None:
        return status.CLIENT_CERTIFICATE_REQUIRED, "client certificate required"
    if not isinstance(certificate, crypto.X509):
        certificate = crypto.X509.from_cryptography(certificate)
    checking = crypto.X509StoreContext(authorities.store_at(now), certificate)
    try:
        checking.verify_certificate()
    except crypto.X509StoreContextError as failure:
        code, depth = failure.errors[0], failure.errors[1]
        if depth == 0 and code in _OUT_OF_DATES:
            return status.CERTIFICATE_NOT_VALID, "certificate not valid"
        return status.CERTIFICATE_NOT_AUTHORISED, "certificate not authorised"
    return None


def require_client_ca(
    client: "GeminiProtocol",
    request: Request,
    settings: PathSettings,
    authorities: Mapping[str, Authorities],
) -> None:
    assert settings.require_client_ca is not None
    identity = client.tls.client_certificate if client.tls is not None else None
    certificate = None
    if identity is not None:
        # One cryptography cannot read is checked as OpenSSL holds it.
        certificate = identity.certificate or identity.openssl_certificate
    now = datetime.datetime.fromtimestamp(client.clock.seconds(), datetime.timezone.utc)
    refusal = judge(certificate, authorities[settings.require_client_ca], now)
    if refusal is not None:
        client.respond(*refusal)
        return
    client.handle(request, settings)
