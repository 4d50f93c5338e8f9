"""Socket activation, tested with Debian's systemd-socket-activate."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from tests.support import PROJECT_ROOT, TWISTD, ServerProcess, client_context, fetch, read_to_end

ACTIVATE = shutil.which("systemd-socket-activate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(port: int, timeout: float = 10.0) -> None:
    """The activator binds before it starts gemfcgi; wait for that socket."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {port}")
        time.sleep(0.05)


@pytest.fixture
def capsule(tmp_path):
    (tmp_path / "index.gmi").write_text("# activated\n")
    return tmp_path


def test_serves_on_the_socket_systemd_passes(capsule, certificate):
    assert ACTIVATE, "systemd-socket-activate is missing (Debian package systemd)"
    cert, key = certificate
    port = free_port()
    command = [
        ACTIVATE, "-l", f"127.0.0.1:{port}", "--fdname=gemini",
        *TWISTD, "-n", "--pidfile=", "gemfcgi", "--root", str(capsule),
        "--cert", cert, "--key", key, "--listen", "systemd:domain=INET:name=gemini",
    ]
    server = ServerProcess(command)
    try:
        # The activator starts gemfcgi on the first connection (this probe),
        # and later ones wait in the socket's backlog meanwhile.
        wait_until_listening(port)
        reply = fetch(port, f"gemini://localhost:{port}/", timeout=30)
        assert reply.body == b"# activated\n"
        server.wait_for_log(rf"listening on 127\.0\.0\.1:{port} \(systemd:domain=INET:name=gemini\)")
        assert fetch(port, f"gemini://localhost:{port}/", timeout=10).status == 20
    finally:
        server.stop()


def test_index_selects_among_several_sockets(capsule, certificate):
    cert, key = certificate
    first, second = free_port(), free_port()
    command = [
        ACTIVATE, "-l", f"127.0.0.1:{first}", "-l", f"127.0.0.1:{second}", "--fdname=a:b",
        *TWISTD, "-n", "--pidfile=", "gemfcgi", "--root", str(capsule),
        "--cert", cert, "--key", key, "--listen", "systemd:domain=INET:index=1",
    ]
    server = ServerProcess(command)
    try:
        wait_until_listening(first)
        server.wait_for_log(r"listening on")
        assert fetch(second, f"gemini://localhost:{second}/", timeout=30).status == 20
    finally:
        server.stop()


def test_without_socket_activation_the_error_says_so(capsule, certificate):
    cert, key = certificate
    result = subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "gemfcgi", "--root", str(capsule), "--cert", cert,
         "--key", key, "--listen", "systemd:domain=INET:index=0"],
        capture_output=True, timeout=60, env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert b"not socket-activated" in result.stderr + result.stdout


def test_every_server_answers_on_an_activated_socket(certificate, tmp_path):
    # As on the sockets of listen on lines, and as in gmid: the address does
    # not choose the server, the name does. A server whose listen lines name
    # another address (a systemd ListenStream=1965 is [::]:1965, which no
    # "listen on 192.0.2.7 port 1965" names) got 53.
    cert, key = certificate
    first, second = free_port(), free_port()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.gmi").write_text(f"# {name}\n")
    config = tmp_path / "gmid.conf"
    config.write_text(
        f'server "a.example" {{\n listen on 127.0.0.1 port {first}\n cert "{cert}"\n key "{key}"\n'
        f' root "{tmp_path}/a"\n}}\n'
        f'server "b.example" {{\n listen on 127.0.0.1 port {second}\n cert "{cert}"\n key "{key}"\n'
        f' root "{tmp_path}/b"\n}}\n'
    )
    command = [
        ACTIVATE, "-l", f"127.0.0.1:{second}", "--fdname=gemini",
        *TWISTD, "-n", "--pidfile=", "gemfcgi", "-c", str(config),
        "--listen", "systemd:domain=INET:name=gemini",
    ]
    server = ServerProcess(command)
    try:
        wait_until_listening(second)
        reply = fetch(second, f"gemini://b.example:{second}/", sni="b.example", timeout=30)
        assert reply.body == b"# b\n"
        assert fetch(second, f"gemini://a.example:{second}/", sni="a.example").body == b"# a\n"
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", first)) != 0, "a listen line was bound"
    finally:
        server.stop()


UNIT = PROJECT_ROOT / "conf" / "gemfcgi.service"


def unit_settings(path) -> dict[str, list[str]]:
    """Each key of a unit file with its values, in order (sections and comments left out)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_a_stop_signals_gemfcgi_alone_so_its_fastcgi_apps_live_until_drained():
    # systemd.kill(5): control-group, the default, sends SIGTERM to every
    # process of the unit at once, spawned applications included.
    assert unit_settings(UNIT)["KillMode"] == ["mixed"]


def test_the_log_directory_is_made_by_systemd_and_nothing_else_is_needed_to_start():
    settings = unit_settings(UNIT)
    assert settings["LogsDirectory"] == ["gemfcgi"]
    # A ReadWritePaths= entry that does not exist makes the unit fail to start.
    assert "ReadWritePaths" not in settings
    # The state directory holds only quick mode's self-signed certificate.
    assert " -c " in settings["ExecStart"][0]
    assert "StateDirectory" not in settings


def test_the_command_line_is_gemfcgis_as_installed_by_readme():
    import shlex

    from twisted.scripts.twistd import ServerOptions

    (exec_start,) = unit_settings(UNIT)["ExecStart"]
    program, *arguments = shlex.split(exec_start)
    environment = program.removesuffix("/bin/twistd")
    assert environment != program
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert f"python3 -m venv {environment}" in readme
    assert f"{environment}/bin/pip install" in readme
    options = ServerOptions()
    options.parseOptions(arguments)
    assert options.subCommand == "gemfcgi"
    assert options.subOptions["listen"] == ["systemd:domain=INET6:name=gemini"]
    assert options["nodaemon"] and options["logfile"] == "-"


def test_systemd_analyze_verify_has_nothing_to_say(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd)"
    # verify wants ExecStart's program to exist; any executable stands in.
    (tmp_path / "gemfcgi.service").write_text(
        UNIT.read_text().replace("/opt/gemfcgi/bin/twistd", shutil.which("true"))
    )
    shutil.copy(PROJECT_ROOT / "conf" / "gemfcgi.socket", tmp_path)
    result = subprocess.run(
        [analyze, "verify", "--man=no", "gemfcgi.service", "gemfcgi.socket"],
        cwd=tmp_path, capture_output=True, timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")


def activated_failure(certificate, capsule, listen_args, description, connect):
    """What gemfcgi says when started by the activator on ``listen_args``, at the first connection."""
    cert, key = certificate
    command = [
        ACTIVATE, *listen_args, "--fdname=gemini",
        *TWISTD, "-n", "--pidfile=", "gemfcgi", "--root", str(capsule),
        "--cert", cert, "--key", key, "--listen", description,
    ]
    activator = ServerProcess(command)
    try:
        wait_until(connect)
        return activator.wait_for_log(r"gemfcgi: (.*)\n", timeout=30).group(1)
    finally:
        activator.stop()


def wait_until(connect, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            connect().close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the activator never listened"
            time.sleep(0.05)


def test_a_connection_passed_for_the_socket_is_refused_with_the_reason(capsule, certificate):
    # A socket unit with Accept=yes passes each connection: adopted as a
    # listener, every accept failed at once, 200,000 tracebacks in 7 s.
    port = free_port()
    said = activated_failure(
        certificate, capsule, ["-a", "-l", f"127.0.0.1:{port}"], "systemd:domain=INET:name=gemini",
        lambda: socket.create_connection(("127.0.0.1", port), timeout=5),
    )
    assert said == ("systemd:domain=INET:name=gemini: descriptor 3 is not a listening socket but a "
                    "connection (a systemd socket unit with Accept=yes passes each connection: "
                    "gemfcgi needs Accept=no)")


def test_an_unknown_domain_is_named_without_a_traceback(capsule, certificate):
    port = free_port()
    said = activated_failure(
        certificate, capsule, ["-l", f"127.0.0.1:{port}"], "systemd:domain=inet6:name=gemini",
        lambda: socket.create_connection(("127.0.0.1", port), timeout=5),
    )
    assert said == "systemd:domain=inet6:name=gemini: unknown domain (INET, INET6 or UNIX)"


def test_a_socket_of_another_domain_than_the_one_written_is_refused_with_the_right_one(
    capsule, certificate
):
    # An IPv6 socket adopted as INET gave every client a made-up address
    # (REMOTE_ADDR=::58cb:5538:577f:0%941387694).
    port = free_port()
    said = activated_failure(
        certificate, capsule, ["-l", f"[::1]:{port}"], "systemd:domain=INET:name=gemini",
        lambda: socket.create_connection(("::1", port), timeout=5),
    )
    assert said == ("systemd:domain=INET:name=gemini: descriptor 3 is a socket of domain INET6, "
                    "not INET: write domain=INET6")


def test_a_unix_socket_passed_by_systemd_keeps_its_path_when_gemfcgi_stops(
    capsule, certificate, tmp_path
):
    # systemd keeps the socket for the next start; Twisted's port removed
    # its path as it closed, so a restart found nothing to listen on.
    cert, key = certificate
    path = tmp_path / "gemini.sock"

    def connect():
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(10)
        raw.connect(str(path))
        return raw

    command = [
        ACTIVATE, "-l", str(path), "--fdname=gemini",
        *TWISTD, "-n", "--pidfile=", "gemfcgi", "--root", str(capsule),
        "--cert", cert, "--key", key, "--listen", "systemd:domain=UNIX:name=gemini",
    ]
    server = ServerProcess(command)
    try:
        wait_until(connect)
        server.wait_for_log(r"listening on .*gemini\.sock", timeout=30)
        tls = client_context().wrap_socket(connect(), server_hostname="localhost")
        tls.sendall(b"gemini://localhost/\r\n")
        assert read_to_end(tls) == (b"20 text/gemini\r\n# activated\n", True)
        tls.close()
    finally:
        server.stop()
    assert server.process.returncode in (0, -15), server.log
    assert path.exists()
