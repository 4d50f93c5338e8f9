"""
``require client ca``: who may see a location.

TLS accepts any client certificate (self-signed ones are Gemini's norm);
this is where one is judged, per request: none is ``60``, one not issued by
the configured CA is ``61``, one outside its validity dates is ``62``. Only
the leaf is checked against the CA file, as gmid does.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Iterable, Mapping

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


def issued_by_any(certificate: x509.Certificate, authorities: Iterable[x509.Certificate]) -> bool:
    for authority in authorities:
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
    if not issued_by_any(certificate, authorities):
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
