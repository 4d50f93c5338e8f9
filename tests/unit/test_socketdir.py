"""Spawned programs' socket directories: which ones a starting server removes."""

from __future__ import annotations

import os
import socket
import time

from gemfcgi.fastcgi.socketdir import (
    ABANDONED_AFTER,
    PREFIX,
    SOCKET_NAME,
    SocketDirectory,
    remove_abandoned,
)


def age(path, seconds: float = 3600) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def abandoned(tmp_path, name: str = "abc123"):
    """What a server killed outright leaves: a directory nobody holds."""
    path = tmp_path / f"{PREFIX}{name}"
    path.mkdir()
    (path / SOCKET_NAME).touch()
    age(path)
    return path


def test_a_directory_nobody_holds_is_removed_with_what_it_holds(tmp_path):
    left = abandoned(tmp_path)
    assert remove_abandoned(str(tmp_path)) == [str(left)]
    assert not left.exists()


def test_a_directory_of_a_live_server_is_kept_however_old(tmp_path):
    live = SocketDirectory(str(tmp_path))
    age(live.path)
    assert remove_abandoned(str(tmp_path)) == []
    assert os.path.isdir(live.path)
    live.close()
    assert not os.path.exists(live.path)


def test_a_forked_worker_keeps_its_servers_directory_claimed(tmp_path):
    # The parent is gone (its descriptor closed), a worker it forked lives on.
    live = SocketDirectory(str(tmp_path))
    age(live.path)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(writer)
        os.read(reader, 1)
        os._exit(0)
    os.close(reader)
    try:
        os.close(live._claim)
        assert remove_abandoned(str(tmp_path)) == []
        assert os.path.isdir(live.path)
    finally:
        os.close(writer)
        os.waitpid(child, 0)
    assert remove_abandoned(str(tmp_path)) == [live.path]


def test_a_young_directory_is_kept_though_nobody_holds_it_yet(tmp_path):
    young = tmp_path / f"{PREFIX}young"
    young.mkdir()
    age(young, ABANDONED_AFTER - 10)
    assert remove_abandoned(str(tmp_path)) == []
    assert young.is_dir()


def test_only_directories_of_its_kind_are_touched(tmp_path):
    other = tmp_path / "someone-else"
    other.mkdir()
    age(other)
    plain_file = tmp_path / f"{PREFIX}file"
    plain_file.write_text("x")
    age(plain_file)
    target = abandoned(tmp_path, "target")
    link = tmp_path / f"{PREFIX}link"
    link.symlink_to(target)
    os.utime(link, (0, 0), follow_symlinks=False)
    assert remove_abandoned(str(tmp_path)) == [str(target)]
    assert other.is_dir() and plain_file.is_file() and link.is_symlink()


def test_a_parent_that_cannot_be_read_removes_nothing_and_raises_nothing(tmp_path):
    assert remove_abandoned(str(tmp_path / "missing")) == []


def test_each_server_gets_a_directory_of_its_own(tmp_path):
    first, second = SocketDirectory(str(tmp_path)), SocketDirectory(str(tmp_path))
    try:
        assert first.path != second.path
        assert os.path.basename(first.path).startswith(PREFIX)
    finally:
        first.close()
        second.close()
    first.close()  # twice: nothing more happens
    assert list(tmp_path.iterdir()) == []


def test_a_directory_whose_socket_takes_connections_is_kept_though_nobody_holds_it(tmp_path):
    # A server of a version before the locks, or a program that outlived
    # its server (the workers of fcgiwrap -c N), still listens there.
    left = abandoned(tmp_path)
    (left / SOCKET_NAME).unlink()
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(left / SOCKET_NAME))
    listening.listen(1)
    try:
        age(left)
        assert remove_abandoned(str(tmp_path)) == []
        assert left.is_dir()
    finally:
        listening.close()
    assert remove_abandoned(str(tmp_path)) == [str(left)]


def test_a_file_system_without_locks_still_gets_its_directory(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    made = SocketDirectory(str(tmp_path))
    assert os.path.isdir(made.path)
    made.close()
    assert not os.path.exists(made.path)


def test_the_name_of_a_removed_directory_is_logged_escaped(tmp_path):
    # Anyone may name a directory in /tmp: an escape sequence and a line
    # break in the name reached the log as they were.
    from twisted.logger import capturedLogs, formatEvent

    left = abandoned(tmp_path, "\x1b]0;PWNED\x07\nforged")
    with capturedLogs() as events:
        assert remove_abandoned(str(tmp_path)) == [str(left)]
    [line] = [formatEvent(event) for event in events]
    assert "\x1b" not in line and "\n" not in line and "\\x1b]0;PWNED\\x07\\x0aforged" in line
