"""PageCache: a copy is served only while its file is provably the same."""

from __future__ import annotations

import os
import time

import pytest

from gemfcgi.pagecache import SETTLED, PageCache

OLD = time.time() - 3600


def page(tmp_path, name: str, body: bytes, modified: float = OLD) -> tuple[str, os.stat_result]:
    """A file last changed at ``modified`` (its ctime is now: see ``settled_cache``)."""
    path = tmp_path / name
    path.write_bytes(body)
    os.utime(path, (modified, modified))
    return str(path), os.stat(path)


def settled_cache(**limits) -> PageCache:
    """A cache whose clock runs ahead of the files' ctimes, which cannot be set back."""
    return PageCache(clock=lambda: time.time() + SETTLED + 1, **limits)


def test_a_settled_file_is_kept_and_served_while_it_is_the_same(tmp_path):
    cache = settled_cache()
    path, info = page(tmp_path, "a.gmi", b"# A\n")
    assert cache.get(path, info) is None
    cache.put(path, info, b"# A\n")
    assert cache.get(path, os.lstat(path)) == b"# A\n"


def test_a_file_changed_just_before_it_was_read_is_not_kept(tmp_path):
    cache = PageCache()
    path, info = page(tmp_path, "fresh.gmi", b"# new\n", modified=time.time())
    cache.put(path, info, b"# new\n")
    assert cache.get(path, os.lstat(path)) is None
    assert len(cache) == 0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda path: (path.write_bytes(b"# B\n"), os.utime(path, (OLD, OLD))),
            id="same-size-mtime-restored",
        ),
        pytest.param(lambda path: path.write_bytes(b"# longer\n"), id="rewritten"),
        pytest.param(lambda path: path.chmod(0o600), id="chmod"),
        pytest.param(lambda path: os.replace(_sibling(path, b"# A\n"), path), id="renamed-over"),
    ],
)
def test_a_copy_is_dropped_once_its_file_changes(tmp_path, change):
    cache = settled_cache()
    path, info = page(tmp_path, "a.gmi", b"# A\n")
    cache.put(path, info, b"# A\n")
    time.sleep(0.01)  # past the clock tick of the first write
    change(tmp_path / "a.gmi")
    assert cache.get(path, os.lstat(path)) is None
    assert len(cache) == 0


def _sibling(path, body: bytes) -> str:
    other = path.with_name(path.name + ".new")
    other.write_bytes(body)
    os.utime(other, (OLD, OLD))
    return str(other)


def test_a_short_read_is_not_kept(tmp_path):
    cache = settled_cache()
    path, info = page(tmp_path, "a.gmi", b"# A whole page\n")
    cache.put(path, info, b"# A who")
    assert cache.get(path, info) is None


def test_files_above_the_size_limit_are_not_kept(tmp_path):
    cache = settled_cache(max_file_bytes=8)
    small_path, small = page(tmp_path, "small", b"12345678")
    big_path, big = page(tmp_path, "big", b"123456789")
    cache.put(small_path, small, b"12345678")
    cache.put(big_path, big, b"123456789")
    assert cache.get(small_path, small) == b"12345678"
    assert cache.get(big_path, big) is None
    # Nor one larger than all the copies may be together.
    tight = settled_cache(max_total_bytes=8)
    tight.put(big_path, big, b"123456789")
    assert tight.get(big_path, big) is None and len(tight) == 0


def test_the_oldest_copies_make_room_within_the_total(tmp_path):
    cache = settled_cache(max_total_bytes=10)
    files = [page(tmp_path, name, name.encode() * 4) for name in "abc"]
    for path, info in files:
        cache.put(path, info, os.path.basename(path).encode() * 4)
    assert [cache.get(path, info) for path, info in files] == [None, b"bbbb", b"cccc"]
