"""
FastCGI applications behind a real gemfcgi process, reached by a real TLS client.

One server (``tests/fastcgi_apps/server.tac``) has a location per backend
kind and application: our codec's test app over unix, tcp, spawn and an
endpoint string; flup raw and WSGI; Debian's fcgiwrap over unix, tcp and
spawn running shell scripts; php-cgi spawned and over tcp.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from gemfcgi.certificates import make_self_signed, write_key_pair
from tests import certs
from tests.fastcgi_apps.harness import (
    APPS,
    Processes,
    free_port,
    python_app,
    rss_kib,
    server_spec,
    wait_for,
)
from tests.support import client_context, fetch, read_to_end, start_server

FCGIWRAP = shutil.which("fcgiwrap", path=os.defpath + ":/usr/sbin:/usr/bin") or "/usr/sbin/fcgiwrap"
PHP_CGI = shutil.which("php-cgi") or "/usr/bin/php-cgi"
SPAWNED_APP = python_app("gemini_app.py")
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def fastcgi(tmp_path_factory, certificate, capsule):
    """The server, and the applications it does not spawn itself."""
    tmp = tmp_path_factory.mktemp("fastcgi")
    app_socket = str(tmp / "app.sock")
    flup_socket = str(tmp / "flup.sock")
    fcgiwrap_socket = str(tmp / "fcgiwrap.sock")
    app_port, fcgiwrap_port, php_port = free_port(), free_port(), free_port()
    processes = Processes()
    try:
        processes.app([sys.executable, str(APPS / "gemini_app.py"), "--listen", f"unix:{app_socket}"],
                      ready=app_socket)
        processes.app([sys.executable, str(APPS / "gemini_app.py"),
                       "--listen", f"tcp:127.0.0.1:{app_port}"], ready=("127.0.0.1", app_port))
        processes.app([sys.executable, str(APPS / "flup_wsgi.py"), flup_socket], ready=flup_socket)
        processes.app([FCGIWRAP, "-c", "2", "-s", f"unix:{fcgiwrap_socket}"], ready=fcgiwrap_socket)
        processes.app([FCGIWRAP, "-c", "2", "-s", f"tcp:127.0.0.1:{fcgiwrap_port}"],
                      ready=("127.0.0.1", fcgiwrap_port))
        processes.app([PHP_CGI, "-b", f"127.0.0.1:{php_port}"], ready=("127.0.0.1", php_port))
        cgi, php = str(APPS / "cgi"), str(APPS / "php")
        locations = [
            {"pattern": "/app/*", "backend": {"socket": app_socket}},
            {"pattern": "/tcp-app/*", "backend": {"tcp": ["127.0.0.1", app_port]}},
            {"pattern": "/spawn/*", "backend": {"spawn": SPAWNED_APP}},
            {"pattern": "/demo/*", "backend": {"spawn": f"{sys.executable} -m gemfcgi.demo.app"}},
            {"pattern": "/endpoint/*", "backend": {"endpoint": f"unix:path={app_socket}"}},
            {"pattern": "/flup-raw/*", "backend": {"spawn": python_app("flup_raw.py")}},
            {"pattern": "/flup-wsgi/*", "backend": {"socket": flup_socket}},
            {"pattern": "/cgi/*", "backend": {"socket": fcgiwrap_socket}, "root": str(APPS)},
            {"pattern": "/cgi-tcp/*", "backend": {"tcp": ["127.0.0.1", fcgiwrap_port]},
             "root": cgi, "strip": 1},
            {"pattern": "/cgi-spawn/*", "backend": {"spawn": f"{FCGIWRAP} -c 2"},
             "root": cgi, "strip": 1},
            {"pattern": "/php/*", "backend": {"spawn": PHP_CGI}, "root": str(APPS)},
            {"pattern": "/php-tcp/*", "backend": {"tcp": ["127.0.0.1", php_port]},
             "root": php, "strip": 1},
        ]
        server = processes.server(server_spec(certificate, locations, root=str(capsule)))
        yield server
    finally:
        processes.stop_all()


def get(server, path: str, **kwargs):
    return fetch(server.port, f"gemini://localhost:{server.port}{path}", **kwargs)


# -- our codec's test application, over every kind of backend -------------------


@pytest.mark.parametrize("prefix", ["/app", "/tcp-app", "/spawn", "/endpoint"])
def test_gemini_app_answers_through_every_kind_of_backend(fastcgi, prefix):
    reply = get(fastcgi, f"{prefix}/hello")
    assert reply.header == b"20 text/gemini"
    assert b"# Hello, visitor!" in reply.body
    assert b"certificate: no certificate" in reply.body
    assert reply.clean_close


def test_input_prompt_then_the_answer_with_the_query(fastcgi):
    assert get(fastcgi, "/app/ask").header == b"10 What is your name?"
    reply = get(fastcgi, "/app/ask?Ada%20L")
    assert reply.status == 20 and b"# Hello, Ada L!" in reply.body
    assert b"query: Ada%20L" in reply.body


def test_demo_app_runs_as_a_module_with_its_socket_on_fd_0(fastcgi):
    reply = get(fastcgi, "/demo/app/hello?x")
    assert reply.header == b"20 text/gemini"
    assert b"certificate: no certificate" in reply.body and b"query: x" in reply.body
    assert get(fastcgi, "/demo/app/ask").header == b"10 What is your name?"
    assert get(fastcgi, "/demo/app/nothing").header == b"51 not found"


def test_the_demo_keeps_a_name_with_line_breaks_on_its_heading_line(fastcgi):
    reply = get(fastcgi, "/demo/app/ask?Bob%0A%3D%3E%20gemini%3A%2F%2Fevil.example%2F%20Click%00")
    lines = reply.body.decode().splitlines()
    assert lines[0] == "# Hello, Bob => gemini://evil.example/ Click !"
    assert not [line for line in lines if "evil" in line and line.startswith("=>")]


def test_static_pages_are_still_served_beside_fastcgi(fastcgi):
    assert get(fastcgi, "/").header == b"20 text/gemini"


def test_params_name_the_client_certificate(fastcgi, tmp_path):
    cert_pem, key_pem = make_self_signed(["alice"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    context = client_context(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    reply = get(fastcgi, "/app/env?x=1", context=context)
    params = dict(line.split("=", 1) for line in reply.body.decode().splitlines())
    digest = hashlib.sha256(x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER))
    assert params["AUTH_TYPE"] == "CERTIFICATE"
    assert params["REMOTE_USER"] == "/CN=alice"
    assert params["TLS_CLIENT_HASH"] == "SHA256:" + digest.hexdigest()
    assert params["QUERY_STRING"] == "x=1"
    assert params["SERVER_NAME"] == "localhost"
    assert params["SERVER_PORT"] == str(fastcgi.port)
    assert params["REMOTE_ADDR"] == "127.0.0.1"
    assert params["TLS_VERSION"] == "TLSv1.3"
    assert params["GEMINI_URL"] == f"gemini://localhost:{fastcgi.port}/app/env?x=1"


def test_concurrent_requests_to_a_spawned_app_all_succeed(fastcgi):
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda i: get(fastcgi, f"/spawn/ask?n{i}"), range(40)))
    assert [r.status for r in replies] == [20] * 40
    assert all(b"# Hello, n%d!" % i in r.body for i, r in enumerate(replies))


# -- flup ----------------------------------------------------------------------


def test_flup_raw_gemini_reply_is_relayed(fastcgi):
    reply = get(fastcgi, "/flup-raw/page")
    assert reply.header == b"20 text/gemini"
    assert reply.body == b"# flup raw\npath /flup-raw/page\n"


def test_flup_wsgi_cgi_headers_are_translated(fastcgi):
    reply = get(fastcgi, "/flup-wsgi/page?q=1")
    assert reply.header == b"20 text/gemini"
    assert reply.body == b"# flup wsgi\nquery q=1\n"
    assert get(fastcgi, "/flup-wsgi/missing").header == b"51 Not Found"


def test_what_flup_says_after_a_reply_without_a_body_is_logged(fastcgi):
    # The application's wsgi.errors reaches gemfcgi after its 404 does.
    reply = get(fastcgi, "/flup-wsgi/deep/missing")
    assert (reply.header, reply.body, reply.clean_close) == (b"51 Not Found", b"", True)
    fastcgi.wait_for_log(r"gemini://localhost/flup-wsgi/deep/missing: FastCGI backend unix:\S+flup\.sock"
                         r" stderr: no record for this page", timeout=5)


def certificate_with_long_names(directory, name: str, attributes: int) -> tuple[str, str]:
    """
    A self-signed certificate whose subject (and so issuer) has ``attributes``
    units of 60 accented letters: each shows as 484 characters in
    REMOTE_USER and TLS_CLIENT_ISSUER (OpenSSL's one-line form writes
    every byte of ``é`` as ``\\xC3\\xA9``).
    """
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "long")] + [
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "é" * 60) for _ in range(attributes)
    ])
    certificate, key = certs.issue("long", subject=subject, ca=None,
                                   not_after=certs.NOW + datetime.timedelta(days=1))
    return certs.write(directory, name, (certificate, key))


@pytest.mark.parametrize("path", ["/flup-wsgi/environ", "/php/environ.php"])
def test_an_application_gets_every_parameter_whole_when_a_certificates_names_fill_several_records(
    fastcgi, tmp_path, path
):
    # 80 units: REMOTE_USER and TLS_CLIENT_ISSUER of about 38 KB each, 77 KB
    # of parameters in all: more than one PARAMS record. flup and php-cgi
    # decode each record on their own; a record that began inside a value
    # lost parameters and made up others from the value's bytes (flup), or
    # reset the connection (php-cgi).
    cert, key = certificate_with_long_names(tmp_path, "long", 80)
    reply = get(fastcgi, path, context=client_context(cert, key))
    assert reply.header.startswith(b"20 text/plain"), reply.header
    lines = reply.body.decode("utf-8", "replace").split("\n")[:-1]
    lengths = dict(re.findall(r"(?m)^([A-Za-z0-9_.]+) (\d+)$", reply.body.decode("utf-8", "replace")))
    assert len(lengths) == len(lines), [line for line in lines if line.split(" ")[0] not in lengths]
    assert int(lengths["REMOTE_USER"]) > 38_000
    assert lengths["TLS_CLIENT_ISSUER"] == lengths["REMOTE_USER"]
    assert lengths["TLS_CLIENT_HASH"] == str(len("SHA256:") + 64)
    for name in ("DOCUMENT_ROOT", "TLS_CLIENT_SERIAL", "SERVER_NAME"):
        assert name in lengths
    # Named only for the application that has a file (environ.php).
    assert ("SCRIPT_FILENAME" in lengths) == path.endswith(".php")


def test_a_certificate_whose_names_no_record_can_hold_gets_62_and_a_log_line(fastcgi, tmp_path):
    # 150 units: REMOTE_USER alone is 72 KB, more than one PARAMS record
    # holds; it is not split, and the request is not sent.
    cert, key = certificate_with_long_names(tmp_path, "longer", 150)
    reply = get(fastcgi, "/flup-wsgi/environ", context=client_context(cert, key))
    assert (reply.header, reply.clean_close) == (b"62 certificate names too long", True)
    fastcgi.wait_for_log(
        r"/flup-wsgi/environ: FastCGI backend unix:\S+flup\.sock: request not sent: parameter "
        r"'REMOTE_USER' is \d+ bytes encoded, more than a record holds \(65535\)", timeout=5)
    assert get(fastcgi, "/flup-wsgi/environ").status == 20


# -- fcgiwrap and shell scripts ---------------------------------------------------


def test_fcgiwrap_script_gets_script_name_and_path_info_split_on_the_real_file(fastcgi):
    reply = get(fastcgi, "/cgi/env.sh/extra/path?x=1")
    assert reply.header == b"20 text/plain"
    params = dict(line.split("=", 1) for line in reply.body.decode().splitlines() if "=" in line)
    assert params["SCRIPT_NAME"] == "/cgi/env.sh"
    assert params["PATH_INFO"] == "/extra/path"
    assert params["QUERY_STRING"] == "x=1"
    assert params["REMOTE_ADDR"] == "127.0.0.1"
    assert params["SERVER_NAME"] == "localhost"
    assert params["TLS_VERSION"] in ("TLSv1.2", "TLSv1.3")
    assert params["AUTH_TYPE"] == ""
    assert params["GEMINI_URL_PATH"] == "cgi/env.sh/extra/path"


def test_fcgiwrap_cgi_content_type_becomes_20(fastcgi):
    reply = get(fastcgi, "/cgi/hello.sh")
    assert reply.header == b"20 text/gemini"
    assert reply.body == b"# hello from a shell script\n"


def test_fcgiwrap_error_for_a_missing_script_is_translated(fastcgi):
    # fcgiwrap answers "Status: 403 Forbidden" with CGI headers.
    assert get(fastcgi, "/cgi/no-such-script.sh").header == b"50 Forbidden"


def test_fcgiwrap_own_error_is_a_42_and_its_reason_is_logged(fastcgi):
    # A script that prints nothing: fcgiwrap answers "Status: 502 Bad
    # Gateway" itself, and says why in the body the client never gets.
    reply = get(fastcgi, "/cgi/silent.sh")
    assert (reply.header, reply.body, reply.clean_close) == (b"42 Bad Gateway", b"", True)
    fastcgi.wait_for_log(r"gemini://localhost/cgi/silent.sh: FastCGI backend unix:\S+fcgiwrap\.sock"
                         r" \(\d+ pending\): the application answered: 42 Bad Gateway: \w+", timeout=5)


def test_fcgiwrap_over_tcp_with_strip(fastcgi):
    reply = get(fastcgi, "/cgi-tcp/env.sh/more")
    assert reply.status == 20
    assert b"SCRIPT_NAME=/env.sh\r\nPATH_INFO=/more" in reply.body


def test_fcgiwrap_spawned_by_gemfcgi(fastcgi):
    assert get(fastcgi, "/cgi-spawn/hello.sh").header == b"20 text/gemini"
    assert b"SCRIPT_NAME=/env.sh" in get(fastcgi, "/cgi-spawn/env.sh").body


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="no scheduling policies here")
def test_spawned_programs_and_their_workers_run_as_batch_while_the_server_does_not(fastcgi):
    assert get(fastcgi, "/cgi-spawn/hello.sh").status == 20
    pattern = rf"spawn:{re.escape(FCGIWRAP)} -c 2: started pid (\d+)"
    fcgiwrap = int(re.findall(pattern, fastcgi.log)[-1])
    workers = _children(fcgiwrap)
    assert len(workers) == 2
    for pid in [fcgiwrap, *workers]:
        assert os.sched_getscheduler(pid) == os.SCHED_BATCH
    assert os.sched_getscheduler(fastcgi.process.pid) == os.SCHED_OTHER


# -- php-cgi ------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/php", "/php-tcp"])
def test_php_content_type_becomes_20(fastcgi, prefix):
    reply = get(fastcgi, f"{prefix}/hello.php?x=2")
    assert reply.header.startswith(b"20 text/gemini")
    assert reply.body == b"# hello from php\nquery x=2\n"


def test_php_location_header_becomes_30(fastcgi):
    assert get(fastcgi, "/php/redirect.php").header == b"30 gemini://localhost/elsewhere"


def test_php_http_response_code_404_becomes_51(fastcgi):
    reply = get(fastcgi, "/php/notfound.php")
    assert reply.header == b"51 Not Found"
    assert reply.body == b""


def test_php_cgi_ending_after_its_max_requests_under_load_costs_no_request(certificate):
    # Without PHP_FCGI_CHILDREN, php-cgi exits (status 0) after
    # PHP_FCGI_MAX_REQUESTS requests (500 by default; 3 here, to see many
    # runs), each run far shorter than a second under load. That is a
    # healthy run: the next requests wait in the backlog for the restart.
    with php_cgi_with_a_quota(certificate, 3) as server:
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda i: get(server, f"/php/hello.php?x={i}"), range(60)))
        assert [reply.status for reply in replies] == [20] * 60
        assert [reply.body for reply in replies] == [
            b"# hello from php\nquery x=%d\n" % i for i in range(60)]
        assert server.log.count("exited after") >= 10
        assert "failed to start" not in server.log


@contextmanager
def php_cgi_with_a_quota(certificate, quota: int, timeouts: Optional[dict] = None):
    """A server whose /php/ is a php-cgi that exits after ``quota`` requests, spawned."""
    processes = Processes()
    try:
        yield processes.server(server_spec(certificate, [{
            "pattern": "/php/*", "root": str(APPS),
            "backend": {"spawn": f"env PHP_FCGI_MAX_REQUESTS={quota} {PHP_CGI}"},
        }], timeouts=timeouts))
    finally:
        processes.stop_all()


def test_php_cgi_at_its_quota_after_taking_a_request_given_up_on_is_healthy(certificate):
    # A client left while its request still waited in php-cgi's backlog;
    # php-cgi took it and answered no one, which spent its quota of one:
    # the run was taken for one that took nothing, its requests left
    # unread, and every request behind it got 42 "failed to start".
    with php_cgi_with_a_quota(certificate, 1, {"connect": 1.0, "reply": 20.0, "drain": 3.0, "kill": 2.0}) as server:
        with ThreadPoolExecutor(8) as pool:
            first = [pool.submit(get, server, "/php/slow.php?ms=500")]
            time.sleep(0.05)
            first.append(pool.submit(get, server, "/php/slow.php?ms=500"))
            time.sleep(0.3)
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            leaving = client_context().wrap_socket(raw, server_hostname="localhost")
            leaving.sendall(f"gemini://localhost:{server.port}/php/slow.php?ms=500\r\n".encode())
            time.sleep(0.1)
            leaving.close()
            time.sleep(0.2)
            rest = [pool.submit(get, server, f"/php/slow.php?ms=50&n={n}") for n in range(6)]
            statuses = [future.result().status for future in first + rest]
        assert statuses == [20] * 8, server.log
        assert "failed to start" not in server.log


# -- supervision and memory -----------------------------------------------------------


def dead(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie its parent has not reaped yet, or gone)."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):  # reaped between the open and the read
        return True


def test_spawned_app_killed_is_restarted_and_serves_again(fastcgi):
    assert get(fastcgi, "/spawn/hello").status == 20
    pattern = rf"spawn:{re.escape(SPAWNED_APP)}: started pid (\d+)"
    first = int(re.findall(pattern, fastcgi.log)[-1])
    os.kill(first, signal.SIGKILL)
    # The signal is delivered when the process next runs: until then it may
    # still accept a connection, and take the request down with it.
    wait_for(lambda: dead(first), timeout=5, what=f"pid {first} to be gone")
    # Requests sent at once wait in the socket's backlog for the new process.
    replies = [get(fastcgi, f"/spawn/ask?after{i}") for i in range(5)]
    assert [r.status for r in replies] == [20] * 5
    second = int(re.findall(pattern, fastcgi.log)[-1])
    assert second != first
    assert "exited after" in fastcgi.log


def test_huge_reply_to_a_client_that_stalls_keeps_server_memory_bounded(fastcgi):
    size = 100 * MiB
    pid = fastcgi.process.pid
    get(fastcgi, "/spawn/big?1000000")  # warm up: the spawned app and its buffers
    baseline = rss_kib(pid)
    raw = socket.create_connection(("127.0.0.1", fastcgi.port), timeout=20)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    try:
        tls.sendall(f"gemini://localhost:{fastcgi.port}/spawn/big?{size}\r\n".encode())
        received = len(tls.recv(65536))
        samples = []
        for _ in range(15):  # the client stalls for 1.5 s
            time.sleep(0.1)
            samples.append(rss_kib(pid))
        while True:
            chunk = tls.recv(1024 * 1024)
            if not chunk:
                break
            received += len(chunk)
    finally:
        tls.close()
    assert received == size + len(b"20 application/octet-stream\r\n")
    assert max(samples) - baseline < 32 * 1024, (baseline, samples)



def test_an_app_that_ends_while_the_server_stops_is_not_started_again(certificate):
    # systemd sends SIGTERM to the whole cgroup: the spawned application
    # ends while the server still drains a reply (to a client that reads
    # nothing, so the backend's EOF waits unread behind the paused reply).
    processes = Processes()
    try:
        server = processes.server(server_spec(
            certificate, [{"pattern": "/spawn/*", "backend": {"spawn": SPAWNED_APP}}]
        ))
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        tls = client_context().wrap_socket(raw, server_hostname="localhost")
        tls.sendall(f"gemini://localhost:{server.port}/spawn/big?{64 * MiB}\r\n".encode())
        assert tls.recv(65536).startswith(b"20 ")
        pattern = rf"spawn:{re.escape(SPAWNED_APP)}: started pid (\d+)"
        (app,) = map(int, re.findall(pattern, server.log))
        time.sleep(1)  # every buffer on the way fills, and the reply pauses
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_log(r"FastCGI backend spawn:.*: waiting .*for 1 request to finish")
        os.kill(app, signal.SIGTERM)
        server.wait_for_log(rf"pid {app} exited after .*; not restarted, the server is stopping")
        time.sleep(1)  # ten times the restart delay
        assert len(re.findall(pattern, server.log)) == 1
        assert "restarting in" not in server.log
        tls.close()
        assert server.process.wait(10) is not None
    finally:
        processes.stop_all()


def test_stop_lets_a_reply_in_flight_from_a_spawned_app_finish(certificate):
    processes = Processes()
    try:
        server = processes.server(server_spec(
            certificate, [{"pattern": "/spawn/*", "backend": {"spawn": SPAWNED_APP}}]
        ))
        size = 8 * MiB
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        tls = client_context().wrap_socket(raw, server_hostname="localhost")
        tls.sendall(f"gemini://localhost:{server.port}/spawn/big?{size}\r\n".encode())
        received = len(tls.recv(65536))
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_log("Received SIGTERM")  # the stop is under way; nothing read yet
        while chunk := tls.recv(1024 * 1024):
            received += len(chunk)
        tls.close()
        assert received == size + len(b"20 application/octet-stream\r\n")
        assert server.process.wait(10) is not None
        server.wait_for_log(r"pid \d+ stopped")
    finally:
        processes.stop_all()


def scripts_behind_spawned_fcgiwrap(tmp_path, certificate, scripts: dict[str, str]):
    """
    A configuration whose ``/cgi/*`` location spawns fcgiwrap for the shell
    ``scripts`` (name: body) under the root: its file, its text and that
    location's line (for a reload without it).
    """
    cgi = tmp_path / "cgi"
    cgi.mkdir()
    for name, body in scripts.items():
        (cgi / name).write_text("#!/bin/sh\n" + body)
        (cgi / name).chmod(0o755)
    cert, key = certificate
    location = f'  location "/cgi/*" {{ fastcgi spawn "{FCGIWRAP}" }}\n'
    text = (
        f'server "localhost" {{\n  listen on 127.0.0.1 port 0\n  cert "{cert}"\n  key "{key}"\n'
        f'  root "{tmp_path}"\n{location}}}\n'
    )
    config = tmp_path / "gmid.conf"
    config.write_text(text)
    return config, text, location


def test_a_reload_that_brings_back_a_draining_spawned_app_takes_it_back(certificate, tmp_path):
    config, with_app, location = scripts_behind_spawned_fcgiwrap(tmp_path, certificate, {
        "slow.sh": "sleep 1.5\nprintf '20 text/gemini\\r\\nslow\\n'\n",
        "hello.sh": "printf '20 text/gemini\\r\\nhello\\n'\n"})
    server = start_server("-c", str(config))
    try:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(get, server, "/cgi/slow.sh")
            time.sleep(0.5)
            for text in (with_app.replace(location, ""), with_app):
                # Without the app (it drains its request), then with it again.
                before = len(server.log)
                config.write_text(text)
                server.process.send_signal(signal.SIGHUP)
                server.wait_for_log("configuration reloaded", since=before)
            assert (slow.result().header, slow.result().body.strip()) == (b"20 text/gemini", b"slow")
        reply = get(server, "/cgi/hello.sh")
        assert (reply.header, reply.body.strip()) == (b"20 text/gemini", b"hello")
        assert "Traceback" not in server.log and "critical" not in server.log
    finally:
        server.stop()


def test_a_request_begun_before_a_reload_that_removed_its_program_is_served_and_leaves_none(
    certificate, tmp_path
):
    # The connection was accepted before the reload, so its request is
    # served as the old configuration says: it got the program started
    # again, and that program then ran until the next reload.
    config, with_app, location = scripts_behind_spawned_fcgiwrap(tmp_path, certificate, {
        "hello.sh": "printf '20 text/gemini\\r\\nhello\\n'\n"})
    server = start_server("-c", str(config))
    try:
        assert get(server, "/cgi/hello.sh").header == b"20 text/gemini"
        tls = client_context().wrap_socket(
            socket.create_connection(("127.0.0.1", server.port), timeout=10), server_hostname="localhost")
        before = len(server.log)
        config.write_text(with_app.replace(location, ""))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded", since=before)
        server.wait_for_log(r"pid \d+ stopped", since=before)
        tls.sendall(f"gemini://localhost:{server.port}/cgi/hello.sh\r\n".encode())
        data, clean = read_to_end(tls)
        assert (data.split(b"\r\n", 1)[0], data.split(b"\r\n", 1)[1].strip(), clean) == (
            b"20 text/gemini", b"hello", True)
        tls.close()
        late = server.wait_for_log(r"started pid (\d+)", since=before)
        server.wait_for_log(rf"pid {late.group(1)} stopped", since=before)
        # Served as a file now, as the running configuration says.
        assert get(server, "/cgi/hello.sh").header == b"20 application/octet-stream"
        assert len(re.findall("started pid", server.log[before:])) == 1
        assert "Traceback" not in server.log
    finally:
        server.stop()


def test_a_gmid_configuration_for_fcgiwrap_with_document_root_and_script_name_is_served(
    certificate, tmp_path
):
    # As gmid's manual has fcgiwrap set up: no root, the script named by
    # `param` lines that fcgiwrap joins.
    scripts = tmp_path / "cgi-root" / "cgi-bin"
    scripts.mkdir(parents=True)
    shutil.copy(APPS / "cgi" / "env.sh", scripts / "hello")
    cert, key = certificate
    config = tmp_path / "gmid.conf"
    config.write_text(
        f'server "localhost" {{\n  listen on 127.0.0.1 port 0\n  cert "{cert}"\n  key "{key}"\n'
        f'  location "/cgi-bin/hello*" {{ fastcgi {{\n    spawn "{FCGIWRAP}"\n'
        f'    param DOCUMENT_ROOT = "{tmp_path / "cgi-root"}"\n'
        f'    param SCRIPT_NAME = "/cgi-bin/hello"\n  }} }}\n}}\n'
    )
    server = start_server("-c", str(config))
    try:
        reply = get(server, "/cgi-bin/hello/extra")
        assert reply.status == 20, server.log
        lines = reply.body.splitlines()
        assert b"SCRIPT_NAME=/cgi-bin/hello" in lines and b"PATH_INFO=/extra" in lines
    finally:
        server.stop()


# -- what is a script ---------------------------------------------------------------


def test_a_path_through_an_image_is_not_run_by_php_nor_a_link_out_of_the_root_by_fcgiwrap(
    tmp_path, certificate
):
    # /static/photo.gif/x.php matched "*.php" and went to php-cgi whole; its
    # cgi.fix_pathinfo found photo.gif in SCRIPT_FILENAME and ran the PHP in
    # it. A link out of the root was followed by fcgiwrap the same way.
    cert, key = certificate
    root = tmp_path / "root"
    (root / "static").mkdir(parents=True)
    (root / "static" / "photo.gif").write_text("GIF89a<?php echo 'RAN AS PHP'; ?>")
    (root / "page.php").write_text("<?php header('Content-Type: text/gemini'); echo 'page ', "
                                   "$_SERVER['PATH_INFO'] ?? ''; ?>")
    (root / "secret.php").write_text("<?php echo 'RAN THE BLOCKED SCRIPT'; ?>")
    (root / "cgi").mkdir()
    outside = tmp_path / "outside.sh"
    outside.write_text("#!/bin/sh\nprintf '20 text/plain\\r\\n\\r\\nRAN OUTSIDE'\n")
    outside.chmod(0o755)
    (root / "cgi" / "out.sh").symlink_to(outside)
    secret = root / "cgi" / "secret.sh"
    secret.write_text("#!/bin/sh\nprintf '20 text/plain\\r\\n\\r\\nRAN THE BLOCKED CGI'\n")
    secret.chmod(0o755)
    (tmp_path / "gmid.conf").write_text(
        f'server "localhost" {{\n\tlisten on 127.0.0.1 port 0\n\tcert "{cert}"\n\tkey "{key}"\n'
        f'\troot "{root}"\n\tlocation "/secret.php" {{ block return 51 "blocked" }}\n'
        f'\tlocation "*.php" {{ fastcgi spawn "{PHP_CGI}" }}\n'
        f'\tlocation "/cgi/secret.sh" {{ block return 51 "blocked" }}\n'
        f'\tlocation "/cgi/*" {{ fastcgi spawn "{FCGIWRAP}" }}\n}}\n'
    )
    server = start_server("-c", str(tmp_path / "gmid.conf"))
    try:
        url = f"gemini://localhost:{server.port}"
        through_image = fetch(server.port, f"{url}/static/photo.gif/x.php")
        page = fetch(server.port, f"{url}/page.php")
        linked = [fetch(server.port, f"{url}/cgi/out.sh{rest}") for rest in ("", "/extra")]
        blocked = [fetch(server.port, f"{url}/secret.php{rest}") for rest in ("", "/x.php")]
        blocked += [fetch(server.port, f"{url}/cgi/secret.sh{rest}") for rest in ("", "/", "/x")]
        assert (through_image.header, through_image.body) == (b"51 not found", b"")
        assert [reply.header for reply in blocked] == [b"51 blocked", b"51 not found"] * 2 + [b"51 not found"]
        assert (page.status, page.body) == (20, b"page ")
        assert [(reply.header, reply.body) for reply in linked] == [(b"51 not found", b"")] * 2
        server.wait_for_log(r"/static/photo\.gif/x\.php: not sent to FastCGI backend spawn:\S+: "
                            r"/static/photo\.gif is a file this application does not serve")
    finally:
        server.stop()
