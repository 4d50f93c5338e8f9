"""Worker processes: shared sockets, replacement, reload, stop, privileges."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager

import pytest

from tests.support import (
    PROJECT_ROOT,
    TWISTD,
    ServerProcess,
    client_context,
    fetch,
    file_with,
    read_to_end,
    refused_soon,
    served_certificate,
    start_server,
)

FCGIWRAP = shutil.which("fcgiwrap", path="/usr/sbin:/usr/bin:/sbin:/bin") or "fcgiwrap"
WORKER = re.compile(r"started worker (\d+) \(pid (\d+)\)")


def write_config(path, root, cert, key, extra=""):
    path.write_text(
        f"{extra}\nserver \"localhost\" {{\n  listen on 127.0.0.1 port 0\n"
        f'  cert "{cert}"\n  key "{key}"\n  root "{root}"\n}}\n'
    )


@pytest.fixture
def capsule(tmp_path):
    root = tmp_path / "capsule"
    root.mkdir()
    (root / "index.gmi").write_text("# prefork\n")
    (root / "big.bin").write_bytes(b"p" * (4 * 1024 * 1024))
    return root


def workers(server) -> dict[int, int]:
    found: dict[int, int] = {}
    for number, pid in WORKER.findall(server.log):
        found[int(number)] = int(pid)
    return found


def wait_workers_listening(server, count, timeout=15):
    deadline = time.monotonic() + timeout
    while len(re.findall(r"\[worker \d+\] .*listening on", server.log)) < count:
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)


def slow_download(port):
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"gemini://localhost:{port}/big.bin\r\n".encode())
    return tls, tls.recv(4096)


def finish_download(tls, data):
    data, clean = read_to_end(tls, data)
    tls.close()
    assert clean, "the download ended without close_notify"
    return data.partition(b"\r\n")[2]


@contextmanager
def two_workers(config, capsule, certificate):
    """A ``prefork 2`` server on ``capsule`` whose two workers listen, stopped at the end."""
    write_config(config, capsule, *certificate, extra="prefork 2")
    server = start_server("-c", str(config))
    try:
        wait_workers_listening(server, 2)
        yield server
    finally:
        server.stop()


def test_two_workers_serve_one_port_and_a_killed_one_is_replaced(capsule, certificate, tmp_path):
    config = tmp_path / "gmid.conf"
    with two_workers(config, capsule, certificate) as server:
        before = workers(server)
        assert sorted(before) == [0, 1]
        assert len({fetch(server.port, f"gemini://localhost:{server.port}/").status for _ in range(6)}) == 1
        os.kill(before[0], signal.SIGKILL)
        server.wait_for_log(r"worker 0 \(pid \d+\) ended")
        for _ in range(10):
            assert fetch(server.port, f"gemini://localhost:{server.port}/").status == 20
        deadline = time.monotonic() + 10
        while workers(server).get(0) == before[0]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert workers(server)[0] != before[0]
        wait_workers_listening(server, 3)


def test_a_restarted_worker_serves_its_generations_identity_until_a_reload(capsule, tmp_path):
    # A worker read the files again as it restarted: one restarted after a
    # renewal, unreloaded, served the new certificate beside its sibling's
    # old one; one restarted between a renewal's two files died on a key
    # that did not match, and again at each restart.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from gemfcgi.certificates import make_self_signed, write_key_pair

    def der(cert_pem: bytes) -> bytes:
        return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)

    old, new = make_self_signed(["localhost"]), make_self_signed(["localhost"])
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_key_pair(cert, key, *old)
    with two_workers(tmp_path / "gmid.conf", capsule, (str(cert), str(key))) as server:
        cert.write_bytes(new[0])  # a renewal's first file; no reload yet
        os.kill(workers(server)[0], signal.SIGKILL)
        server.wait_for_log(r"worker 0 \(pid \d+\) ended")
        wait_workers_listening(server, 3)
        assert {served_certificate(server.port) for _ in range(8)} == {der(old[0])}
        assert "key does not match" not in server.log
        key.write_bytes(new[1])  # the renewal is whole: the reload takes it
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded")
        wait_workers_listening(server, 5)
        deadline = time.monotonic() + 10
        while served_certificate(server.port) != der(new[0]):
            assert time.monotonic() < deadline, server.log
            time.sleep(0.05)


def test_a_restarted_worker_reads_the_ca_files_of_its_generation_not_the_disk(capsule, certificate, tmp_path):
    # A require client ca file broken (or a relay's pair half renewed)
    # between reloads made each restarted worker die as it started, again
    # and again: killed together, no worker was left, and clients hung.
    from cryptography.hazmat.primitives import serialization

    from tests.certs import issue

    ca = tmp_path / "ca.pem"
    ca.write_bytes(issue("Visitors CA", ca=True)[0].public_bytes(serialization.Encoding.PEM))
    config = tmp_path / "gmid.conf"
    write_config(config, capsule, *certificate, extra="prefork 2")
    config.write_text(config.read_text().replace(
        "}\n", f'  location "/private/*" {{ require client ca "{ca}" }}\n}}\n'))
    server = start_server("-c", str(config))
    try:
        wait_workers_listening(server, 2)
        ca.write_text("garbage\n")
        for pid in workers(server).values():
            os.kill(pid, signal.SIGKILL)
        wait_workers_listening(server, 4)
        assert fetch(server.port, f"gemini://localhost:{server.port}/").status == 20
        assert fetch(server.port, f"gemini://localhost:{server.port}/private/x").status == 60
        assert "cannot load CA certificates" not in server.log
    finally:
        server.stop()


def test_reload_starts_a_new_generation_and_the_old_one_finishes_its_requests(
    capsule, certificate, tmp_path
):
    config = tmp_path / "gmid.conf"
    with two_workers(config, capsule, certificate) as server:
        tls, data = slow_download(server.port)
        (capsule / "new").mkdir()
        (capsule / "new" / "index.gmi").write_text("# new generation\n")
        write_config(config, capsule / "new", *certificate, extra="prefork 2")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded")
        wait_workers_listening(server, 4)
        deadline = time.monotonic() + 10
        while fetch(server.port, f"gemini://localhost:{server.port}/").body != b"# new generation\n":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert len(finish_download(tls, data)) == 4 * 1024 * 1024
        # The new generation's workers are numbered after the old one's:
        # while both log, "[worker 1]" names one process.
        assert sorted(workers(server)) == [0, 1, 2, 3]
        server.wait_for_log(r"\[worker [01]\] .*GET gemini://localhost/big\.bin 20 ")
        assert re.search(r"\[worker [23]\] .*GET gemini://localhost/ 20 ", server.log)


def test_sigterm_drains_the_workers(capsule, certificate, tmp_path):
    config = tmp_path / "gmid.conf"
    write_config(config, capsule, *certificate, extra="prefork 2")
    server = start_server("-c", str(config))
    wait_workers_listening(server, 2)
    tls, data = slow_download(server.port)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert len(finish_download(tls, data)) == 4 * 1024 * 1024
    assert server.process.wait(20) in (0, -signal.SIGTERM)
    for pid in workers(server).values():
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()


def test_workers_run_as_the_configured_user_inside_the_chroot(certificate, world_readable_dir):
    if os.getuid() != 0:
        pytest.skip("dropping privileges needs root (CI runs as root)")
    chroot = world_readable_dir / "jail"
    (chroot / "capsule" / "cgi").mkdir(parents=True)
    (chroot / "capsule" / "index.gmi").write_text("# jailed\n")
    script = chroot / "capsule" / "cgi" / "whoami.sh"
    script.write_text('#!/bin/sh\nprintf "20 text/plain\\r\\n%s %s\\n" "$(id -un)" "$SCRIPT_FILENAME"\n')
    for path in (chroot, chroot / "capsule", chroot / "capsule" / "cgi"):
        path.chmod(0o755)
    (chroot / "capsule" / "index.gmi").chmod(0o644)
    script.chmod(0o755)
    (chroot / "logs").mkdir(mode=0o755)
    config = world_readable_dir / "jail.conf"
    # (No "}\\n" after the log block: the location below goes in the server's.)
    write_config(config, "/capsule", *certificate,
                 extra=f'user "nobody"\nchroot "{chroot}"\nlog {{ access "/logs/access.log" }} ')
    config.write_text(config.read_text().replace(
        "}\n", f'  location "/cgi/*" {{ fastcgi spawn "{FCGIWRAP}" }}\n}}\n'
    ))
    server = start_server("-c", str(config))
    try:
        wait_workers_listening(server, 1)
        reply = fetch(server.port, f"gemini://localhost:{server.port}/")
        assert reply.body == b"# jailed\n"
        cgi = fetch(server.port, f"gemini://localhost:{server.port}/cgi/whoami.sh")
        # fcgiwrap turns LF into CRLF until the first empty line.
        assert cgi.body.rstrip() == f"nobody {chroot}/capsule/cgi/whoami.sh".encode()
        import pwd

        nobody = pwd.getpwnam("nobody").pw_uid
        for pid in workers(server).values():
            status = open(f"/proc/{pid}/status").read()
            uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M).groups()
            assert {int(u) for u in uids} == {nobody}
            assert os.readlink(f"/proc/{pid}/root") == str(chroot)
        # The access file, made inside the chroot by the worker as root,
        # is the user's: a SIGUSR1 without a rotation reopens it.
        access = chroot / "logs" / "access.log"
        assert access.stat().st_uid == nobody
        since = len(server.log)
        server.process.send_signal(signal.SIGUSR1)
        server.wait_for_log("access log reopened: /logs/access.log", since=since)
        assert "cannot reopen" not in server.log
        fetch(server.port, f"gemini://localhost:{server.port}/")
        deadline = time.monotonic() + 10
        while access.read_text().count("GET gemini://localhost/ 20") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.stop()


def test_chroot_without_user_is_an_error(certificate, tmp_path, capsule):
    config = tmp_path / "gmid.conf"
    write_config(config, capsule, *certificate, extra=f'chroot "{tmp_path}"')
    result = subprocess.run(
        [*TWISTD, "gemfcgi", "-c", str(config), "--check"], capture_output=True, timeout=60,
        env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert f"{config}:1: can't chroot without a user".encode() in result.stderr


def test_a_spawned_app_is_started_once_by_the_parent_for_all_workers(capsule, certificate, tmp_path):
    import sys

    config = tmp_path / "gmid.conf"
    write_config(
        config, capsule, *certificate,
        extra="prefork 2",
    )
    text = config.read_text().replace(
        "}\n", f'  location "/app/*" {{ fastcgi spawn "{sys.executable} -m gemfcgi.demo.app" }}\n}}\n'
    )
    config.write_text(text)
    server = start_server("-c", str(config))
    try:
        wait_workers_listening(server, 2)
        for _ in range(8):
            reply = fetch(server.port, f"gemini://localhost:{server.port}/app/hello")
            assert reply.status == 20 and b"Hello, visitor" in reply.body
        spawned = re.findall(r"spawn:.*: started pid (\d+)", server.log)
        assert len(spawned) == 1, server.log
        assert "[worker" not in "".join(
            line for line in server.log.splitlines() if "started pid" in line
        )
    finally:
        server.stop()
    assert not os.path.exists(f"/proc/{spawned[0]}") or "zombie" in open(f"/proc/{spawned[0]}/status").read().lower()


@pytest.mark.parametrize(
    "command, waits",
    [("sh -c 'exit 3'", False), ("sh -c 'sleep 0.8; exit 3'", True)],
    ids=["refused-at-once", "queued-then-reset"],
)
def test_workers_answer_42_soon_for_a_spawned_program_that_exits_as_it_starts(
    capsule, certificate, tmp_path, command, waits
):
    # The workers know the program only by its socket's path: the parent
    # closes that socket while the program cannot start.
    config = tmp_path / "gmid.conf"
    write_config(config, capsule, *certificate, extra="prefork 2")
    config.write_text(config.read_text().replace(
        "}\n", f'  location "/app/*" {{ fastcgi spawn "{command}" }}\n}}\n'
    ))
    server = start_server("-c", str(config))
    try:
        wait_workers_listening(server, 2)
        if not waits:
            server.wait_for_log(r"exited after 0\.0 s")
        assert fetch(server.port, f"gemini://localhost:{server.port}/app/x").header == b"42 CGI error"
        assert fetch(server.port, f"gemini://localhost:{server.port}/").status == 20
        # The worker's line names the program, as the parent's do, not its socket.
        failed = server.wait_for_log(r"\[worker \d\] .*/app/x: FastCGI backend (\S+)")
        assert failed.group(1) == "spawn:" + command.split()[0]
    finally:
        server.stop()


def logging_to_a_file(config, capsule, certificate, log_file):
    """A ``prefork 2`` server writing its access lines to ``log_file``."""
    write_config(config, capsule, *certificate,
                 extra=f'prefork 2\nlog {{\n  access "{log_file}"\n  syslog off\n}}')
    return start_server("-c", str(config))


def test_sigusr1_makes_every_worker_reopen_the_access_log(capsule, certificate, tmp_path):
    log_file = tmp_path / "access.log"
    server = logging_to_a_file(tmp_path / "gmid.conf", capsule, certificate, log_file)
    try:
        wait_workers_listening(server, 2)
        assert fetch(server.port, f"gemini://localhost:{server.port}/?first").status == 20
        assert "?first" in file_with(log_file, "?first")
        log_file.rename(tmp_path / "access.log.1")
        server.process.send_signal(signal.SIGUSR1)
        server.wait_for_log(r"\[worker \d+\] .*access log reopened(?s:.*)"
                            r"\[worker \d+\] .*access log reopened")
        # Either worker may take a connection: each must write the new file.
        for n in range(6):
            assert fetch(server.port, f"gemini://localhost:{server.port}/?second{n}").status == 20
        assert all(f"?second{n}" in file_with(log_file, f"?second{n}") for n in range(6))
        assert "?second" not in (tmp_path / "access.log.1").read_text()
        assert "Traceback" not in server.log
    finally:
        server.stop()


def test_a_worker_that_may_not_reopen_the_access_log_says_so_and_keeps_the_old_file(
    certificate, world_readable_dir
):
    if os.getuid() != 0:
        pytest.skip("dropping privileges needs root (CI runs as root)")
    # The log directory is root's, as in gmid's setups: a worker that has
    # become nobody cannot create a new file there after a rotation.
    chroot = world_readable_dir / "logjail"
    (chroot / "capsule").mkdir(parents=True)
    (chroot / "log").mkdir()
    (chroot / "capsule" / "index.gmi").write_text("# jailed\n")
    for path in (chroot, chroot / "capsule", chroot / "log"):
        path.chmod(0o755)
    (chroot / "capsule" / "index.gmi").chmod(0o644)
    config = world_readable_dir / "logjail.conf"
    write_config(config, "/capsule", *certificate, extra=(
        f'user "nobody"\nchroot "{chroot}"\n'
        'log {\n  access "/log/access.log"\n  syslog off\n}'
    ))
    server = start_server("-c", str(config))
    try:
        wait_workers_listening(server, 1)
        assert fetch(server.port, f"gemini://localhost:{server.port}/?first").status == 20
        assert "?first" in file_with(chroot / "log" / "access.log", "?first")
        (chroot / "log" / "access.log").rename(chroot / "log" / "access.log.1")
        server.process.send_signal(signal.SIGUSR1)
        server.wait_for_log(
            r"\[worker 0\] .*cannot reopen the access log /log/access\.log: Permission denied; "
            r"still writing to the file opened before"
        )
        assert fetch(server.port, f"gemini://localhost:{server.port}/?second").status == 20
        assert "?second" in file_with(chroot / "log" / "access.log.1", "?second")
        assert "Traceback" not in server.log
        assert "access log reopened" not in server.log
    finally:
        server.stop()


def test_sigterm_refuses_new_connections_at_once_while_a_download_finishes(
    capsule, certificate, tmp_path
):
    config = tmp_path / "gmid.conf"
    with two_workers(config, capsule, certificate) as server:
        tls, data = slow_download(server.port)
        server.process.send_signal(signal.SIGTERM)
        # Listeners close first, as with one process: a connect is refused
        # while the download in flight still holds its worker.
        assert refused_soon(server.port, timeout=2)
        assert server.process.poll() is None
        assert len(finish_download(tls, data)) == 4 * 1024 * 1024
        assert server.process.wait(20) in (0, -signal.SIGTERM)


def test_the_parent_closing_its_copy_of_a_socket_leaves_the_workers_copies_whole(
    capsule, certificate, tmp_path
):
    # The parent shut the shared socket down as it closed it at a stop:
    # a worker still serving then failed in accept() (EINVAL, a traceback)
    # and what waited in the backlog was reset.
    config = tmp_path / "gmid.conf"
    with two_workers(config, capsule, certificate) as server:
        pids = list(workers(server).values())
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        waiting = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # in the backlog
        try:
            server.process.send_signal(signal.SIGTERM)
            server.wait_for_log(r"TCP Port \d+ Closed")
            time.sleep(0.5)  # the parent's close, done
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            waiting.close()
        assert server.process.wait(20) in (0, -signal.SIGTERM)
        assert "Unhandled Error" not in server.log and "Invalid argument" not in server.log


def test_a_worker_answers_a_second_stop_signal_during_its_drain_with_a_line(
    capsule, certificate, tmp_path
):
    # systemd's default KillMode signals the whole cgroup, so a worker can
    # get SIGTERM from it as well as from the parent.
    config = tmp_path / "gmid.conf"
    with two_workers(config, capsule, certificate) as server:
        tls, data = slow_download(server.port)
        server.process.send_signal(signal.SIGTERM)
        draining = server.wait_for_log(r"\[worker (\d)\] stopping: waiting up to 30 s for 1 connection to finish")
        os.kill(workers(server)[int(draining.group(1))], signal.SIGTERM)
        server.wait_for_log(rf"\[worker {draining.group(1)}\] received SIGTERM again: already stopping")
        assert len(finish_download(tls, data)) == 4 * 1024 * 1024
        assert server.process.wait(20) in (0, -signal.SIGTERM)
        assert "critical" not in server.log and "Traceback" not in server.log


def test_a_reload_that_drops_a_listener_refuses_its_new_connections_at_once(
    capsule, certificate, tmp_path
):
    config = tmp_path / "gmid.conf"
    with two_workers(config, capsule, certificate) as server:
        old_port = server.port
        tls, data = slow_download(old_port)
        since = len(server.log)
        config.write_text(config.read_text().replace("listen on 127.0.0.1", "listen on ::1"))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded", since=since)
        new_port = int(server.wait_for_log(r"listening on \[::1\]:(\d+) ", since=since).group(1))
        assert refused_soon(old_port, timeout=2)
        wait_workers_listening(server, 4)
        assert fetch(new_port, f"gemini://localhost:{new_port}/", address="::1").status == 20
        assert len(finish_download(tls, data)) == 4 * 1024 * 1024


def slow_cgi_server(tmp_path, certificate, command):
    """A ``prefork 2`` server whose ``/cgi/*`` is fcgiwrap running ``slow.sh`` (1.5 s)."""
    cgi = tmp_path / "cgi"
    cgi.mkdir(exist_ok=True)
    script = cgi / "slow.sh"
    script.write_text("#!/bin/sh\nsleep 1.5\nprintf '20 text/gemini\\r\\nslow\\n'\n")
    script.chmod(0o755)
    cert, key = certificate
    config = tmp_path / "gmid.conf"
    config.write_text(
        f'prefork 2\nserver "localhost" {{\n  listen on 127.0.0.1 port 0\n  cert "{cert}"\n'
        f'  key "{key}"\n  root "{tmp_path}"\n  location "/cgi/*" {{ fastcgi spawn "{command}" }}\n}}\n'
    )
    return config


def reload_with(server, config, text):
    since = len(server.log)
    config.write_text(text)
    server.process.send_signal(signal.SIGHUP)
    server.wait_for_log("configuration reloaded", since=since)


def slow_request(port):
    return fetch(port, f"gemini://localhost:{port}/cgi/slow.sh", timeout=20)


def test_a_stop_right_after_a_reload_still_stops_the_program_it_retired(certificate, tmp_path):
    # The program was stopped once its last users ended, but the server's
    # stop did not wait for that: no "stopped" line, its socket directory left.
    spawns = tmp_path / "tmp"
    spawns.mkdir()
    config = slow_cgi_server(tmp_path, certificate, FCGIWRAP)
    server = start_server("-c", str(config), env={"TMPDIR": str(spawns)})
    try:
        wait_workers_listening(server, 2)
        assert len(list(spawns.glob("gemfcgi-spawn-*"))) == 1
        since = len(server.log)
        config.write_text(config.read_text().replace(f'  location "/cgi/*" {{ fastcgi spawn "{FCGIWRAP}" }}\n', ""))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded", since=since)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) in (0, -signal.SIGTERM)
        server.wait_for_log(rf"spawn:{re.escape(FCGIWRAP)}: pid \d+ stopped", since=since)
        assert list(spawns.glob("gemfcgi-spawn-*")) == []
    finally:
        server.stop()


def test_a_program_retired_two_reloads_later_serves_the_generation_still_using_it(
    certificate, tmp_path
):
    # The first reload keeps fcgiwrap, the second retires it: the workers
    # started before both still have requests on it, which must finish.
    from concurrent.futures import ThreadPoolExecutor

    config = slow_cgi_server(tmp_path, certificate, FCGIWRAP)
    first = config.read_text()
    server = start_server("-c", str(config))
    try:
        wait_workers_listening(server, 2)
        with ThreadPoolExecutor(4) as pool:
            slow = [pool.submit(slow_request, server.port) for _ in range(4)]
            time.sleep(0.5)
            reload_with(server, config, first)
            reload_with(server, config, first.replace(f'spawn "{FCGIWRAP}"', f'spawn "{FCGIWRAP} -c 2"'))
            replies = [(r.result().header, r.result().body.strip(), r.result().clean_close) for r in slow]
        assert replies == [(b"20 text/gemini", b"slow", True)] * 4
        assert slow_request(server.port).body.strip() == b"slow"
    finally:
        server.stop()


def test_a_stop_soon_after_a_reload_waits_for_the_earlier_generation(certificate, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    config = slow_cgi_server(tmp_path, certificate, FCGIWRAP)
    server = start_server("-c", str(config))
    try:
        wait_workers_listening(server, 2)
        before = workers(server)
        with ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(slow_request, server.port) for _ in range(2)]
            time.sleep(0.5)
            reload_with(server, config, config.read_text())
            server.process.send_signal(signal.SIGTERM)
            replies = [(r.result().header, r.result().body.strip(), r.result().clean_close) for r in slow]
        assert replies == [(b"20 text/gemini", b"slow", True)] * 2
        assert server.process.wait(20) in (0, -signal.SIGTERM)
        # No worker of the first generation outlived its parent.
        assert not [pid for pid in before.values() if os.path.exists(f"/proc/{pid}")
                    and "zombie" not in open(f"/proc/{pid}/status").read().lower()]
    finally:
        server.stop()


def test_a_sigusr1_right_after_a_reload_ends_no_worker(capsule, certificate, tmp_path):
    log_file = tmp_path / "access.log"
    server = logging_to_a_file(tmp_path / "gmid.conf", capsule, certificate, log_file)
    try:
        wait_workers_listening(server, 2)
        for _ in range(3):
            since = len(server.log)
            server.process.send_signal(signal.SIGHUP)
            time.sleep(0.05)  # the new workers are starting
            server.process.send_signal(signal.SIGUSR1)
            server.wait_for_log("configuration reloaded", since=since)
            assert fetch(server.port, f"gemini://localhost:{server.port}/").status == 20
        assert "ended (" not in server.log and "restarting in" not in server.log
    finally:
        server.stop()


def test_a_sigusr1_reaches_the_workers_still_finishing_after_a_reload(capsule, certificate, tmp_path):
    log_file = tmp_path / "access.log"
    server = logging_to_a_file(tmp_path / "gmid.conf", capsule, certificate, log_file)
    try:
        wait_workers_listening(server, 2)
        tls, data = slow_download(server.port)
        since = len(server.log)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded", since=since)
        wait_workers_listening(server, 4)
        log_file.rename(tmp_path / "access.log.1")
        server.process.send_signal(signal.SIGUSR1)
        server.wait_for_log(r"(?s:\[worker \d+\] .*access log reopened.*){3}", since=since)
        assert len(finish_download(tls, data)) == 4 * 1024 * 1024
        # The download's line, written as it ended, goes to the new file.
        assert "/big.bin" in file_with(log_file, "/big.bin")
    finally:
        server.stop()


def test_a_reload_stops_the_old_workers_only_once_the_new_ones_listen(capsule, certificate, tmp_path):
    # Connections are accepted all along: the old generation serves on
    # until every worker of the new one says it listens.
    config = tmp_path / "gmid.conf"
    with two_workers(config, capsule, certificate) as server:
        since = len(server.log)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(r"(?s:retiring: a new generation serves.*){2}", since=since)
        after = server.log[since:]
        listening = [m.start() for m in re.finditer(r"\[worker \d+\] .*listening on", after)]
        stopping = [m.start() for m in re.finditer(r"\[worker \d+\] retiring", after)]
        assert len(listening) == 2 and len(stopping) == 2
        assert max(listening) < min(stopping)
        assert fetch(server.port, f"gemini://localhost:{server.port}/").status == 20


def test_reloads_in_quick_succession_stop_the_workers_that_never_came_to_listen(
    capsule, certificate, tmp_path
):
    config = tmp_path / "gmid.conf"
    with two_workers(config, capsule, certificate) as server:
        first = dict(workers(server))
        since = len(server.log)
        for count in range(1, 6):
            # Each HUP once the last is taken: two sent before the reactor
            # runs its handler are one signal.
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_log(rf"(?s:reloading configuration.*){{{count}}}", since=since)
        server.wait_for_log(r"(?s:configuration reloaded.*){5}", since=since)
        # The first generation served throughout, and is the one stopped
        # once the last generation listens; those between never listened.
        assert fetch(server.port, f"gemini://localhost:{server.port}/").status == 20
        wait_workers_listening(server, 4)
        deadline = time.monotonic() + 15
        while any(os.path.exists(f"/proc/{pid}") and "zombie" not in
                  open(f"/proc/{pid}/status").read().lower() for pid in first.values()):
            assert time.monotonic() < deadline, server.log
            time.sleep(0.05)
        assert fetch(server.port, f"gemini://localhost:{server.port}/").status == 20
        assert "Traceback" not in server.log


def test_connections_taken_before_the_parent_heard_its_workers_listen_are_served_through_a_reload(
    capsule, certificate, tmp_path
):
    # Workers accept as soon as they listen; the parent counts one as
    # serving once it has read its line. A reload in between stopped the
    # workers at once, as if they had never listened: their clients got 41.
    config = tmp_path / "gmid.conf"
    write_config(config, capsule, *certificate, extra="prefork 2")
    server = start_server("-c", str(config))
    try:
        held = [client_context().wrap_socket(
            socket.create_connection(("127.0.0.1", server.port), timeout=20), server_hostname="localhost")
            for _ in range(4)]
        since = len(server.log)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded", since=since)
        time.sleep(3)  # past the 2 s a stopping server gives a request to begin
        replies = []
        for tls in held:
            tls.sendall(f"gemini://localhost:{server.port}/\r\n".encode())
            replies.append(read_to_end(tls)[0])
            tls.close()
        assert replies == [b"20 text/gemini\r\n# prefork\n"] * 4, server.log
    finally:
        server.stop()


def workers_on_unix(capsule, certificate, listen: str) -> ServerProcess:
    """Quick mode on ``capsule`` with two workers, listening on the unix socket ``listen`` names."""
    cert, key = certificate
    return ServerProcess([*TWISTD, "-n", "--pidfile=", "gemfcgi", "--root", str(capsule),
                          "--hostname", "localhost", "--cert", cert, "--key", key,
                          "--listen", listen, "--workers", "2"])


def unix_fetch(path, url: str) -> bytes:
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(10)
    raw.connect(str(path))
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"{url}\r\n".encode())
    data, clean = read_to_end(tls)
    tls.close()
    assert clean
    return data


def test_a_unix_socket_shared_by_workers_outlives_every_reload_and_goes_with_the_stop(
    capsule, certificate, tmp_path
):
    # Each reload stops a generation of workers: closing their copies must
    # leave the socket, and its path, to the next one.
    path = tmp_path / "gemini.sock"
    server = workers_on_unix(capsule, certificate, f"unix:{path}")
    try:
        for generation in range(1, 4):
            wait_workers_listening(server, 2 * generation)
            assert unix_fetch(path, "gemini://localhost/") == b"20 text/gemini\r\n# prefork\n"
            since = len(server.log)
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_log("configuration reloaded", since=since)
            server.wait_for_log(r"\[worker \d\] .*Main loop terminated", since=since)
        assert "Unhandled error" not in server.log
    finally:
        server.stop()
    assert not path.exists() and not (tmp_path / "gemini.sock.lock").exists()


def test_workers_of_a_parent_killed_outright_stop_and_free_the_port(capsule, certificate, tmp_path):
    config = tmp_path / "gmid.conf"
    with two_workers(config, capsule, certificate) as server:
        pids = list(workers(server).values())
        port = server.port
        server.process.kill()  # SIGKILL: the parent can stop nothing itself
        server.process.wait(10)
        try:
            deadline = time.monotonic() + 15
            while any(_alive(pid) for pid in pids):
                assert time.monotonic() < deadline, "a worker outlived its parent"
                time.sleep(0.05)
        finally:
            for pid in pids:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        assert refused_soon(port)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped between the open and the read
        return False


def test_a_reload_that_changes_prefork_starts_that_many_workers(capsule, certificate, tmp_path):
    config = tmp_path / "gmid.conf"
    with two_workers(config, capsule, certificate) as server:
        since = len(server.log)
        config.write_text(config.read_text().replace("prefork 2", "prefork 3"))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("workers: 2 -> 3 \\(prefork\\)", since=since)
        wait_workers_listening(server, 2 + 3)
        assert len(re.findall(r"started worker \d", server.log[since:])) == 3


def test_sigusr2_makes_every_worker_say_how_many_clients_it_has(capsule, certificate, tmp_path):
    config = tmp_path / "gmid.conf"
    with two_workers(config, capsule, certificate) as server:
        held = [client_context().wrap_socket(socket.create_connection(("127.0.0.1", server.port)),
                                             server_hostname="localhost") for _ in range(3)]
        try:
            server.process.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + 10
            while len(counts := re.findall(r"\[worker (\d)\] (\d+) connected clients", server.log)) < 2:
                assert time.monotonic() < deadline, server.log
                time.sleep(0.05)
            # The kernel hands the three connections to either worker.
            assert sorted(number for number, _ in counts) == ["0", "1"]
            assert sum(int(count) for _, count in counts) == 3
            assert fetch(server.port, f"gemini://localhost:{server.port}/").status == 20
        finally:
            for tls in held:
                tls.close()


@contextmanager
def a_download_through_a_reload(capsule, certificate, tmp_path):
    """
    A ``prefork 2`` server (drain timeout 1 s) reloaded while a slow
    download is in flight, once its old generation retires.
    """
    config = tmp_path / "gmid.conf"
    write_config(config, capsule, *certificate, extra="prefork 2")
    server = start_server("-c", str(config), "--drain-timeout", "1")
    try:
        wait_workers_listening(server, 2)
        tls, data = slow_download(server.port)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(r"\[worker \d\] retiring: a new generation serves")
        yield server, tls, data
    finally:
        server.stop()


def test_a_reload_lets_the_old_generation_finish_past_the_drain_timeout(capsule, certificate, tmp_path):
    # The drain timeout bounds a stop, not a reload: a download in flight
    # through a reload finishes whole however long it takes.
    with a_download_through_a_reload(capsule, certificate, tmp_path) as (server, tls, data):
        time.sleep(3)  # three drain timeouts: the client reads nothing meanwhile
        assert len(finish_download(tls, data)) == 4 * 1024 * 1024
        assert "cut by the drain timeout" not in server.log


def test_a_stop_while_a_generation_retires_gives_its_requests_the_drain_timeout(
    capsule, certificate, tmp_path
):
    with a_download_through_a_reload(capsule, certificate, tmp_path) as (server, tls, data):
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_log(r"\[worker \d\] .*big\.bin: cut by the drain timeout \(1 s\)")
        data, clean = read_to_end(tls, data)
        tls.close()
        assert not clean and len(data.partition(b"\r\n")[2]) < 4 * 1024 * 1024
        assert server.process.wait(15) in (0, -signal.SIGTERM)
        assert "critical" not in server.log and "Traceback" not in server.log


def test_a_worker_hung_past_the_drain_timeout_is_killed_and_named(capsule, certificate, tmp_path):
    # It was killed without a line: the log's last word on it was its start.
    config = tmp_path / "gmid.conf"
    write_config(config, capsule, *certificate, extra="prefork 2")
    server = start_server("-c", str(config), "--drain-timeout", "1")
    try:
        wait_workers_listening(server, 2)
        hung = workers(server)[1]
        os.kill(hung, signal.SIGSTOP)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) is not None
    finally:
        server.stop()
    assert re.search(rf"worker 1 \(pid {hung}\) still running 10 s after the drain timeout: "
                     "sending SIGKILL", server.log), server.log
    assert f"(pid {workers(server)[0]}) still running" not in server.log


def test_a_unix_socket_shared_by_workers_keeps_the_mode_it_was_made_with(capsule, certificate, tmp_path):
    # The workers' adopted copies made it 0666 and listened again with a
    # backlog of 50, whatever mode= and backlog= asked.
    path = tmp_path / "private.sock"
    server = workers_on_unix(capsule, certificate, f"unix:{path}:mode=600:backlog=7")
    try:
        wait_workers_listening(server, 2)
        assert unix_fetch(path, "gemini://localhost/") == b"20 text/gemini\r\n# prefork\n"
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert re.search(rf"listening on {re.escape(str(path))} \(unix:", server.log), server.log
    finally:
        server.stop()


def test_workers_are_not_told_of_sockets_systemd_named_for_the_parent(capsule, certificate, tmp_path):
    # The workers' sockets are handed to them by the parent; LISTEN_FDNAMES
    # from the parent's activation was passed on as if it named theirs.
    config = tmp_path / "gmid.conf"
    write_config(config, capsule, *certificate, extra="prefork 2")
    server = start_server("-c", str(config), env={"LISTEN_FDNAMES": "gemini", "APP_SETTING": "kept"})
    try:
        wait_workers_listening(server, 2)
        for pid in workers(server).values():
            environment = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            assert b"APP_SETTING=kept" in environment
            assert not [entry for entry in environment if entry.startswith(b"LISTEN_")]
    finally:
        server.stop()
