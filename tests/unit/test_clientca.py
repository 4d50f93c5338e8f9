"""Judging client certificates against a CA: 60, 61, 62 or pass."""

import datetime

from gemfcgi.handlers.clientca import Authorities, authority_problem, judge
from tests.certs import NOW, issue

CA = issue("members ca", ca=True)
OTHER_CA = issue("other ca", ca=True)


def test_no_certificate_gets_60():
    assert judge(None, Authorities([CA[0]]), NOW)[0] == 60


def test_self_signed_certificate_gets_61():
    assert judge(issue("visitor")[0], Authorities([CA[0]]), NOW)[0] == 61


def test_certificate_of_another_ca_gets_61():
    assert judge(issue("visitor", OTHER_CA)[0], Authorities([CA[0]]), NOW)[0] == 61


def test_expired_certificate_gets_62():
    expired = issue(
        "old member",
        CA,
        not_before=NOW - datetime.timedelta(days=30),
        not_after=NOW - datetime.timedelta(days=1),
    )
    assert judge(expired[0], Authorities([CA[0]]), NOW)[0] == 62


def test_not_yet_valid_certificate_gets_62():
    future = issue("future member", CA, not_before=NOW + datetime.timedelta(days=1))
    assert judge(future[0], Authorities([CA[0]]), NOW)[0] == 62


def test_each_judgement_is_made_at_its_own_time_not_at_the_first():
    # OpenSSL keeps the first time a store was given: a certificate issued
    # after the first check got 62, and one that had expired still passed.
    authorities = Authorities([CA[0]])
    member = issue("member", CA, not_after=NOW + datetime.timedelta(days=10))
    assert judge(member[0], authorities, NOW) is None
    later = issue("later member", CA, not_before=NOW + datetime.timedelta(days=2))
    assert judge(later[0], authorities, NOW + datetime.timedelta(days=3)) is None
    assert judge(member[0], authorities, NOW + datetime.timedelta(days=11))[0] == 62
    assert judge(member[0], authorities, NOW) is None


def test_certificate_issued_by_the_ca_passes():
    assert judge(issue("member", CA)[0], Authorities([CA[0]]), NOW) is None


def test_any_ca_of_the_file_may_have_issued_it():
    assert judge(issue("member", CA)[0], Authorities([OTHER_CA[0], CA[0]]), NOW) is None


def test_a_certificate_of_a_ca_that_has_expired_gets_61():
    expired_ca = issue(
        "old ca", ca=True,
        not_before=NOW - datetime.timedelta(days=30), not_after=NOW - datetime.timedelta(days=1),
    )
    member = issue("member", expired_ca, not_after=NOW + datetime.timedelta(days=30))
    assert judge(member[0], Authorities([expired_ca[0]]), NOW)[0] == 61
    assert authority_problem(expired_ca[0], NOW) == (
        f"expired on {expired_ca[0].not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    )


def test_a_certificate_issued_by_one_that_is_no_ca_gets_61():
    carol = issue("carol")
    dave = issue("dave", carol)
    assert judge(dave[0], Authorities([carol[0]]), NOW)[0] == 61
    assert authority_problem(dave[0], NOW) == (
        "not a CA certificate (basicConstraints CA:FALSE), nor self-signed"
    )
    assert authority_problem(CA[0], NOW) is None


def test_one_that_says_nothing_of_being_a_ca_vouches_for_nobody_and_is_said_so():
    # Without basicConstraints, OpenSSL takes a certificate for a CA only if
    # it is self-signed: a key usage that allows signing certificates is
    # not enough.
    from cryptography import x509

    plain = issue("plain", CA, ca=None)
    member = issue("member", plain)
    assert judge(member[0], Authorities([plain[0]]), NOW)[0] == 61
    assert authority_problem(plain[0], NOW) == (
        "not a CA certificate (no basicConstraints CA:TRUE), nor self-signed"
    )
    signing = issue("signing", CA, ca=None, key_usage=x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False))
    assert judge(issue("member", signing)[0], Authorities([signing[0]]), NOW)[0] == 61
    assert authority_problem(signing[0], NOW) == authority_problem(plain[0], NOW)


def test_a_self_signed_certificate_listed_in_the_file_lets_in_itself_alone():
    # A pinned certificate: the usual way to keep a location to oneself.
    mine, other = issue("me"), issue("me")
    assert judge(mine[0], Authorities([mine[0]]), NOW) is None
    assert judge(other[0], Authorities([mine[0]]), NOW)[0] == 61
    assert authority_problem(mine[0], NOW) is None


def test_the_chain_must_reach_a_root_of_the_file_and_be_valid_all_along():
    root = issue("root ca", ca=True)
    intermediate = issue("intermediate ca", root, ca=True)
    member = issue("member", intermediate)
    assert judge(member[0], Authorities([intermediate[0], root[0]]), NOW) is None
    # An intermediate alone is no root to trust, as in gmid's OpenSSL check.
    assert judge(member[0], Authorities([intermediate[0]]), NOW)[0] == 61
    old_root = issue(
        "old root", ca=True,
        not_before=NOW - datetime.timedelta(days=30), not_after=NOW - datetime.timedelta(days=1),
    )
    under_old = issue("intermediate ca", old_root, ca=True)
    assert judge(issue("member", under_old)[0], Authorities([under_old[0], old_root[0]]), NOW)[0] == 61
