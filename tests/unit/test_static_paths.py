"""
Static files whose path changes between its check and its open: what is
served is what was checked, or nothing.
"""

from __future__ import annotations

import os

import pytest
from twisted.logger import capturedLogs, formatEvent

from gemfcgi.config import model
from gemfcgi.handlers import static
from gemfcgi.server import Timeouts
from gemfcgi.service import build_site
from tests.unit.test_protocol import connect


@pytest.fixture(autouse=True)
def warnings_of_its_own(monkeypatch):
    """Each test with the warnings' rate limit to itself: earlier tests' warnings used it up."""
    from gemfcgi.textlog import LogLimiter, MonotonicClock

    monkeypatch.setattr(static, "_failures", LogLimiter(MonotonicClock(), limit=5, window=10.0))
    monkeypatch.setattr(static, "_symlinks_out", LogLimiter(MonotonicClock(), limit=5, window=10.0))


@pytest.fixture
def tree(tmp_path):
    """A root with a directory ``race/``, and a secret outside the root."""
    root = tmp_path / "root"
    (root / "race").mkdir(parents=True)
    (root / "race" / "index.gmi").write_text("# inside\n")
    (root / "race" / "page.gmi").write_text("# inside page\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "index.gmi").write_text("# OUTSIDE secret\n")
    (outside / "page.gmi").write_text("# OUTSIDE page\n")
    (outside / "other.txt").write_text("secret\n")
    return root, outside


def fetch(root, url: bytes, auto_index: bool = False) -> bytes:
    config = model.Config(servers=[model.Server(
        name="localhost", options=model.LocationOptions(root=str(root), auto_index=auto_index))])
    site = build_site(config, Timeouts(handshake=10, request=10, linger=2))
    protocol, transport, _ = connect(site)
    protocol.dataReceived(url + b"\r\n")
    return transport.value()


def swap_after_the_check(monkeypatch, root, outside, last: str = ""):
    """``race/`` becomes a symlink to ``outside`` once a path ending in ``last`` is checked."""
    check = static._resolve

    def check_then_swap(root_given, path):
        found = check(root_given, path)
        if path.endswith(last) and not (root / "race").is_symlink():
            os.rename(root / "race", root / "was-race")
            os.symlink(outside, root / "race")
        return found

    monkeypatch.setattr(static, "_resolve", check_then_swap)


@pytest.mark.parametrize("url", [b"gemini://localhost/race/page.gmi", b"gemini://localhost/race/"])
def test_a_directory_swapped_for_a_symlink_out_after_the_check_serves_nothing_from_outside(
    tree, monkeypatch, url
):
    # Anyone who may write a directory in the root could have any file the
    # server may read served: 20 and "# OUTSIDE page" before.
    root, outside = tree
    swap_after_the_check(monkeypatch, root, outside, last=".gmi")
    with capturedLogs() as events:
        reply = fetch(root, url)
    assert reply == b"51 not found\r\n"
    [warning] = [formatEvent(e) for e in events if "led outside the root" in formatEvent(e)]
    assert str(outside) in warning


def test_a_listing_of_a_directory_swapped_for_a_symlink_out_lists_nothing_from_outside(
    tree, monkeypatch
):
    root, outside = tree
    (root / "race" / "index.gmi").unlink()
    swap_after_the_check(monkeypatch, root, outside)
    reply = fetch(root, b"gemini://localhost/race/", auto_index=True)
    assert reply == b"51 not found\r\n"


def test_a_page_served_before_a_swap_is_not_served_from_memory_for_the_file_outside(
    tree, monkeypatch
):
    root, outside = tree
    assert fetch(root, b"gemini://localhost/race/page.gmi").endswith(b"# inside page\n")
    swap_after_the_check(monkeypatch, root, outside)
    assert fetch(root, b"gemini://localhost/race/page.gmi") == b"51 not found\r\n"


@pytest.mark.parametrize("links", [45, 1200])
def test_a_chain_of_symlinks_longer_than_the_kernel_follows_is_not_found(tmp_path, links):
    # 1,200 links made Python's realpath recurse past its limit: 40 and a
    # traceback of 2,000 lines per request. 45 were served, where the
    # kernel (and so gmid's open) refuses more than 40.
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / f"l{links}").write_text("# the end\n")
    for n in range(links - 1, 0, -1):
        os.symlink(f"l{n + 1}", tmp_path / "c" / f"l{n}")
    with capturedLogs() as events:
        reply = fetch(tmp_path, b"gemini://localhost/c/l1")
    assert reply == b"51 not found\r\n"
    assert not [e for e in events if e.get("log_failure") is not None]
    assert fetch(tmp_path, f"gemini://localhost/c/l{links - 30}".encode()).endswith(b"# the end\n")


def test_without_proc_as_in_a_chroot_files_and_listings_are_still_served(tree, monkeypatch):
    root, _ = tree
    monkeypatch.setattr(static, "_PROC_FD", "/no-proc-here/self/fd/")
    assert fetch(root, b"gemini://localhost/race/page.gmi") == b"20 text/gemini\r\n# inside page\n"
    (root / "race" / "index.gmi").unlink()
    assert fetch(root, b"gemini://localhost/race/", auto_index=True).endswith(b"=> ./page.gmi\n")


def test_the_warning_for_a_symlink_out_escapes_the_name_it_led_to(tmp_path, monkeypatch):
    # Whoever swaps the directory names the symlink's target: an escape
    # sequence and a forged log line reached the log as they were written.
    root, outside = tmp_path / "root", tmp_path / "out\x1b[31m\n2026-01-01 [gemfcgi.access#info] FAKE"
    (root / "race").mkdir(parents=True)
    (root / "race" / "page.gmi").write_text("# inside\n")
    outside.mkdir()
    (outside / "page.gmi").write_text("# OUTSIDE page\n")
    swap_after_the_check(monkeypatch, root, outside, last=".gmi")
    with capturedLogs() as events:
        reply = fetch(root, b"gemini://localhost/race/page.gmi")
    assert reply == b"51 not found\r\n"
    [warning] = [formatEvent(e) for e in events if "led outside the root" in formatEvent(e)]
    assert "\x1b" not in warning and "\n" not in warning
    assert "out\\x1b[31m\\x0a2026-01-01 [gemfcgi.access#info] FAKE/page.gmi" in warning


def test_a_large_listing_is_sent_whole_from_one_copy_until_its_directory_changes(tmp_path, monkeypatch):
    # Built whole and written at once, each slow reader of a directory of
    # 40,000 entries held its megabytes in TLS records of its own; now its
    # readers share one copy, which must not outlive a change.
    monkeypatch.setattr(static, "SETTLED", 0.0)
    big = tmp_path / "root" / "big"
    big.mkdir(parents=True)
    for number in range(3000):
        (big / f"{'n' * 100}-{number:05d}.gmi").touch()
    config = model.Config(servers=[model.Server(
        name="localhost", options=model.LocationOptions(root=str(tmp_path / "root"), auto_index=True))])
    site = build_site(config, Timeouts(handshake=10, request=10, linger=2))

    def listing() -> bytes:
        protocol, transport, _ = connect(site)
        protocol.dataReceived(b"gemini://localhost/big/\r\n")
        return transport.value()

    first = listing()
    header, _, body = first.partition(b"\r\n")
    assert header == b"20 text/gemini" and len(body) > static.CHUNK_SIZE
    assert body.count(b"\n=> ./") == 3001 and body.endswith(b"-02999.gmi\n")  # and ../
    [kept] = static._listings.values()
    assert listing() == first
    [again] = static._listings.values()
    assert again is kept  # the second reader was sent the same copy, not a new listing
    (big / "added.gmi").touch()
    changed = listing()
    assert b"=> ./added.gmi\n" in changed and changed.count(b"\n=> ./") == 3002


def test_a_symlink_that_leads_out_of_the_root_is_said_in_the_log(tree):
    # gmid follows it: a capsule moved here got 51 for such pages, and the
    # log only had the access line.
    root, outside = tree
    (root / "linked").mkdir()
    os.symlink(outside / "index.gmi", root / "linked" / "index.gmi")
    with capturedLogs() as events:
        reply = fetch(root, b"gemini://localhost/linked/")
    assert reply == b"51 not found\r\n"
    said = [formatEvent(e) for e in events if "leads outside the root" in formatEvent(e)]
    assert said == [f"{root}/linked/index.gmi: a symlink on it leads outside the root {root} "
                    f"(to {outside}/index.gmi): answered 51"]


def test_asking_for_a_symlink_out_again_and_again_hides_no_other_warning(tree, tmp_path):
    # They shared one rate limit: six requests for the link, and a root
    # gone was not said for ten seconds.
    root, outside = tree
    os.symlink(outside / "page.gmi", root / "plain.gmi")
    with capturedLogs() as events:
        for _ in range(6):
            assert fetch(root, b"gemini://localhost/plain.gmi") == b"51 not found\r\n"
        assert fetch(tmp_path / "gone", b"gemini://localhost/index.gmi") == b"51 not found\r\n"
    said = [formatEvent(e) for e in events]
    assert sum("leads outside the root" in line for line in said) == 5
    assert any("is not a directory any more" in line for line in said)


@pytest.mark.parametrize("url, body", [(b"gemini://localhost/", b"=> ./page.gmi\n"),
                                       (b"gemini://localhost/page.gmi", b"# page\n")])
def test_a_root_whose_name_ends_as_the_kernel_marks_a_removed_file_is_served(tmp_path, url, body):
    # The kernel writes " (deleted)" after a removed file's path: the root's
    # own name ending so was taken for that mark, and its listing got 51
    # with a warning that it led outside itself.
    root = tmp_path / "r (deleted)"
    root.mkdir()
    (root / "page.gmi").write_text("# page\n")
    with capturedLogs() as events:
        reply = fetch(root, url, auto_index=True)
    assert reply.startswith(b"20 text/gemini\r\n")
    assert body in reply
    assert not [e for e in events if "led outside the root" in formatEvent(e)]


def test_under_log_off_a_warning_names_no_file_the_request_asked_for(tree, tmp_path):
    # The URL was hidden, but the file's path beside it spelt out the
    # request's: a symlink out of the root, a file cut short.
    root, outside = tree
    os.symlink(outside, root / "link-SECRET")
    config = model.Config(servers=[model.Server(
        name="localhost", options=model.LocationOptions(root=str(root), log=False))])
    site = build_site(config, Timeouts(handshake=10, request=10, linger=2))
    protocol, transport, _ = connect(site)
    with capturedLogs() as events:
        protocol.dataReceived(b"gemini://localhost/link-SECRET/page.gmi?SECRET\r\n")
    assert transport.value() == b"51 not found\r\n"
    [warning] = [formatEvent(e) for e in events if "leads outside the root" in formatEvent(e)]
    assert "SECRET" not in warning and warning.startswith("a file (log off): a symlink on it leads")
