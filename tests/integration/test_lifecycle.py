"""Stopping gracefully: listeners close first, requests in flight finish."""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import pytest

from tests.support import client_context, fetch, read_to_end, refused_soon, start_server

# twistd ends by re-raising the signal that stopped it, so a clean stop
# reports "killed by SIGTERM" to its parent (systemd counts that a success).
STOPPED_BY_SIGTERM = (0, -signal.SIGTERM)


def server_with_misbehaving_apps(tmp_path, certificate, drain_timeout: str):
    """
    A server whose ``/slow/*`` is ``tests/fastcgi_apps/misbehave.py``, spawned
    (``/slow/silent`` never answers), and its root.
    """
    import sys

    from tests.support import PROJECT_ROOT

    root = tmp_path / "capsule"
    root.mkdir()
    app = PROJECT_ROOT / "tests" / "fastcgi_apps" / "misbehave.py"
    cert, key = certificate
    config = tmp_path / "gmid.conf"
    config.write_text(
        f'server "localhost" {{\n  listen on 127.0.0.1 port 0\n  cert "{cert}"\n  key "{key}"\n'
        f'  root "{root}"\n'
        f'  location "/slow/*" {{ fastcgi spawn "{sys.executable} {app}" }}\n}}\n'
    )
    return start_server("-c", str(config), "--drain-timeout", drain_timeout), root


@pytest.fixture
def lifecycle_server(tmp_path, certificate):
    root = tmp_path / "capsule"
    root.mkdir()
    (root / "index.gmi").write_text("# hi\n")
    (root / "five.bin").write_bytes(b"x" * (5 * 1024 * 1024))
    cert, key = certificate
    server = start_server(
        "--root", str(root), "--cert", cert, "--key", key,
        "--listen", "tcp:0:interface=127.0.0.1",
    )
    yield server
    server.stop()


def test_sigterm_lets_a_download_in_flight_finish_and_refuses_new_connections(lifecycle_server):
    server = lifecycle_server
    context = client_context()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    tls = context.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{server.port}/five.bin\r\n".encode())
    data = tls.recv(4096)
    server.process.send_signal(signal.SIGTERM)
    server.wait_for_log(r"TCP Port \d+ Closed")
    # Twisted logs the port as closed just before it closes the socket.
    assert refused_soon(server.port)
    time.sleep(0.5)
    assert server.process.poll() is None, "server exited while a request was in flight"
    data, clean = read_to_end(tls, data)
    tls.close()
    header, _, body = data.partition(b"\r\n")
    assert header == b"20 application/octet-stream"
    assert len(body) == 5 * 1024 * 1024
    assert clean
    assert server.process.wait(10) in STOPPED_BY_SIGTERM


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_second_stop_signal_during_the_drain_is_answered_with_a_line_not_a_traceback(
    lifecycle_server, second
):
    server = lifecycle_server
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{server.port}/five.bin\r\n".encode())
    data = tls.recv(4096)
    server.process.send_signal(signal.SIGTERM)
    server.wait_for_log(r"TCP Port \d+ Closed")
    server.process.send_signal(second)
    server.wait_for_log(f"received {second.name} again: already stopping")
    data, clean = read_to_end(tls, data)
    tls.close()
    assert clean and len(data.partition(b"\r\n")[2]) == 5 * 1024 * 1024
    assert server.process.wait(10) in STOPPED_BY_SIGTERM
    assert "Traceback" not in server.log and "critical" not in server.log


def test_sigterm_with_nothing_in_flight_exits_at_once(lifecycle_server):
    server = lifecycle_server
    assert fetch(server.port, f"gemini://localhost:{server.port}/").status == 20
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(10) in STOPPED_BY_SIGTERM


def test_a_request_cut_by_the_drain_timeout_is_named_and_the_wait_is_told_as_it_begins(
    tmp_path, certificate
):
    server, _ = server_with_misbehaving_apps(tmp_path, certificate, drain_timeout="3")
    try:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        tls = client_context().wrap_socket(raw, server_hostname="localhost")
        # "silent": the application never answers, as a slow script would.
        url = f"gemini://localhost:{server.port}/slow/silent"
        tls.sendall(f"{url}\r\n".encode())
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_log(r"FastCGI backend spawn:\S+ .*: waiting up to 3 s for 1 request to finish",
                            timeout=1.5)
        assert server.process.wait(15) in STOPPED_BY_SIGTERM
        data, clean = read_to_end(tls)
        tls.close()
    finally:
        server.stop()
    # No reply had begun: the client is told why it gets none.
    assert (data, clean) == (b"41 server is stopping\r\n", True)
    logged = r"gemini://localhost(:\d+)?/slow/silent"
    assert re.search(rf"\] 127\.0\.0\.1:\d+ {logged}: cut by the drain timeout \(3 s\) "
                     "as the server stops: answered 41, no reply had begun", server.log), server.log
    assert re.search(rf"GET {logged} 41 server is stopping 23 \d+\.\dms", server.log)
    # Told once, as the wait began; not again as the backends stop after it.
    assert len(re.findall(r"waiting .*for 1 request to finish", server.log)) == 1


def test_sigusr2_logs_how_many_clients_are_connected_and_serving_goes_on(lifecycle_server):
    server = lifecycle_server
    held = [client_context().wrap_socket(socket.create_connection(("127.0.0.1", server.port)),
                                         server_hostname="localhost") for _ in range(2)]
    try:
        server.process.send_signal(signal.SIGUSR2)
        # With the sockets it counts, for a program that runs several services.
        server.wait_for_log(rf"\] 2 connected clients \(127\.0\.0\.1:{server.port}\)")
        assert fetch(server.port, f"gemini://localhost:{server.port}/").status == 20
    finally:
        for tls in held:
            tls.close()


@pytest.mark.parametrize("sends", [b"", b"x" * 100], ids=["client-silent", "client-sends-data"])
def test_a_download_cut_by_the_drain_timeout_still_brings_what_the_kernel_held(
    tmp_path, certificate, sends
):
    # A client that sent something during the download (a KeyUpdate, its
    # close_notify, anything) left it unread on the server's socket, where
    # the close became a reset and the kernel dropped what it held: 79 KB
    # of 4 MB arrived.
    root = tmp_path / "capsule"
    root.mkdir()
    (root / "big.bin").write_bytes(b"d" * (16 * 1024 * 1024))
    cert, key = certificate
    server = start_server("--root", str(root), "--cert", cert, "--key", key,
                          "--listen", "tcp:0:interface=127.0.0.1", "--drain-timeout", "1")
    try:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        tls = client_context().wrap_socket(raw, server_hostname="localhost")
        tls.sendall(f"gemini://localhost:{server.port}/big.bin\r\n".encode())
        data = tls.recv(4096)
        if sends:
            time.sleep(0.3)  # the server's socket fills: OpenSSL now writes to it
            tls.sendall(sends)
            time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_log(r"big\.bin: cut by the drain timeout \(1 s\)")
        assert server.process.wait(15) in STOPPED_BY_SIGTERM
        # Read only once the server is gone: what it had handed to the kernel arrives.
        data, clean = read_to_end(tls, data)
        tls.close()
    finally:
        server.stop()
    sent = int(re.search(r"GET gemini://localhost/big\.bin 20 \S+ (\d+) ", server.log).group(1))
    # What the access line says left the process is what arrived (but for
    # a TLS record the kernel held only part of), and no close_notify: the
    # client can tell the reply is not whole.
    assert not clean
    assert sent > 1024 * 1024
    assert abs(len(data) - sent) < 17 * 1024, (len(data), sent)


STALLING_TAC = '''
import os
import time

from twisted.application.service import Application
from twisted.logger import Logger

import gemfcgi
from gemfcgi.config import model

config = model.Config(servers=[model.Server(
    name="localhost", cert=os.environ["GEMINI_CERT"], key=os.environ["GEMINI_KEY"],
    options=model.LocationOptions(root=os.environ["GEMINI_ROOT"]))])
service = gemfcgi.makeService(config, listen=["tcp:0:interface=127.0.0.1"])
static = service.site.handlers["static"]


def stall_then_serve(client, request, settings):
    # Synchronous work in a handler: the reactor accepts nothing meanwhile.
    if request.path == "/stall.gmi":
        Logger().info("stalling")
        time.sleep(3)
    static(client, request, settings)


service.site.handlers["static"] = stall_then_serve
application = Application("gemini")
service.setServiceParent(application)
'''


def test_connections_queued_while_the_server_was_busy_are_served_through_a_stop(
    tmp_path, certificate
):
    # The kernel queues connections a busy reactor has not accepted yet;
    # closing the listener at the stop used to reset them.
    from tests.support import TWISTD, start_command

    root = tmp_path / "capsule"
    root.mkdir()
    (root / "index.gmi").write_text("# hi\n")
    (root / "stall.gmi").write_text("# stalled\n")
    tac = tmp_path / "stalling.tac"
    tac.write_text(STALLING_TAC)
    cert, key = certificate
    env = {"GEMINI_ROOT": str(root), "GEMINI_CERT": cert, "GEMINI_KEY": key}
    server = start_command([*TWISTD, "-n", "--pidfile=", "-y", str(tac)], env=env)
    try:
        stalled = client_context().wrap_socket(
            socket.create_connection(("127.0.0.1", server.port), timeout=10),
            server_hostname="localhost")
        stalled.sendall(f"gemini://localhost:{server.port}/stall.gmi\r\n".encode())
        # The handler's line, not twistd's "Loading .../stalling.tac".
        server.wait_for_log(r"\] stalling\n")
        queued = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                  for _ in range(3)]
        server.process.send_signal(signal.SIGTERM)
        # Each has the stop's grace to handshake and then to begin its
        # request: all three handshakes first, so that on a loaded machine
        # the third is not kept waiting behind the others' replies.
        queued = [client_context().wrap_socket(raw, server_hostname="localhost") for raw in queued]
        replies = []
        for tls in queued:
            tls.sendall(f"gemini://localhost:{server.port}/\r\n".encode())
            replies.append(read_to_end(tls))
            tls.close()
        first = read_to_end(stalled)
        stalled.close()
        assert server.process.wait(15) in STOPPED_BY_SIGTERM
    finally:
        server.stop()
    assert first == (b"20 text/gemini\r\n# stalled\n", True)
    assert replies == [(b"20 text/gemini\r\n# hi\n", True)] * 3


def test_a_spawned_program_that_dies_while_the_stop_drains_is_not_started_again(
    tmp_path, certificate
):
    # README: once the stop has begun, a program that ends is not started
    # again. In one process it was, while other requests kept the drain going.
    server, root = server_with_misbehaving_apps(tmp_path, certificate, drain_timeout="5")
    (root / "big.bin").write_bytes(b"b" * (16 * 1024 * 1024))
    try:
        # A download the client does not read holds the drain.
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        download = client_context().wrap_socket(raw, server_hostname="localhost")
        download.sendall(f"gemini://localhost:{server.port}/big.bin\r\n".encode())
        download.recv(4096)
        waiting = client_context().wrap_socket(
            socket.create_connection(("127.0.0.1", server.port), timeout=10),
            server_hostname="localhost")
        waiting.sendall(f"gemini://localhost:{server.port}/slow/silent\r\n".encode())
        pid = int(server.wait_for_log(r"started pid (\d+)").group(1))
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_log(r"stopping: waiting up to 5 s for 2 connections")
        os.kill(pid, signal.SIGKILL)
        server.wait_for_log(rf"pid {pid} exited after .*; not restarted, the server is stopping")
        time.sleep(1)  # ten times the restart delay
        assert "restarting in" not in server.log
        assert len(re.findall(r"started pid", server.log)) == 1
        assert server.process.wait(15) in STOPPED_BY_SIGTERM
        download.close()
        waiting.close()
    finally:
        server.stop()


def test_a_client_that_has_sent_nothing_does_not_hold_a_stop_for_its_request_timeout(
    tmp_path, certificate
):
    # It held it for the request timeout, then got 59 request timeout.
    cert, key = certificate
    (tmp_path / "index.gmi").write_text("# home\n")
    server = start_server("--root", str(tmp_path), "--cert", cert, "--key", key,
                          "--listen", "tcp:0:interface=127.0.0.1", "--request-timeout", "60")
    quiet = client_context().wrap_socket(
        socket.create_connection(("127.0.0.1", server.port), timeout=30),
        server_hostname="localhost")
    slow = client_context().wrap_socket(
        socket.create_connection(("127.0.0.1", server.port), timeout=30),
        server_hostname="localhost")
    slow.sendall(f"gemini://localhost:{server.port}/".encode())
    time.sleep(0.2)
    server.process.send_signal(signal.SIGTERM)
    try:
        server.wait_for_log("waiting up to 30 s for 2 connections to finish")
        # After the quiet client's grace, the one whose line has begun may still end it.
        server.wait_for_log("GET - 41 server is stopping")
        slow.sendall(b"index.gmi\r\n")
        served, clean = read_to_end(slow)
        told, told_clean = read_to_end(quiet)
        assert server.process.wait(15) in STOPPED_BY_SIGTERM
    finally:
        server.stop()
    assert (told, told_clean) == (b"41 server is stopping\r\n", True)
    assert (served, clean) == (b"20 text/gemini\r\n# home\n", True)


@pytest.mark.parametrize("sent", [b"", b"gemini://localhost/half"], ids=["nothing", "half-a-line"])
def test_a_client_still_sending_its_request_when_the_drain_ends_is_told_41(
    tmp_path, certificate, sent
):
    # It was cut without a word (no close_notify), though README promises
    # 41 to a request whose reply had not begun.
    cert, key = certificate
    server = start_server("--root", str(tmp_path), "--cert", cert, "--key", key,
                          "--listen", "tcp:0:interface=127.0.0.1", "--drain-timeout", "1")
    tls = client_context().wrap_socket(
        socket.create_connection(("127.0.0.1", server.port), timeout=15),
        server_hostname="localhost")
    if sent:
        tls.sendall(sent)
    time.sleep(0.2)
    server.process.send_signal(signal.SIGTERM)
    try:
        data, clean = read_to_end(tls)
        tls.close()
        assert server.process.wait(15) in STOPPED_BY_SIGTERM
    finally:
        server.stop()
    assert (data, clean) == (b"41 server is stopping\r\n", True)
