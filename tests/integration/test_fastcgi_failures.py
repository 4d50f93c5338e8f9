"""
Every row of the FastCGI failure table against a real server process.

The misbehaving application (``tests/fastcgi_apps/misbehave.py``, spawned by
the server) breaks the protocol one way per page; the other failures are
addresses nothing answers on. Each test checks what the client sees and the
log line naming the backend and the fault; the last ones check that the
server keeps serving and leaks no descriptor.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import sys
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gemfcgi.demo.app import serve
from tests.fastcgi_apps.harness import (
    Processes,
    free_port,
    open_fds,
    python_app,
    server_spec,
    wait_for,
)
from tests.support import Reply, client_context, pyopenssl_client, read_to_end

MISBEHAVE = python_app("misbehave.py")
GOOD_APP = python_app("gemini_app.py")


@pytest.fixture(scope="module")
def blackhole():
    """A TCP port whose accept queue is full: connects to it hang."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(0)
    port = listening.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    yield port
    filler.close()
    listening.close()


class BusyApp:
    """
    A unix socket whose application accepts nothing yet: its backlog is kept
    full (by connections of the test's own), until ``start`` lets it serve.
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listening.bind(self.path)
        self.listening.listen(1)
        self.fillers: list[socket.socket] = []

    def fill(self) -> None:
        while True:
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            filler.setblocking(False)
            try:
                filler.connect(self.path)
            except BlockingIOError:
                filler.close()
                return
            self.fillers.append(filler)

    def start(self) -> None:
        """Begin to accept, and answer every request (the fillers close first)."""
        for filler in self.fillers:
            filler.close()
        self.fillers.clear()

        def answer(request) -> None:
            request.end(data=b"20 text/gemini\r\nserved after the wait\n")

        def serve_until_closed() -> None:
            try:
                serve(self.listening, answer)
            except OSError:
                pass  # closed at the end of the module, under a waiting accept()

        threading.Thread(target=serve_until_closed, daemon=True).start()

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.listening.close()


@pytest.fixture(scope="module")
def busy_apps(tmp_path_factory):
    """Two busy applications: one that never accepts, one that starts to."""
    directory = tmp_path_factory.mktemp("busy")
    never, late = BusyApp(directory / "never.sock"), BusyApp(directory / "late.sock")
    yield never, late
    never.close()
    late.close()


@pytest.fixture(scope="module")
def failing(tmp_path_factory, certificate, capsule, blackhole, busy_apps):
    refused_port = free_port()
    processes = Processes()
    never, late = busy_apps
    locations = [
        {"pattern": "/full/*", "backend": {"socket": never.path}},
        {"pattern": "/full-endpoint/*", "backend": {"endpoint": f"unix:path={never.path}:timeout=1"}},
        # Without a timeout of its own (Twisted's default is 30 s): the connect timeout.
        {"pattern": "/full-endpoint-default/*", "backend": {"endpoint": f"unix:path={never.path}"}},
        {"pattern": "/late/*", "backend": {"socket": late.path}},
        {"pattern": "/bad/*", "backend": {"spawn": MISBEHAVE}},
        {"pattern": "/app/*", "backend": {"spawn": GOOD_APP}},
        {"pattern": "/refused/*", "backend": {"tcp": ["127.0.0.1", refused_port]}},
        {"pattern": "/missing/*", "backend": {"socket": str(tmp_path_factory.mktemp("x") / "no.sock")}},
        {"pattern": "/unlogged/*", "log": False,
         "backend": {"socket": str(tmp_path_factory.mktemp("x") / "no.sock")}},
        {"pattern": "/nowhere/*", "backend": {"tcp": ["no-such-host.invalid", 9000]}},
        {"pattern": "/blackhole/*", "backend": {"tcp": ["127.0.0.1", blackhole]}},
    ]
    try:
        server = processes.server(server_spec(certificate, locations, root=str(capsule)))
        server.refused_port = refused_port
        yield server
    finally:
        processes.stop_all()


def get(server, path: str) -> Reply:
    """
    One request; ``clean_close`` says whether the reply ended with a TLS
    close_notify. The ssl module would pass a close without one off as a
    clean end (``suppress_ragged_eofs``); here it is an error, as a Gemini
    client must treat it, since a body cut short looks like that.
    """
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    tls = client_context().wrap_socket(raw, server_hostname="localhost",
                                       suppress_ragged_eofs=False)
    tls.sendall(f"gemini://localhost:{server.port}{path}\r\n".encode())
    data, clean = read_to_end(tls)
    tls.close()
    header, _, body = data.partition(b"\r\n")
    return Reply(header, body, clean)


def logged(server, *parts: str) -> re.Match:
    """Wait for one log line holding every part, in order."""
    return server.wait_for_log(".*".join(re.escape(part) for part in parts), timeout=5)


def fault_line(server, path: str, backend: str, *parts: str) -> re.Match:
    url = f"gemini://localhost{path}"
    return logged(server, url, f"FastCGI backend {backend}", *parts)


# -- connecting ------------------------------------------------------------------------


def test_connect_refused_gets_42_and_logs_the_os_error(failing):
    assert get(failing, "/refused/x").header == b"42 CGI error"
    fault_line(failing, "/refused/x", f"tcp:127.0.0.1:{failing.refused_port}",
               "cannot connect", "Connection refused")


def test_missing_socket_gets_42_and_logs_the_os_error(failing):
    assert get(failing, "/missing/x").header == b"42 CGI error"
    fault_line(failing, "/missing/x", "unix:", "no.sock", "cannot connect",
               "No such file or directory")


def test_under_log_off_a_warning_names_the_host_and_not_the_path_or_query(failing):
    # gmid writes no line naming such a request; the warning held the
    # query a configuration had put out of the log (a token).
    assert get(failing, "/unlogged/draft?token=SECRET").header == b"42 CGI error"
    line = logged(failing, "gemini://localhost/... (log off)", "FastCGI backend unix:",
                  "cannot connect").group(0)
    assert "SECRET" not in line and "draft" not in line
    assert "SECRET" not in failing.log


def test_name_that_does_not_resolve_gets_42_and_logs_the_resolver_error(failing):
    assert get(failing, "/nowhere/x").header == b"42 CGI error"
    fault_line(failing, "/nowhere/x", "tcp:no-such-host.invalid:9000", "cannot connect",
               "no-such-host.invalid")


def test_connect_longer_than_the_connect_timeout_gets_42(failing):
    started = time.monotonic()
    assert get(failing, "/blackhole/x").header == b"42 CGI error"
    assert time.monotonic() - started > 0.9
    fault_line(failing, "/blackhole/x", "tcp:127.0.0.1:", "connect timeout: not connected after 1 s")


# -- a unix socket whose backlog is full: wait for room, up to the connect timeout -----------


def test_requests_to_a_full_backlog_wait_for_the_connect_timeout_then_get_42(failing, busy_apps):
    never, _ = busy_apps
    never.fill()
    started = time.monotonic()
    with ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(lambda i: get(failing, f"/full/{i}"), range(5)))
    assert [reply.header for reply in replies] == [b"42 CGI error"] * 5
    # The server's connect timeout is 1 s here (5 s by default).
    assert time.monotonic() - started > 0.9
    for i in range(5):
        # Always the backlog's words: the relay's own timer raced them.
        fault_line(failing, f"/full/{i}", f"unix:{never.path}",
                   f"connect timeout: the backlog of {never.path} stayed full for 1 s")
    assert "ConnectionDone" not in failing.log
    assert "User timeout" not in failing.log


def test_a_full_backlog_behind_an_endpoint_string_is_waited_for_as_behind_a_socket(failing, busy_apps):
    # "fastcgi endpoint" with a unix: string got 42 at once, and a line
    # holding a Failure's repr with ConnectionDone in it.
    never, _ = busy_apps
    never.fill()
    started = time.monotonic()
    assert get(failing, "/full-endpoint/x").header == b"42 CGI error"
    assert time.monotonic() - started > 0.9
    fault_line(failing, "/full-endpoint/x", f"unix:path={never.path}:timeout=1",
               f"connect timeout: the backlog of {never.path} stayed full for 1 s")
    # The server's connect timeout is 1 s here: it bounds the string's own.
    assert get(failing, "/full-endpoint-default/x").header == b"42 CGI error"
    fault_line(failing, "/full-endpoint-default/x", f"unix:path={never.path}",
               f"connect timeout: the backlog of {never.path} stayed full for 1 s")


def test_requests_to_a_full_backlog_are_served_once_the_application_accepts(failing, busy_apps):
    _, late = busy_apps
    late.fill()
    with ThreadPoolExecutor(6) as pool:
        waiting = [pool.submit(get, failing, f"/late/{i}") for i in range(6)]
        time.sleep(0.5)  # the requests are at the full backlog by now
        assert not any(reply.done() for reply in waiting)
        late.start()
        replies = [reply.result() for reply in waiting]
    for reply in replies:
        assert (reply.header, reply.body, reply.clean_close) == (
            b"20 text/gemini", b"served after the wait\n", True)


# -- an application that dies as it starts --------------------------------------------------


def spawning_server(certificate, capsule, command: str):
    processes = Processes()
    locations = [{"pattern": "/app/*", "backend": {"spawn": command}}]
    return processes, processes.server(server_spec(certificate, locations, root=str(capsule)))


def test_an_application_that_dies_at_start_gets_42_at_once_not_after_the_reply_timeout(
    certificate, capsule
):
    processes, server = spawning_server(certificate, capsule, "sh -c 'exit 3'")
    try:
        logged(server, "spawn:sh -c 'exit 3'", "exited after", "exit code 3")
        # The reply timeout would have said "reply timeout"; the start's
        # failure is what answered.
        assert get(server, "/app/x").header == b"42 CGI error"
        fault_line(server, "/app/x", "spawn:sh -c 'exit 3'", "cannot connect: the application "
                   "failed to start: pid", "exited 0.0 s after starting", "exit code 3", "next start in")
        assert get(server, "/").status == 20
    finally:
        processes.stop_all()


def test_an_application_that_dies_on_a_requests_input_after_its_header_did_not_fail_to_start(
    certificate, capsule
):
    # Each such run was taken for one that failed to start: the requests
    # after it got 42 at once, for everyone, and the line blamed the start.
    processes, server = spawning_server(certificate, capsule, MISBEHAVE)
    try:
        for _ in range(3):
            reply = get(server, "/app/die-after-header")
            assert (reply.header, reply.body) == (b"20 text/gemini", b"partial\n")
        # Before a byte of the reply, once it has read the request, too.
        for _ in range(3):
            assert get(server, "/app/die-on-input").header == b"42 CGI error"
        assert get(server, "/app/stderr").body == b"fine anyway\n"
        assert "failed to start" not in server.log
    finally:
        processes.stop_all()


def test_an_application_that_takes_a_connection_and_exits_unread_failed_to_start(certificate, capsule):
    # Taken for one that read the request (the kernel's send queue is
    # empty once the peer is gone): restarted every 0.1 s for ever, each
    # request a reset, never said to fail.
    command = f"{sys.executable} -c 'import os, socket; socket.socket(fileno=0).accept(); os._exit(1)'"
    processes, server = spawning_server(certificate, capsule, command)
    try:
        for _ in range(6):
            assert get(server, "/app/x").header == b"42 CGI error"
        logged(server, "cannot connect: the application failed to start")
    finally:
        processes.stop_all()


def test_an_application_that_crashes_at_start_gets_42_at_once_too(certificate, capsule):
    # A crash is a signal, which was taken for a kill from outside: each
    # request waited out the reply timeout, its line saying "no header".
    processes, server = spawning_server(certificate, capsule, "sh -c 'kill -SEGV $$'")
    try:
        logged(server, "spawn:sh -c 'kill -SEGV $$'", "exited after", "signal 11")
        assert get(server, "/app/x").header == b"42 CGI error"
        fault_line(server, "/app/x", "spawn:sh -c 'kill -SEGV $$'", "cannot connect: the application "
                   "failed to start: pid", "exited 0.0 s after starting", "signal 11")
    finally:
        processes.stop_all()


def test_a_cgi_script_spawned_as_a_fastcgi_program_gets_42_and_says_so(certificate, capsule, tmp_path):
    # It writes a CGI reply to its stdout and exits 0, never taking a
    # connection: it was started every second for ever, and each request
    # waited out the reply timeout, logged as "no header".
    script = tmp_path / "hello.cgi"
    script.write_text("printf 'Content-Type: text/gemini\\r\\n\\r\\nhello\\n'\n")
    command = f"sh {script}"
    processes, server = spawning_server(certificate, capsule, command)
    try:
        logged(server, f"spawn:{command}: pid ", "exited after", "exit code 0")
        assert get(server, "/app/x").header == b"42 CGI error"
        fault_line(server, "/app/x", f"spawn:{command}", "application failed to start: pid",
                   "exit code 0.) without taking 1 request waiting on its socket: a FastCGI program "
                   "takes connections on its standard input (file descriptor 0) and runs on; a CGI "
                   "script runs under fcgiwrap")
        assert "no header" not in server.log
        assert get(server, "/").status == 20
    finally:
        processes.stop_all()


def _running_with(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                if marker.encode() in cmdline.read().replace(b"\0", b" ") and _alive(int(name)):
                    found.append(int(name))
        except (OSError, ValueError):
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("wait, daemon", [
    ("", "exec sleep 37"),
    # A start that takes a while before it daemonises is caught as well.
    ("sleep 1.2; ", "exec sleep 37"),
    # A daemon that ignores SIGTERM gets SIGKILL, at the stop if not before.
    ("", "trap \\\"\\\" TERM; sleep 37"),
    # One that lets go of the socket at SIGTERM and lingers gets SIGKILL too.
    ("", "trap \\\"exec 0<&-\\\" TERM; while :; do sleep 0.1; done"),
    # One that forks again, into a session of its own, seconds later, onto
    # the socket of a start since failed and closed.
    ("", "trap \\\"\\\" TERM; sleep 2; setsid -f sleep 3737; exit 0"),
], ids=["at-once", "after-a-while", "ignoring-sigterm", "lingering", "forking-late"])
def test_a_command_that_daemonises_is_a_failed_start_and_leaves_no_daemons(
    certificate, capsule, wait, daemon
):
    # Its status 0 at once passed for a healthy run: started again every
    # second, each start left one more daemon on the socket, for good. The
    # daemon tells the command it is in a session of its own before the
    # command exits, as daemons do (and must, or it goes with the command's
    # process group).
    command = (f"sh -c '{wait}exec 3<&0; setsid -f sh -c \"echo ready; {daemon}\" 0<&3 3<&- "
               "2>/dev/null | { read ready; }; exit 0'")
    processes, server = spawning_server(certificate, capsule, command)
    try:
        logged(server, f"spawn:{command}: pid ", "kept the program's socket after its run ended: "
               "the command daemonises, or left workers behind; sent SIGTERM")
        assert get(server, "/app/x").header == b"42 CGI error"
        fault_line(server, "/app/x", f"spawn:{command}", "cannot connect: the application failed to start",
                   "left processes holding its socket: the command daemonises")
        # Long enough for the late fork, and for failed starts to have
        # closed the socket it sits on.
        time.sleep(3.5 if "3737" in daemon else 1)
    finally:
        processes.stop_all()
    daemons = {int(pid) for found in re.findall(r"pid ([\d, ]+) kept the program's socket", server.log)
               for pid in found.split(", ")}
    assert daemons
    deadline = time.monotonic() + 3
    while [pid for pid in daemons if _alive(pid)]:
        assert time.monotonic() < deadline, f"daemons outlived the server: {daemons}\n{server.log}"
        time.sleep(0.05)
    assert server.log.count("started pid") <= 4, server.log
    deadline = time.monotonic() + 3
    while _running_with("sleep 3737"):
        assert time.monotonic() < deadline, f"a late daemon outlived the server\n{server.log}"
        time.sleep(0.05)
    if "trap" in daemon:
        assert "SIGKILL" in server.log
    # Looked for again before each start, those already being stopped are
    # not taken for new ones: one line each.
    assert all(server.log.count(f"pid {pid} ") <= 2 for pid in daemons), server.log


def test_a_program_killed_from_outside_whose_workers_linger_is_no_daemon(certificate, capsule):
    # Its workers, in sessions of their own, are stopped with it; the look
    # before the next start took those still ending for a new daemon, and
    # requests got 42 "the command daemonises" for seconds.
    worker = f"setsid -f {sys.executable} -c \"import signal, time; from gemfcgi.demo.app import main; " \
        "signal.signal(signal.SIGTERM, lambda *_: time.sleep(1) or exit()); main()\""
    command = f"sh -c '{worker}; {worker}; exec sleep 300'"
    processes, server = spawning_server(certificate, capsule, command)
    try:
        assert get(server, "/app/hello").status == 20
        since = len(server.log)
        os.kill(int(re.search(r"started pid (\d+)", server.log).group(1)), signal.SIGKILL)
        server.wait_for_log(r"kept the program's socket after its run ended: .*; sent SIGTERM", since=since)
        server.wait_for_log(r"started pid \d+", since=since)
        assert get(server, "/app/hello").status == 20
        # The workers were stopped once, and no start was refused for them.
        assert server.log.count("kept the program's socket") == 1, server.log
        assert "failed to start" not in server.log and "restarting in 0.2 s" not in server.log
    finally:
        processes.stop_all()


def test_a_request_queued_for_a_run_that_dies_at_start_gets_42_when_it_dies(certificate, capsule):
    # The program runs for 0.8 s, less than a healthy run (1 s): the request,
    # sent as the server starts listening, waits in the socket's backlog
    # until the program dies, and is answered then.
    processes, server = spawning_server(certificate, capsule, "sh -c 'sleep 0.8; exit 4'")
    try:
        assert get(server, "/app/x").header == b"42 CGI error"
        fault_line(server, "/app/x", "spawn:sh -c 'sleep 0.8; exit 4'",
                   "): application failed to start: pid", "exit code 4")
    finally:
        processes.stop_all()


# -- before the header ------------------------------------------------------------------


def test_no_header_within_the_reply_timeout_gets_42(failing):
    started = time.monotonic()
    assert get(failing, "/bad/silent").header == b"42 CGI error"
    assert time.monotonic() - started > 1.9
    fault_line(failing, "/bad/silent", "spawn:", "reply timeout: no header after 2 s")


@pytest.mark.parametrize(
    "mode, detail",
    [
        ("eof-before-header", "END or EOF before a complete header"),
        ("end-before-header", "END or EOF before a complete header"),
        ("long-header", "header over 1029 bytes"),
        ("bad-code", "status 99 is not defined"),
        ("wrong-id", "request id mismatch: expected 1, got 2"),
        ("unknown-record", "unexpected record type DATA (length 5)"),
        ("wrong-version", "unsupported FastCGI version 2 in record type 6"),
        ("cant-mpx-conn", "protocolStatus CANT_MPX_CONN"),
        ("unknown-role", "protocolStatus UNKNOWN_ROLE"),
    ],
)
def test_broken_reply_before_the_header_gets_42_and_says_what_was_wrong(failing, mode, detail):
    reply = get(failing, f"/bad/{mode}")
    assert (reply.header, reply.body) == (b"42 CGI error", b"")
    fault_line(failing, f"/bad/{mode}", "spawn:", detail)


def test_overloaded_backend_gets_41(failing):
    assert get(failing, "/bad/overloaded").header == b"41 server unavailable"
    fault_line(failing, "/bad/overloaded", "spawn:", "overloaded", "protocolStatus OVERLOADED")


# -- after the header ---------------------------------------------------------------------


def test_record_with_another_id_after_the_header_cuts_the_body_without_close_notify(failing):
    reply = get(failing, "/bad/wrong-id-after-header")
    assert (reply.header, reply.body) == (b"20 text/gemini", b"start\n")
    # The client can tell the body is not whole.
    assert not reply.clean_close
    fault_line(failing, "/bad/wrong-id-after-header", "spawn:",
               "request id mismatch: expected 1, got 3", "body cut short")


def test_eof_after_the_header_cuts_the_body_without_close_notify_or_hanging(failing):
    reply = get(failing, "/bad/eof-after-header")
    assert (reply.header, reply.body) == (b"20 text/gemini", b"partial body\n")
    assert not reply.clean_close
    fault_line(failing, "/bad/eof-after-header", "spawn:", "without END_REQUEST", "body cut short")


def test_a_body_cut_short_still_brings_the_client_what_was_relayed_before(failing):
    # The application's end reaches the server long before this client
    # reads: what the server relayed until then is in its buffers and the
    # client's kernel, and must all arrive, then an end without close_notify.
    raw = socket.create_connection(("127.0.0.1", failing.port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{failing.port}/bad/eof-after-3-mib\r\n".encode())
    fault_line(failing, "/bad/eof-after-3-mib", "spawn:", "without END_REQUEST", "body cut short")
    data, clean = read_to_end(tls)
    tls.close()
    header, _, body = data.partition(b"\r\n")
    assert (header, len(body), clean) == (b"20 text/gemini", 3 << 20, False)


def test_a_cut_reply_reaches_a_client_whose_close_notify_comes_after_the_cut(failing):
    # The socket closed as the cut reply left answered the client's later
    # close_notify with a reset, and the client's kernel dropped the 3 MB
    # it held unread: ECONNRESET after 120 KB.
    from OpenSSL import SSL

    raw = socket.create_connection(("127.0.0.1", failing.port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    with raw:
        tls = pyopenssl_client(raw)
        tls.sendall(f"gemini://localhost:{failing.port}/bad/eof-after-3-mib\r\n".encode())
        fault_line(failing, "/bad/eof-after-3-mib", "spawn:", "without END_REQUEST", "body cut short")
        time.sleep(0.3)
        tls.shutdown()  # the client is done sending, after the cut
        data = b""
        with pytest.raises(SSL.SysCallError) as ended:
            while True:
                data += tls.recv(65536)
    assert ended.value.args == (-1, "Unexpected EOF")  # a FIN without close_notify: cut
    header, _, body = data.partition(b"\r\n")
    assert (header, len(body)) == (b"20 text/gemini", 3 << 20)


def test_failing_app_status_after_a_whole_body_ends_it_with_close_notify(failing):
    reply = get(failing, "/bad/app-status-after-header")
    assert (reply.header, reply.body) == (b"20 text/gemini", b"some body\n")
    assert reply.clean_close
    line = fault_line(failing, "/bad/app-status-after-header", "spawn:",
                      "request failed: appStatus 7").group(0)
    assert "cut" not in failing.log[failing.log.index(line):].splitlines()[0]


@pytest.mark.parametrize("mode", ["empty-meta", "no-meta"])
def test_an_empty_success_meta_reaches_clients_as_the_mime_type_it_means(failing, mode, tmp_path):
    url = f"gemini://localhost:{failing.port}/bad/{mode}"
    reply = get(failing, f"/bad/{mode}")
    assert (reply.header, reply.body, reply.clean_close) == (
        b"20 text/gemini; charset=utf-8", b"# no meta\n", True)
    # Clients that reject a success header without META read it.
    gemcall = subprocess.run([shutil.which("gemcall") or "gemcall", "-s", "-u", url],
                             capture_output=True, timeout=30)
    assert gemcall.stdout == b"20 text/gemini; charset=utf-8\n# no meta\n", gemcall.stderr
    agunua = subprocess.run([shutil.which("agunua") or "agunua", "--insecure", url],
                            capture_output=True, timeout=30,
                            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert agunua.stdout.strip() == b"# no meta", agunua.stderr


def test_a_success_code_the_specification_does_not_name_is_relayed(failing):
    reply = get(failing, "/bad/code-21")
    assert (reply.header, reply.body, reply.clean_close) == (b"21 text/gemini", b"# 21\n", True)


def test_stderr_is_logged_with_backend_and_request_but_not_sent(failing):
    reply = get(failing, "/bad/stderr")
    assert (reply.header, reply.body) == (b"20 text/gemini", b"fine anyway\n")
    logged(failing, "gemini://localhost/bad/stderr: FastCGI backend spawn:",
           "stderr: something went wrong in the app")


def abandon_mid_reply(server, path: str) -> None:
    """A client that reads the start of an endless reply, then drops the connection."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{server.port}{path}\r\n".encode())
    assert tls.recv(100).startswith(b"20 ")
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    tls.close()


def test_client_going_away_mid_reply_aborts_the_request_on_the_backend(failing):
    abandon_mid_reply(failing, "/bad/forever")
    logged(failing, "spawn:", "misbehave.py stderr: ABORT_REQUEST received for request 1")


def test_a_client_gone_before_its_reply_came_is_let_go_when_its_reset_answers_the_reply(failing):
    # It closed after its request, as a client given up by its user does:
    # a FIN, which may be a half-close, so the reply is still sent; its
    # kernel answers it with a reset. The connection used to be held, as
    # one whose client reads nothing, until the idle timeout (60 s here).
    since = len(failing.log)
    raw = socket.create_connection(("127.0.0.1", failing.port), timeout=5)
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{failing.port}/bad/late\r\n".encode())
    # Its session tickets read, so that the close is a FIN: one with bytes
    # unread is a reset, which the server hears at once.
    tls.settimeout(0.2)
    with pytest.raises(socket.timeout):
        tls.recv(100)
    tls.close()
    line = failing.wait_for_log(
        r"GET gemini://localhost/bad/late 20 text/gemini (\d+) ", timeout=15, since=since)
    assert line.group(1) == "0"  # none of it reached the client
    assert "read nothing" not in failing.log[since:]


# -- the server survives all of it ---------------------------------------------------------


def test_failures_leak_no_descriptor_and_the_server_keeps_serving(failing):
    pid = failing.process.pid
    assert get(failing, "/app/hello").status == 20
    baseline = open_fds(pid)
    for _ in range(3):
        for path in ("/refused/x", "/missing/x", "/bad/eof-before-header", "/bad/wrong-id",
                     "/bad/eof-after-header", "/bad/overloaded", "/bad/long-header"):
            assert get(failing, path).status in (20, 41, 42)
        abandon_mid_reply(failing, "/bad/forever")
    wait_for(lambda: open_fds(pid) <= baseline, timeout=5,
             what=f"descriptors back to {baseline} (now {open_fds(pid)})")
    assert get(failing, "/app/hello").status == 20
    assert get(failing, "/").status == 20


def test_app_that_exits_at_start_backs_off_while_static_pages_are_served(certificate, capsule):
    command = "sh -c 'echo crashing; exit 3'"
    processes = Processes()
    try:
        server = processes.server(server_spec(
            certificate, [{"pattern": "/crash/*", "backend": {"spawn": command}}], root=str(capsule)
        ))
        starts = f"spawn:{command}: started pid"
        first = server.wait_for_log(re.escape(starts)).start()
        began = time.monotonic()
        while time.monotonic() - began < 3:
            assert get(server, "/").status == 20
            time.sleep(0.2)
        count = server.log[first:].count(starts)
        assert 3 <= count <= 8, count
        assert f"spawn:{command} stdout: crashing" in server.log
        assert "restarting in 0.8 s" in server.log
    finally:
        processes.stop_all()


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (spawned apps and what they fork)."""
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            if child not in found:
                found.add(child)
                frontier.add(child)
    return found


def test_app_killed_mid_reply_ends_the_reply_and_leaks_no_process(failing):
    pid = failing.process.pid
    assert get(failing, "/bad/eof-before-header").status == 42
    before = descendants(pid)
    fds = open_fds(pid)
    raw = socket.create_connection(("127.0.0.1", failing.port), timeout=10)
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{failing.port}/bad/forever\r\n".encode())
    assert tls.recv(64).startswith(b"20 ")
    (app,) = {int(p) for p in re.findall(r"misbehave\.py: started pid (\d+)", failing.log)} & before
    os.kill(app, signal.SIGKILL)
    try:
        while tls.recv(65536):
            pass
    except TimeoutError:
        pytest.fail("the reply did not end after its application was killed")
    except (OSError, ssl.SSLError):
        pass  # cut: the reply was not complete, and the client is told so
    tls.close()
    logged(failing, "misbehave.py: pid", "exited after")
    assert get(failing, "/bad/eof-before-header").status == 42
    wait_for(lambda: len(descendants(pid)) == len(before), timeout=10,
             what=f"as many processes as before ({len(before)})")
    wait_for(lambda: open_fds(pid) <= fds, timeout=5, what=f"descriptors back to {fds}")
    assert get(failing, "/").status == 20


def test_a_server_killed_outright_takes_its_spawned_app_with_it(certificate, capsule, tmp_path):
    # No graceful stop (SIGKILL, a crash, a program that ends at a signal):
    # the kernel's parent-death signal ends the app, which would otherwise
    # run on with nobody to send it a request. The socket directory it
    # leaves is removed by the next server to start a program there.
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    command = f"{sys.executable} -m gemfcgi.demo.app"
    spec = server_spec(
        certificate, [{"pattern": "/app/*", "backend": {"spawn": command}}], root=str(capsule)
    )
    env = {"TMPDIR": str(tmp_path)}
    processes = Processes()
    try:
        server = processes.server(spec, env=env)
        assert get(server, "/app/hello").status == 20
        apps = descendants(server.process.pid)
        assert apps
        server.process.kill()
        server.process.wait()
        wait_for(lambda: not any(running(pid) for pid in apps), timeout=10,
                 what=f"the spawned app ({sorted(apps)}) to end with its server")
        [left] = tmp_path.glob("gemfcgi-spawn-*")
        an_hour_ago = time.time() - 3600
        os.utime(left, (an_hour_ago, an_hour_ago))

        second = processes.server(spec, env=env)
        assert get(second, "/app/hello").status == 20
        assert not left.exists()
        assert len(list(tmp_path.glob("gemfcgi-spawn-*"))) == 1  # the second server's own
        logged(second, f"removed {left}: the socket directory of a spawned program")
    finally:
        processes.stop_all()


def test_a_failure_without_meta_reaches_a_real_client_with_the_codes_name(failing):
    from tests.integration.test_clients import installed, run

    executable = installed("gemcall", "pip install gemcall")
    result = run([executable, "-s", "-u", f"gemini://localhost:{failing.port}/bad/bare-51"])
    assert result.stdout.startswith(b"51 not found"), result.stderr


@pytest.mark.parametrize("kind", ["unix", "haproxy"])
def test_a_fastcgi_reply_cut_by_a_record_that_does_not_decrypt_ends_on_wrapped_listeners(
        kind, tmp_path, certificate):
    # On the listeners that keep Twisted's TLS layer, Twisted's transport
    # closes once its producer ends: a reply that never does (or one paused
    # once the TLS connection failed, as a first fix did) held the
    # connection, its slot and the application's worker, until the server
    # stopped.
    from tests.support import TWISTD, ServerProcess, memory_tls

    cert, key = certificate
    app_path = tmp_path / "app.sock"
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(app_path))
    listening.listen(8)

    def endless(request) -> None:
        request.write(b"20 application/octet-stream\r\n")
        while True:  # until the server closes the connection
            request.write(b"s" * 128 * 1024)

    def serve_until_closed() -> None:
        try:
            serve(listening, endless)
        except OSError:
            pass  # closed at the test's end, under a waiting accept()

    threading.Thread(target=serve_until_closed, daemon=True).start()
    config = tmp_path / "gmid.conf"
    config.write_text(f'server "localhost" {{\n\tlisten on 127.0.0.1 port 0\n\tcert "{cert}"\n\tkey "{key}"\n'
                      f'\troot "{tmp_path}"\n\tlocation "/slow/*" {{ fastcgi socket "{app_path}" }}\n}}\n')
    listen = f"unix:{tmp_path / 'gemini.sock'}" if kind == "unix" else "haproxy:tcp:0:interface=127.0.0.1"
    server = ServerProcess([*TWISTD, "-n", "--pidfile=", "gemfcgi", "-c", str(config), "--listen", listen])
    try:
        if kind == "unix":
            server.wait_for_log("listening on")
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.connect(str(tmp_path / "gemini.sock"))
            host = "localhost"
        else:
            port = server.wait_listening()[0]
            raw = socket.create_connection(("127.0.0.1", port))
            raw.sendall(f"PROXY TCP4 192.0.2.7 127.0.0.1 40000 {port}\r\n".encode())
            host = f"localhost:{port}"
        raw.settimeout(30)
        with raw:
            tls, incoming, outgoing = memory_tls(raw)
            tls.write(f"gemini://{host}/slow/x\r\n".encode())
            raw.sendall(outgoing.read())
            reply = b""
            while not reply.startswith(b"20 "):  # the reply has begun
                try:
                    reply += tls.read(65536)
                except ssl.SSLWantReadError:
                    incoming.write(raw.recv(65536))
            time.sleep(1)  # the server's buffer fills, and the relay is paused
            raw.sendall(b"\x17\x03\x03\x00\x20" + os.urandom(32))  # no key makes this
            try:
                while raw.recv(65536):  # until the server closes
                    pass
            except ConnectionResetError:
                pass  # closed with the client's bytes unread: a reset, as fits a failed connection
        server.wait_for_log(r"/slow/x 20 application/octet-stream \d+ ", timeout=30)
    finally:
        server.stop()
        listening.close()


def test_a_spawned_programs_socket_removed_from_outside_is_made_again(certificate, capsule, tmp_path):
    # rm -rf of the temporary directory took the socket's path: the program
    # went on accepting on a socket no connect could reach, and every
    # request got 42 until the server was restarted (its restarts and a
    # reload kept the same unreachable socket).
    import shutil

    command = f"{sys.executable} -m gemfcgi.demo.app"
    spec = server_spec(certificate, [{"pattern": "/app/*", "backend": {"spawn": command}}], root=str(capsule))
    processes = Processes()
    try:
        server = processes.server(spec, env={"TMPDIR": str(tmp_path)})
        assert get(server, "/app/hello").status == 20
        [directory] = tmp_path.glob("gemfcgi-spawn-*")
        shutil.rmtree(directory)
        # The request that finds it gone waits for the program's new run.
        assert get(server, "/app/hello").status == 20
        assert get(server, "/app/hello").status == 20
        logged(server, f"{directory / 'fastcgi.sock'} was removed; it is made again, and the program "
               "restarted on it")
        assert (directory / "fastcgi.sock").exists()
    finally:
        processes.stop_all()


def test_a_socket_planted_where_a_removed_spawn_directory_was_never_gets_a_request(
        certificate, capsule, tmp_path):
    # Once the directory was removed, another user could put a directory
    # (or a link) at its path with a socket of their own in it: connects by
    # path went to it, and they answered every request.
    import shutil

    command = f"{sys.executable} -m gemfcgi.demo.app"
    spec = server_spec(certificate, [{"pattern": "/app/*", "backend": {"spawn": command}}], root=str(capsule))
    processes = Processes()
    planted = None
    try:
        server = processes.server(spec, env={"TMPDIR": str(tmp_path)})
        assert get(server, "/app/hello").status == 20
        [directory] = tmp_path.glob("gemfcgi-spawn-*")
        shutil.rmtree(directory)
        directory.mkdir()
        planted = socket.socket(socket.AF_UNIX)
        planted.bind(str(directory / "fastcgi.sock"))
        planted.listen(16)  # never accepts: a request sent there waits for the backend timeout
        reply = get(server, "/app/hello")
        assert reply.status == 20 and b"Hello" in reply.body
        logged(server, f"something else is at the path of its socket directory {directory}; a new directory is made")
        assert get(server, "/app/hello").status == 20
        assert directory.exists()  # left to whoever put it there
    finally:
        if planted is not None:
            planted.close()
        processes.stop_all()
