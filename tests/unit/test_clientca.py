"""Judging client certificates against a CA: 60, 61, 62 or pass."""

import datetime

from gemfcgi.handlers.clientca import judge
from tests.certs import NOW, issue

CA = issue("members ca", ca=True)
OTHER_CA = issue("other ca", ca=True)


def test_no_certificate_gets_60():
    assert judge(None, [CA[0]], NOW)[0] == 60


def test_self_signed_certificate_gets_61():
    assert judge(issue("visitor")[0], [CA[0]], NOW)[0] == 61


def test_certificate_of_another_ca_gets_61():
    assert judge(issue("visitor", OTHER_CA)[0], [CA[0]], NOW)[0] == 61


def test_expired_certificate_gets_62():
    expired = issue(
        "old member",
        CA,
        not_before=NOW - datetime.timedelta(days=30),
        not_after=NOW - datetime.timedelta(days=1),
    )
    assert judge(expired[0], [CA[0]], NOW)[0] == 62


def test_not_yet_valid_certificate_gets_62():
    future = issue("future member", CA, not_before=NOW + datetime.timedelta(days=1))
    assert judge(future[0], [CA[0]], NOW)[0] == 62


def test_certificate_issued_by_the_ca_passes():
    assert judge(issue("member", CA)[0], [CA[0]], NOW) is None


def test_any_ca_of_the_file_may_have_issued_it():
    assert judge(issue("member", CA)[0], [OTHER_CA[0], CA[0]], NOW) is None
