"""The self-signed certificates gemfcgi makes for quick mode and ``--gencert``."""

from __future__ import annotations

import pytest
from cryptography import x509

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
