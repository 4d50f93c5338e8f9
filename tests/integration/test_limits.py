"""Limits that keep one client from holding what others need."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from tests.support import client_context, fetch, read_to_end, start_server


@pytest.fixture(scope="module")
def limited(tmp_path_factory, certificate):
    root = tmp_path_factory.mktemp("limited")
    (root / "index.gmi").write_text("# hi\n")
    (root / "one.bin").write_bytes(bytes(range(256)) * 4096)
    (root / "fifty.bin").write_bytes(b"f" * (50 * 1024 * 1024))
    cert, key = certificate
    server = start_server(
        "--root", str(root), "--cert", cert, "--key", key,
        "--listen", "tcp:0:interface=127.0.0.1",
        "--max-connections", "4", "--request-timeout", "5", "--idle-timeout", "3",
    )
    yield server
    server.stop()


def idle_tls(port: int):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client_context().wrap_socket(raw, server_hostname="localhost")


def serves_again(port: int, timeout: float = 5.0) -> None:
    """Closed connections leave the server's count a moment after the client closes them."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = fetch(port, f"gemini://localhost:{port}/").status
        except (OSError, ssl.SSLError) as error:
            status = repr(error)
        if status == 20:
            return
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def test_connections_beyond_the_limit_get_41_and_service_resumes(limited):
    port = limited.port
    held = [idle_tls(port) for _ in range(4)]
    try:
        reply = fetch(port, f"gemini://localhost:{port}/")
        assert reply.header == b"41 server busy, try again later"
        assert reply.clean_close
    finally:
        for connection in held:
            connection.close()
    serves_again(port)


def test_connections_beyond_the_hard_limit_are_closed_before_tls(limited):
    port = limited.port
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4 + 0 + 8)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            assert extra.recv(10) == b""
        except ConnectionResetError:
            pass
        extra.close()
    finally:
        for connection in held:
            connection.close()
    serves_again(port)
    limited.wait_for_log(r"\d+ connections? closed before TLS: \d+ held, the hard limit is 12 "
                         r"\(--max-connections and the few let in to be told 41\)")


def test_slow_reader_gets_the_whole_file_past_the_linger(limited):
    port = limited.port
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{port}/one.bin\r\n".encode())
    started = time.monotonic()
    data, clean = read_to_end(tls, chunk_size=16 * 1024, pause=0.05)
    tls.close()
    assert time.monotonic() - started > 2.5, "the reader was not slow enough to test the linger"
    assert data.partition(b"\r\n")[2] == bytes(range(256)) * 4096
    assert clean


def test_a_client_that_holds_the_whole_reply_unread_past_the_linger_gets_a_fin_not_a_reset(limited):
    # Once a reply is in the client's kernel, the linger's end must not reset
    # the connection: a reset can destroy what the client has not read yet.
    port = limited.port
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{port}/one.bin\r\n".encode())
    time.sleep(3.0)  # the linger (2 s) runs out; the reply waits, unread, in this kernel
    data, clean = read_to_end(tls)
    assert data.partition(b"\r\n")[2] == bytes(range(256)) * 4096
    assert clean
    # Beneath TLS, after the server's close_notify: how the connection ends.
    try:
        ending = socket.socket.recv(tls, 1)
    except ConnectionResetError:
        ending = "reset"
    tls.close()
    assert ending == b""


def test_a_client_reading_slowly_but_steadily_is_not_cut_at_the_idle_timeout(limited):
    # Reading 160 KiB a second, it takes far longer than the idle timeout
    # (3 s) to drain what the kernel holds for it; but it is reading all along.
    port = limited.port
    since = len(limited.log)
    raw = socket.socket()
    # A receive buffer of its own size: the kernel's autotuned one would
    # announce what the client read only once a sixteenth of it is free.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    raw.settimeout(20)
    raw.connect(("127.0.0.1", port))
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{port}/fifty.bin\r\n".encode())
    started = time.monotonic()
    while time.monotonic() - started < 7:
        assert tls.recv(16384), "the server closed the connection"
        time.sleep(0.1)
    # Still served: a burst of reading gets more at once.
    assert sum(len(tls.recv(65536)) for _ in range(64)) > 64 * 1024
    tls.close()
    assert "client read nothing" not in limited.log[since:]


def ask_and_read_nothing(port: int, path: str) -> ssl.SSLSocket:
    """A client that asks for ``path`` with a small receive buffer, and reads nothing yet."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{port}{path}\r\n".encode())
    return tls


def test_client_that_stops_reading_is_closed_at_the_idle_timeout(limited):
    port = limited.port
    since = len(limited.log)
    tls = ask_and_read_nothing(port, "/fifty.bin")
    client_port = tls.getsockname()[1]
    first = tls.recv(1024)
    limited.wait_for_log(r"client read nothing for 3 s; closing", timeout=15, since=since)
    received = len(first)
    try:
        while chunk := tls.recv(65536):
            received += len(chunk)
    except OSError:
        pass
    tls.close()
    assert received < 50 * 1024 * 1024
    assert fetch(port, f"gemini://localhost:{port}/").status == 20
    # The access line counts what reached the client: not what Twisted
    # still held, nor what the kernel held when the reset destroyed it.
    # This connection's line: an earlier test's reader of the same file may
    # be logged after ``since``, once the server sees it gone.
    logged = int(limited.wait_for_log(
        rf"127\.0\.0\.1:{client_port} GET gemini://localhost\S*/fifty\.bin 20 \S+ (\d+) ", since=since).group(1))
    assert abs(logged - received) < 17 * 1024, (logged, received)


@pytest.mark.parametrize("ends_its_side", [False, True], ids=["open", "its side ended"])
def test_a_client_that_reads_nothing_of_a_reply_the_kernel_took_whole_is_reset_at_the_idle_timeout(
    limited, ends_its_side
):
    # The reply (1 MiB) left the process at once: its reset at the idle
    # timeout came from the linger, without the line a paused reply gets,
    # and the access line's duration said a few milliseconds. A client that
    # had ended its side had its socket closed at once, the reply still in
    # the kernel, which held it past every timeout.
    since = len(limited.log)
    tls = ask_and_read_nothing(limited.port, "/one.bin")
    if ends_its_side:
        socket.socket.shutdown(tls, socket.SHUT_WR)
    client = rf"127\.0\.0\.1:{tls.getsockname()[1]}"
    limited.wait_for_log(rf"{client} \S+/one\.bin: client read nothing for 3 s; closing", timeout=15, since=since)
    tls.close()
    took = float(limited.wait_for_log(
        rf"{client} GET gemini://localhost\S*/one\.bin 20 \S+ \d+ ([\d.]+)ms", since=since).group(1))
    assert took >= 3000, took


def test_connections_beyond_the_hard_limit_of_a_proxy_listener_are_closed_without_a_traceback(
        tmp_path, certificate):
    # Twisted's PROXY wrapper took the TLS factory's refusal (no protocol)
    # all the same: each such connection logged three Unhandled Errors.
    (tmp_path / "index.gmi").write_text("# hi\n")
    cert, key = certificate
    server = start_server("--root", str(tmp_path), "--cert", cert, "--key", key, "--max-connections", "1",
                          "--listen", "haproxy:tcp:0:interface=127.0.0.1")
    try:
        port = server.port
        held = []
        for _ in range(1 + 0 + 8 + 3):  # the limit, the few told 41, then beyond the hard limit
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            connection.sendall(f"PROXY TCP4 192.0.2.7 127.0.0.1 40000 {port}\r\n".encode())
            held.append(connection)
        server.wait_for_log(r"\d+ connections? closed before TLS")
        time.sleep(0.5)
        for connection in held:
            connection.close()
        assert "Unhandled Error" not in server.log and "Traceback" not in server.log, server.log
    finally:
        server.stop()
