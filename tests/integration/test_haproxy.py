"""HAProxy in TCP mode with send-proxy-v2 in front of two gemfcgi instances."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from tests.support import client_context, read_to_end, start_server

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def balanced(tmp_path, certificate):
    cert, key = certificate
    servers = []
    for name in ("one", "two"):
        root = tmp_path / name
        root.mkdir()
        (root / "index.gmi").write_text(f"# {name}\n")
        servers.append(start_server(
            "--root", str(root), "--cert", cert, "--key", key,
            "--listen", "haproxy:tcp:0:interface=127.0.0.1",
        ))
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
        f"frontend gemini\n  bind 127.0.0.1:{port}\n  default_backend gemfcgi\n"
        "backend gemfcgi\n  balance roundrobin\n"
        + "".join(
            f"  server s{i} 127.0.0.1:{server.port} send-proxy-v2\n" for i, server in enumerate(servers)
        )
    )
    haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert time.monotonic() < deadline and haproxy.poll() is None, haproxy.stdout.read()
        time.sleep(0.05)
    yield port, servers
    haproxy.kill()
    haproxy.wait()
    for server in servers:
        server.stop()


def fetch_from(port: int, source: str) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{port}/\r\n".encode())
    data, clean = read_to_end(tls)
    tls.close()
    assert clean, "the reply through HAProxy ended without close_notify"
    return data


def test_both_instances_serve_and_see_the_clients_address(balanced):
    port, servers = balanced
    bodies = {fetch_from(port, "127.0.0.7") for _ in range(4)}
    assert bodies == {b"20 text/gemini\r\n# one\n", b"20 text/gemini\r\n# two\n"}
    for server in servers:
        server.wait_for_log(r"127\.0\.0\.7:\d+ GET gemini://localhost/ 20")
