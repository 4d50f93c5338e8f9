"""
``require client ca``: who may see a location.

TLS accepts any client certificate (self-signed ones are Gemini's norm);
this is where one is judged, per request: none is ``60``, one not issued by
the configured CA is ``61``, one outside its validity dates is ``62``. The
client's certificate must be issued directly by a certificate of the CA
file that is itself a CA and valid now: gmid verifies the chain with
OpenSSL, which refuses an expired CA and an issuer that is no CA.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gemfcgi.certificates import CertificateError
from gemfcgi.gemini import status
from gemfcgi.gemini.request import Request
from gemfcgi.routing import PathSettings

if TYPE_CHECKING:
    from gemfcgi.server import GeminiProtocol


def load_authorities(paths: Iterable[str]) -> dict[str, list[x509.Certificate]]:
    """Every CA file a configuration names, loaded once per configuration."""
    loaded: dict[str, list[x509.Certificate]] = {}
    for path in paths:
        if path in loaded:
            continue
        try:
            with open(path, "rb") as f:
                loaded[path] = x509.load_pem_x509_certificates(f.read())
        except (OSError, ValueError) as error:
            raise CertificateError(f"{path}: cannot load CA certificates: {error}") from None
    return loaded


def _extension(certificate: x509.Certificate, kind: type) -> Any:
    """The value of ``certificate``'s extension of ``kind``, or ``None``."""
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def authority_problem(authority: x509.Certificate, now: datetime.datetime) -> str | None:
    """Why ``authority`` cannot vouch for anyone at ``now``; ``None`` if it can."""
    constraints = _extension(authority, x509.BasicConstraints)
    if constraints is not None and not constraints.ca:
        return "not a CA certificate (basicConstraints CA:FALSE)"
    usage = _extension(authority, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        return "not a CA certificate (its key usage has no keyCertSign)"
    if now < authority.not_valid_before_utc:
        return f"not valid before {authority.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
    if now > authority.not_valid_after_utc:
        return f"expired on {authority.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    return None


def issued_by_any(
    certificate: x509.Certificate,
    authorities: Iterable[x509.Certificate],
    now: datetime.datetime,
) -> bool:
    for authority in authorities:
        if authority_problem(authority, now) is not None:
            continue
        try:
            certificate.verify_directly_issued_by(authority)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def judge(
    certificate: x509.Certificate | None,
    authorities: Iterable[x509.Certificate],
    now: datetime.datetime,
) -> tuple[int, str] | None:
    """The refusal for ``certificate``, or ``None`` when it may pass."""
    if certificate is None:
        return status.CLIENT_CERTIFICATE_REQUIRED, "client certificate required"
    if not issued_by_any(certificate, authorities, now):
        return status.CERTIFICATE_NOT_AUTHORISED, "certificate not authorised"
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        return status.CERTIFICATE_NOT_VALID, "certificate not valid"
    return None


def require_client_ca(
    client: "GeminiProtocol",
    request: Request,
    settings: PathSettings,
    authorities: Mapping[str, list[x509.Certificate]],
) -> None:
    assert settings.require_client_ca is not None
    identity = client.tls.client_certificate if client.tls is not None else None
    certificate = identity.certificate if identity is not None else None
    now = datetime.datetime.fromtimestamp(client.clock.seconds(), datetime.timezone.utc)
    refusal = judge(certificate, authorities[settings.require_client_ca], now)
    if refusal is not None:
        client.respond(*refusal)
        return
    client.handle(request, settings)
