"""The twistd plugin, the embedded default, --gencert, and the example .tac."""

from __future__ import annotations

import os
import queue
import re
import select
import socket
import signal
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gemfcgi.certificates import make_self_signed, write_key_pair
from tests.fastcgi_apps.harness import python_app
from tests.support import (
    PROJECT_ROOT,
    TWISTD,
    client_context,
    fetch,
    served_certificate,
    start_command,
    start_server,
)


def twistd(*args, env=None):
    full_env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    full_env.update(env or {})
    return subprocess.run([*TWISTD, *args], capture_output=True, timeout=60, env=full_env)


def fingerprint(path) -> bytes:
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256())


def test_twistd_help_lists_gemfcgi():
    assert b"gemfcgi" in twistd("--help").stdout


def test_every_gemfcgi_option_is_described_in_plain_lines():
    help_text = twistd("gemfcgi", "--help").stdout.decode()
    options = [line for line in help_text.splitlines() if line.lstrip().startswith("-")]
    assert len(options) > 15
    for line in options:
        option, _, description = line.strip().partition("  ")
        assert description.strip(), f"{option} has no description"
    # A docstring's indentation does not leak into the text.
    assert not [line for line in help_text.splitlines() if "   " in line.strip()[28:]]


def test_embedded_default_serves_the_demo_capsule_and_keeps_its_certificate(tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    server = start_server("--listen", "tcp:0:interface=127.0.0.1", env=env)
    try:
        reply = fetch(server.port, f"gemini://localhost:{server.port}/")
        links = [line.split()[1] for line in reply.body.decode().splitlines() if line.startswith("=> ")]
        linked = {link: fetch(server.port, f"gemini://localhost:{server.port}{link}") for link in links}
        # The certificate names the loopback addresses too, and so does the
        # server: a URL written with one of them (no SNI then) is served.
        by_address = {
            host: fetch(server.port, f"gemini://{host}:{server.port}/", sni=None).header
            for host in ("127.0.0.1", "[::1]", "[::2]")
        }
    finally:
        server.stop()
    assert reply.header == b"20 text/gemini"
    assert b"gemfcgi" in reply.body and "/app/hello" in links and "/about.gmi" in links
    assert {link: r.status for link, r in linked.items()} == {link: 20 for link in links}
    assert b"This page comes from a FastCGI application" in linked["/app/hello"].body
    assert by_address == {
        "127.0.0.1": b"20 text/gemini",
        "[::1]": b"20 text/gemini",
        "[::2]": b"53 host not served here",
    }
    cert = tmp_path / "state" / "gemfcgi" / "cert.pem"
    key = tmp_path / "state" / "gemfcgi" / "key.pem"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert isinstance(parsed.public_key(), ec.EllipticCurvePublicKey)
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    first = fingerprint(cert)
    again = start_server("--listen", "tcp:0:interface=127.0.0.1", env=env)
    again.stop()
    assert fingerprint(cert) == first


def test_state_dir_option_is_used(tmp_path):
    server = start_server(
        "--listen", "tcp:0:interface=127.0.0.1", "--state-dir", str(tmp_path / "mine")
    )
    server.stop()
    assert (tmp_path / "mine" / "cert.pem").exists()


def test_gencert_writes_an_ecdsa_pair_by_default_and_rsa_on_request(tmp_path):
    result = twistd("gemfcgi", "--gencert", "--hostname", "example.org",
                    "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    ec_cert = x509.load_pem_x509_certificate((tmp_path / "example.org" / "cert.pem").read_bytes())
    assert isinstance(ec_cert.public_key(), ec.EllipticCurvePublicKey)
    assert oct((tmp_path / "example.org" / "key.pem").stat().st_mode & 0o777) == "0o600"
    result = twistd("gemfcgi", "--gencert", "--rsa", "--hostname", "rsa.example",
                    "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rsa_cert = x509.load_pem_x509_certificate((tmp_path / "rsa.example" / "cert.pem").read_bytes())
    assert isinstance(rsa_cert.public_key(), rsa.RSAPublicKey)
    assert rsa_cert.public_key().key_size == 2048


def test_gencert_never_overwrites_a_certificate(tmp_path):
    twistd("gemfcgi", "--gencert", "--hostname", "keep.example", "--state-dir", str(tmp_path))
    before = (tmp_path / "keep.example" / "cert.pem").read_bytes()
    result = twistd("gemfcgi", "--gencert", "--hostname", "keep.example",
                    "--state-dir", str(tmp_path))
    assert result.returncode != 0
    assert b"already exists" in result.stderr + result.stdout
    assert (tmp_path / "keep.example" / "cert.pem").read_bytes() == before


def test_gencert_that_cannot_write_the_certificate_says_so_and_leaves_no_key(tmp_path):
    # A traceback, and the key already written: the next try was refused
    # ("already exists") until the operator found and removed it.
    key = tmp_path / "k.pem"
    result = twistd("gemfcgi", "--gencert", "--cert", "/proc/gemfcgi-cert.pem", "--key", str(key))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1].startswith("/proc/gemfcgi-cert.pem: cannot write: ")
    assert b"Traceback" not in result.stderr and not key.exists()
    result = twistd("gemfcgi", "--gencert", "--cert", str(tmp_path / "c.pem"), "--key", str(key))
    assert result.returncode == 0, result.stderr


def test_gencert_names_what_is_wrong_with_the_paths_it_is_given(tmp_path):
    (tmp_path / "afile").touch()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    said = {}
    for name, args in {
        "same": ("--cert", str(tmp_path / "x.pem"), "--key", str(tmp_path / "x.pem")),
        "under-a-file": ("--cert", str(tmp_path / "afile" / "c.pem"), "--key", str(tmp_path / "k.pem")),
        "dangling": ("--cert", str(tmp_path / "dangling"), "--key", str(tmp_path / "k.pem")),
    }.items():
        result = twistd("gemfcgi", "--gencert", *args)
        assert result.returncode == 1
        said[name] = result.stderr.decode().strip().splitlines()[-1]
    assert said == {
        "same": f"{tmp_path / 'x.pem'}: --cert and --key name the same file; give each its own",
        "under-a-file": f"{tmp_path / 'afile'}: not a directory, so {tmp_path / 'afile' / 'c.pem'} "
                        "cannot be written",
        "dangling": f"{tmp_path / 'dangling'}: already exists; remove it first to replace it",
    }
    assert sorted(path.name for path in tmp_path.iterdir()) == ["afile", "dangling"]


def test_a_hostname_that_is_no_host_name_is_a_usage_error(tmp_path):
    result = twistd("gemfcgi", "--gencert", "--hostname", "bad name", "--state-dir", str(tmp_path))
    assert result.returncode != 0
    assert b"--hostname takes a host name or an IP address, not 'bad name'" in result.stderr + result.stdout
    assert b"Traceback" not in result.stderr and list(tmp_path.iterdir()) == []


def test_one_host_written_two_ways_keeps_one_pair(tmp_path):
    state = str(tmp_path / "state")
    assert twistd("gemfcgi", "--gencert", "--hostname", "Example.ORG.", "--state-dir", state).returncode == 0
    result = twistd("gemfcgi", "--gencert", "--hostname", "example.org", "--state-dir", state)
    assert b"already exists" in result.stderr
    assert [path.name for path in (tmp_path / "state").iterdir()] == ["example.org"]
    # Named as hosts are compared, in its subject as in its alternative names.
    certificate = x509.load_pem_x509_certificate((tmp_path / "state" / "example.org" / "cert.pem").read_bytes())
    assert certificate.subject.rfc4514_string() == "CN=example.org"


@pytest.mark.parametrize("gone", ["cert.pem", "key.pem"])
def test_quick_mode_with_half_its_pair_refuses_to_start_and_keeps_the_half(tmp_path, gone):
    # A new pair was made over the half left, without a word: every client
    # that trusted the certificate met another.
    state = tmp_path / "state"
    (tmp_path / "capsule").mkdir()
    assert twistd("gemfcgi", "--gencert", "--state-dir", str(state)).returncode == 0
    kept = "key.pem" if gone == "cert.pem" else "cert.pem"
    before = (state / kept).read_bytes()
    (state / gone).unlink()
    result = twistd("-n", "--pidfile=", "gemfcgi", "--root", str(tmp_path / "capsule"),
                    "--state-dir", str(state), "--listen", "tcp:0:interface=127.0.0.1")
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines()[-1] == (
        f"gemfcgi: {state / kept}: {state / gone} is missing: put it back, or remove {state / kept} too "
        "to have a new pair made (clients that trusted the old certificate will warn of the new one)")
    assert (state / kept).read_bytes() == before and not (state / gone).exists()


@pytest.mark.parametrize("state", ["", "capsule", "capsule/state"])
def test_a_state_directory_that_is_empty_or_inside_the_root_is_refused(tmp_path, state):
    # --state-dir "$UNSET" in the capsule made the pair there, and the
    # private key was served to anyone who asked for /key.pem.
    (tmp_path / "capsule").mkdir()
    result = subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "gemfcgi", "--root", str(tmp_path / "capsule"),
         f"--state-dir={state}", "--listen", "tcp:0:interface=127.0.0.1"],
        capture_output=True, timeout=60, cwd=tmp_path / "capsule" if not state else tmp_path,
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)))
    assert result.returncode != 0
    said = (result.stdout + result.stderr).decode()
    assert ("--state-dir is empty: give a directory" in said if not state
            else "is inside the root" in said and "give another --state-dir" in said), said
    assert not list((tmp_path / "capsule").rglob("key.pem"))


def test_a_key_given_inside_the_root_is_refused(tmp_path):
    # --state-dir inside the root was refused, but --key there served the
    # private key to anyone who asked for /key.pem.
    cert_pem, key_pem = make_self_signed(["localhost"])
    write_key_pair(tmp_path / "capsule/cert.pem", tmp_path / "capsule/key.pem", cert_pem, key_pem)
    result = twistd("-n", "--pidfile=", "gemfcgi", "--root", str(tmp_path / "capsule"),
                    "--cert", str(tmp_path / "capsule/cert.pem"), "--key", str(tmp_path / "capsule/key.pem"),
                    "--listen", "tcp:0:interface=127.0.0.1")
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines()[-1] == (
        f"gemfcgi: the key {tmp_path}/capsule/key.pem is inside the root {tmp_path}/capsule, which "
        "would serve it to anyone: keep it outside the root")


def test_localhost_however_written_gets_the_pair_that_names_the_loopback_addresses(tmp_path):
    assert twistd("gemfcgi", "--gencert", "--hostname", "LOCALHOST.", "--state-dir", str(tmp_path)).returncode == 0
    written = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    names = written.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(address) for address in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


@pytest.mark.parametrize("gone", ["cert.pem", "key.pem"])
def test_a_pair_of_links_whose_target_is_away_is_neither_replaced_nor_unlinked(tmp_path, gone):
    # The links were taken for a missing pair: a new pair was made over
    # them, and the identity behind them lost.
    state, kept = tmp_path / "state", tmp_path / "kept"
    assert twistd("gemfcgi", "--gencert", "--state-dir", str(kept)).returncode == 0
    state.mkdir()
    for name in ("cert.pem", "key.pem"):
        (state / name).symlink_to(kept / name)
    (kept / gone).rename(tmp_path / "away")
    (tmp_path / "capsule").mkdir()
    result = twistd("-n", "--pidfile=", "gemfcgi", "--root", str(tmp_path / "capsule"),
                    "--state-dir", str(state), "--listen", "tcp:0:interface=127.0.0.1")
    assert result.returncode == 1
    assert f"{state / gone}: links to {kept / gone}, which is missing" in result.stderr.decode()
    assert all((state / name).is_symlink() for name in ("cert.pem", "key.pem"))


def test_a_listen_string_that_cannot_be_read_is_said_before_any_pair_is_made(tmp_path):
    # The pair was made, its fingerprint line lost with the start; and
    # interface=::1 unescaped gave Python's "multiple values for argument".
    (tmp_path / "capsule").mkdir()
    result = twistd("-n", "--pidfile=", "gemfcgi", "--root", str(tmp_path / "capsule"),
                    "--state-dir", str(tmp_path / "state"), "--listen", "tcp6:0:interface=::1")
    assert result.returncode == 1
    assert result.stderr.decode().strip().endswith(
        "a colon inside an option's value is written \\: (interface=\\:\\:1), and the string "
        "quoted in a shell ('tcp6:1965:interface=\\:\\:1')")
    assert not (tmp_path / "state").exists()


def test_quick_mode_warns_of_a_certificate_out_of_its_dates(tmp_path):
    # A configuration's check warned of it; quick mode started silently,
    # and clients refused the capsule.
    import datetime

    from tests.certs import issue, write

    now = datetime.datetime.now(datetime.timezone.utc)
    cert, key = write(tmp_path, "old", issue("localhost", not_before=now - datetime.timedelta(days=60),
                                             not_after=now - datetime.timedelta(days=30)))
    (tmp_path / "capsule").mkdir()
    server = start_server("--root", str(tmp_path / "capsule"), "--cert", cert, "--key", key,
                          "--listen", "tcp:0:interface=127.0.0.1")
    try:
        server.wait_for_log(rf"warning: {re.escape(cert)}: expired on .* UTC: clients will refuse it, or warn")
    finally:
        server.stop()


def test_a_relative_xdg_state_home_is_ignored(tmp_path):
    (tmp_path / "run").mkdir()
    home = tmp_path / "home"
    result = subprocess.run(
        [*TWISTD, "gemfcgi", "--gencert"], capture_output=True, timeout=60, cwd=tmp_path / "run",
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), XDG_STATE_HOME="relstate", HOME=str(home)))
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "run").iterdir()) == []
    assert (home / ".local" / "state" / "gemfcgi" / "cert.pem").exists()


def test_quick_mode_serves_the_pair_gencert_wrote(tmp_path):
    (tmp_path / "capsule").mkdir()
    (tmp_path / "capsule" / "index.gmi").write_text("# example.org\n")
    state = tmp_path / "state"
    result = twistd("gemfcgi", "--gencert", "--rsa", "--hostname", "example.org",
                    "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    written = x509.load_pem_x509_certificate((state / "example.org" / "cert.pem").read_bytes())
    server = start_server("--root", str(tmp_path / "capsule"), "--hostname", "example.org",
                          "--state-dir", str(state), "--listen", "tcp:0:interface=127.0.0.1")
    try:
        served = x509.load_der_x509_certificate(served_certificate(server.port, "example.org"))
    finally:
        server.stop()
    assert served == written


def test_example_tac_serves_a_directory(tmp_path, certificate):
    (tmp_path / "index.gmi").write_text("# from the tac\n")
    cert, key = certificate
    env = {
        "GEMINI_ROOT": str(tmp_path),
        "GEMINI_CERT": cert,
        "GEMINI_KEY": key,
        "GEMINI_LISTEN": "tcp:0:interface=127.0.0.1",
    }
    tac = str(PROJECT_ROOT / "conf" / "gemfcgi.tac")
    server = start_command([*TWISTD, "-n", "--pidfile=", "-y", tac], env=env)
    try:
        reply = fetch(server.port, f"gemini://localhost:{server.port}/")
    finally:
        server.stop()
    assert reply.body == b"# from the tac\n"


def demo_apps_without_a_parent() -> set[int]:
    """Demo FastCGI apps that outlived the server that spawned them (adopted by init)."""
    orphans = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
            parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"gemfcgi.demo.app" in cmdline and parent == 1:
            orphans.add(int(entry))
    return orphans


def test_a_port_in_use_ends_the_start_with_one_line_and_spawns_nothing(tmp_path, busy_port):
    port = busy_port
    before = demo_apps_without_a_parent()
    # The embedded default, whose demo app would be spawned at start.
    result = twistd("-n", "--pidfile=", "gemfcgi", "--state-dir", str(tmp_path),
                    "--listen", f"tcp:{port}:interface=127.0.0.1")
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 1, output
    # With the backlog every listener gets (Twisted's 50 overflows at 64 at once).
    assert (f"gemfcgi: cannot listen on tcp:{port}:interface=127.0.0.1: "
            "Address already in use") in output
    assert "Traceback" not in output
    assert "gemfcgi.demo.app" not in output
    time.sleep(0.5)
    assert demo_apps_without_a_parent() - before == set()


def test_a_start_in_the_foreground_that_cannot_listen_leaves_no_pidfile(tmp_path, busy_port):
    pidfile = tmp_path / "twistd.pid"
    result = twistd("-n", f"--pidfile={pidfile}", "gemfcgi", "--state-dir", str(tmp_path),
                    "--listen", f"tcp:{busy_port}:interface=127.0.0.1")
    assert result.returncode == 1
    assert not pidfile.exists()  # as twistd leaves none when it stops


def test_a_daemon_whose_port_is_in_use_reports_it_and_exits(tmp_path, busy_port):
    # Daemonized, twistd's parent waits for the daemon to say how its start
    # went; it must hear of the failure, not wait for ever.
    port = busy_port
    result = twistd(f"--pidfile={tmp_path / 'twistd.pid'}", f"--logfile={tmp_path / 'twistd.log'}",
                    "gemfcgi", "--state-dir", str(tmp_path),
                    "--listen", f"tcp:{port}:interface=127.0.0.1")
    assert result.returncode == 1
    assert (f"cannot listen on tcp:{port}:interface=127.0.0.1: Address already in use"
            in result.stderr.decode())
    assert not (tmp_path / "twistd.pid").exists()
    time.sleep(0.5)
    assert "gemfcgi.demo.app" not in (tmp_path / "twistd.log").read_text()


def test_a_daemon_that_cannot_listen_names_the_line_that_asked(tmp_path, busy_port, certificate, capsule):
    # twistd itself passes on 100 bytes of the exception, class name first,
    # which left the FILE:LINE out.
    cert, key = certificate
    config = tmp_path / "gmid.conf"
    config.write_text(
        f'server "localhost" {{\n\tlisten on 127.0.0.1 port {busy_port}\n\tcert "{cert}"\n'
        f'\tkey "{key}"\n\troot "{capsule}"\n}}\n'
    )
    log_file = tmp_path / "twistd.log"
    result = twistd(f"--pidfile={tmp_path / 'twistd.pid'}", f"--logfile={log_file}",
                    "gemfcgi", "-c", str(config))
    assert result.returncode == 1
    said = result.stderr.decode()
    # The parent prints what fits in twistd's 100 bytes: the file's name
    # and the line, and the reason (this test's directory name is long).
    assert "gmid.conf:2: cannot listen on tcp:" in said
    assert said.count("Address already in use") == 1
    wait_for_text(log_file, re.escape(f"gemfcgi: {config}:2: cannot listen on tcp:{busy_port}:"
                                      "interface=127.0.0.1: Address already in use"))
    time.sleep(0.5)
    assert "Traceback" not in log_file.read_text()
    assert not (tmp_path / "twistd.pid").exists()


def test_a_quick_mode_root_that_is_not_a_directory_is_refused(tmp_path):
    result = twistd("-n", "--pidfile=", "gemfcgi", "--root", str(tmp_path / "missing"),
                    "--cert", "x.pem", "--key", "x.key")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == f"gemfcgi: --root {tmp_path / 'missing'} is not a directory"


@pytest.mark.parametrize("option, value, said", [
    ("--max-connections", "0", "--max-connections takes 1 or more, not 0"),
    ("--workers", "-2", "--workers takes 1 to 15, as prefork does, not -2"),
    ("--workers", "100", "--workers takes 1 to 15, as prefork does, not 100"),
    ("--drain-timeout", "-1", "--drain-timeout takes a number of seconds, 0 or more, not -1"),
    ("--request-timeout", "0", "--request-timeout takes a number of seconds above 0, not 0"),
    ("--idle-timeout", "nan", "--idle-timeout takes a number of seconds above 0, not nan"),
])
def test_an_option_out_of_its_range_is_refused_before_anything_starts(tmp_path, option, value, said):
    from twisted.python import usage

    from gemfcgi.tap import Options

    with pytest.raises(usage.UsageError) as refused:
        Options().parseOptions(["--root", str(tmp_path), option, value])
    assert str(refused.value) == said


def test_check_gives_its_warnings_in_the_order_of_the_file(tmp_path, certificate):
    # The parser's, the server order's and the checks' came in passes of
    # their own: line 7's after line 13's.
    cert, key = certificate
    block = f'\tcert "{cert}"\n\tkey "{key}"\n\troot "{tmp_path}"\n}}\n'
    config = tmp_path / "gmid.conf"
    config.write_text(f'server "b" {{\n\tlisten on 127.0.0.1 port 1965\n{block}'
                      f'server "a.test:1" {{\n\tlisten on 127.0.0.1 port 1965\n{block}'
                      f'server "b" {{\n{block}include "{tmp_path}/more.conf"\n')
    (tmp_path / "more.conf").write_text("ipv6 on\n")
    result = twistd("gemfcgi", "--check", "-c", str(config))
    assert result.returncode == 0
    # The file named first, then what it includes.
    places = [line.removeprefix("warning: ").split(":")[:2] for line in result.stderr.decode().splitlines()]
    assert places == [[str(config), "7"], [str(config), "13"], [str(config), "13"],
                      [str(tmp_path / "more.conf"), "1"]]


QUICK_ONLY = ("for quick mode (--root) and the embedded default; a configuration file names its "
              "servers, certificates and keys itself")


@pytest.mark.parametrize("arguments, said", [
    # --rsa started the embedded default; the others were taken without a word.
    (["--rsa"], "--rsa goes with --gencert"),
    (["--gencert", "-c", "gmid.conf"],
     "--gencert writes a certificate for --hostname and exits: it takes no --config or --check"),
    (["-c", "gmid.conf", "--cert", "c.pem", "--key", "k.pem"], f"--cert, --key: {QUICK_ONLY}"),
    (["-c", "gmid.conf", "--hostname", "example.org", "--state-dir", "s"],
     f"--state-dir, --hostname: {QUICK_ONLY}"),
    # Its default's name was taken as not given.
    (["-c", "gmid.conf", "--hostname", "localhost"], f"--hostname: {QUICK_ONLY}"),
])
def test_an_option_of_another_mode_is_refused(arguments, said):
    from twisted.python import usage

    from gemfcgi.tap import Options

    with pytest.raises(usage.UsageError) as refused:
        Options().parseOptions(arguments)
    assert str(refused.value) == said


def test_an_ipv4_client_of_the_dual_stack_socket_is_shown_as_ipv4(tmp_path):
    # What quick mode and "listen on *" open: one IPv6 socket for both families.
    server = start_server("--state-dir", str(tmp_path), "--listen", "tcp6:0:interface=\\:\\:")
    try:
        reply = fetch(server.port, f"gemini://localhost:{server.port}/app/hello")
        server.wait_for_log(r"\] 127\.0\.0\.1:\d+ GET gemini://localhost/app/hello 20 ")
    finally:
        server.stop()
    assert b"* client: 127.0.0.1\n" in reply.body


EMBEDDED_BUSY_PORT = """
import socket, sys
from twisted.internet import reactor
import gemfcgi
from gemfcgi.config import model
from gemfcgi.service import ListenError

cert, key, root = sys.argv[1:4]
busy = socket.socket()
busy.bind(("127.0.0.1", 0))
busy.listen()
free = socket.socket()
free.bind(("127.0.0.1", 0))
free_port = free.getsockname()[1]
free.close()
config = model.Config(servers=[model.Server(
    name="localhost", cert=cert, key=key, options=model.LocationOptions(root=root))])
service = gemfcgi.makeService(config, listen=[
    f"tcp:{free_port}:interface=127.0.0.1", f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1"])

def start():
    try:
        service.startService()
    except ListenError as error:
        print("ListenError:", error.args[0].split(": ", 1)[1], "running:", service.running)
    reactor.callLater(0.2, look)

def look():
    print("first port:", "closed" if socket.socket().connect_ex(("127.0.0.1", free_port)) else "open")
    reactor.stop()

reactor.callWhenRunning(start)
reactor.run()
"""


def test_an_embedded_service_whose_port_is_in_use_raises_and_closes_what_it_opened(tmp_path, certificate):
    cert, key = certificate
    result = subprocess.run(
        [sys.executable, "-c", EMBEDDED_BUSY_PORT, cert, key, str(tmp_path)],
        capture_output=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
    )
    assert result.stdout.decode().splitlines() == [
        "ListenError: Address already in use running: 0",
        "first port: closed",
    ], result.stderr.decode()


# README's lower-level path, as it is written there, on an endpoint of the program's own.
EMBEDDED_PARTS = """
import sys
import threading
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
import gemfcgi
from gemfcgi.config import model

cert, key, root = sys.argv[1:4]
config = model.Config(servers=[model.Server(
    name="localhost", cert=cert, key=key, options=model.LocationOptions(root=root))])
endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")

site = gemfcgi.build_site(config)
tls = gemfcgi.ServerTLS(gemfcgi.build_certificates(config, site.routes))
listening = endpoint.listen(TLSMemoryBIOFactory(tls, False, gemfcgi.GeminiFactory(site)))

listening.addCallback(lambda port: print(port.getHost().port, flush=True))
reactor.run()
"""


def test_the_parts_wired_on_an_endpoint_of_ones_own_serve_as_readme_says(tmp_path, certificate):
    cert, key = certificate
    (tmp_path / "index.gmi").write_text("# parts\n")
    process = subprocess.Popen(
        [sys.executable, "-c", EMBEDDED_PARTS, cert, key, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "the program never said its port"
        port = int(process.stdout.readline())
        reply = fetch(port, f"gemini://localhost:{port}/")
        assert (reply.header, reply.body, reply.clean_close) == (b"20 text/gemini", b"# parts\n", True)
    finally:
        process.terminate()
        process.wait(10)


# A program of one's own: the reactor's signal handlers, the service stopped as the reactor stops.
EMBEDDED_STOPPED_TWICE = """
import sys
import threading
from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
import gemfcgi
from gemfcgi.config import model

cert, key, root = sys.argv[1:4]
globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
config = model.Config(servers=[model.Server(
    name="localhost", cert=cert, key=key, options=model.LocationOptions(root=root))])
service = gemfcgi.makeService(config, listen=["tcp:0:interface=127.0.0.1"],
                              timeouts=gemfcgi.Timeouts(request=4))
reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
service.startService()
print("port", service.ports[0].getHost().port, flush=True)
reactor.run()
"""


def test_a_second_term_while_an_embedded_service_drains_is_answered_with_a_line(tmp_path, certificate):
    # The reactor's own handler asked the stopping reactor to stop again:
    # a critical ReactorNotRunning traceback in the program's log.
    cert, key = certificate
    process = subprocess.Popen(
        [sys.executable, "-u", "-c", EMBEDDED_STOPPED_TWICE, cert, key, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
    )
    seen: list[str] = []
    # Read by a thread: a select() on the pipe misses lines that an earlier
    # readline() has already taken into the file's buffer.
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout] + [lines.put("")],
                     daemon=True).start()

    def wait_for(text: str) -> None:
        while not any(text in line for line in seen):
            try:
                line = lines.get(timeout=30)
            except queue.Empty:
                raise AssertionError(f"never said {text!r}: {seen}") from None
            assert line, f"ended before saying {text!r}: {seen}"
            seen.append(line)

    try:
        wait_for("port ")
        port = int(next(line for line in seen if line.startswith("port ")).split()[1])
        # A request line begun and not ended holds the drain for its request timeout.
        client = client_context().wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="localhost")
        client.sendall(b"gemini://localhost")
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        wait_for("1 connection to finish")
        process.send_signal(signal.SIGTERM)
        wait_for("received SIGTERM again: already stopping")
        assert client.recv(100) == b"59 request timeout\r\n"
        client.close()
        process.wait(30)
        while (line := lines.get(timeout=10)):
            seen.append(line)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    said = "".join(seen)
    assert "ReactorNotRunning" not in said and "critical" not in said, said
    assert process.returncode == 0


def wait_for_text(path, pattern, timeout=15.0):
    """The first match of ``pattern`` in the file at ``path``, once it is there."""
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(pattern, path.read_text() if path.exists() else "")
        if match:
            return match
        assert time.monotonic() < deadline, f"{path} never matched {pattern!r}"
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-process", "prefork"])
def test_sigusr1_still_rotates_twistds_own_log_file(tmp_path, workers):
    # textlog's observer (and twistd's) rotate --logfile on SIGUSR1; the
    # access log's reopen must come on top of that, not instead.
    log_file = tmp_path / "twistd.log"
    process = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", f"--logfile={log_file}", "gemfcgi", "--state-dir",
         str(tmp_path), "--listen", "tcp:0:interface=127.0.0.1", *workers],
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port = int(wait_for_text(log_file, r"listening on 127\.0\.0\.1:(\d+) ").group(1))
        if workers:
            wait_for_text(log_file, r"\[worker \d+\] .*listening on(?s:.*)\[worker \d+\] .*listening on")
        process.send_signal(signal.SIGUSR1)
        wait_for_text(tmp_path / "twistd.log.1", "listening on")
        assert fetch(port, f"gemini://localhost:{port}/").status == 20
        wait_for_text(log_file, r"GET gemini://localhost/ 20 ")
    finally:
        process.terminate()
        process.wait(20)


def test_a_start_writes_its_warnings_to_the_log_file_too_and_sigusr1_says_the_reopen_in_the_new_one(
        tmp_path, certificate):
    # Both went elsewhere: the warnings to standard error alone (a daemon's
    # nowhere), the reopen line into the file twistd rotated away.
    cert, key = certificate
    log_file, access = tmp_path / "twistd.log", tmp_path / "access.log"
    config = tmp_path / "gmid.conf"
    config.write_text(f'log {{ access "{access}" }}\ntypes {{ text/plain a.b }}\n'
                      f'server "localhost" {{\n\tlisten on 127.0.0.1 port 0\n'
                      f'\tcert "{cert}"\n\tkey "{key}"\n\troot "{tmp_path}"\n}}\n')
    process = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", f"--logfile={log_file}", "gemfcgi", "-c", str(config)],
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_text(log_file, r"listening on 127\.0\.0\.1:")
        assert f"warning: {config}:2: extension 'a.b' holds '.'" in log_file.read_text()
        process.send_signal(signal.SIGUSR1)
        wait_for_text(log_file, re.escape(f"access log reopened: {access}"))
        assert "access log reopened" not in (tmp_path / "twistd.log.1").read_text()
    finally:
        process.terminate()
        process.wait(20)


def test_a_start_with_its_log_file_on_standard_error_writes_each_warning_once(tmp_path, certificate):
    # --logfile=/dev/stderr is where standard error goes: the warning was
    # printed there, then logged there again.
    cert, key = certificate
    errors = tmp_path / "errors.log"
    config = tmp_path / "gmid.conf"
    config.write_text(f'types {{ text/plain a.b }}\nserver "localhost" {{\n'
                      f'\tlisten on 127.0.0.1 port 0\n\tcert "{cert}"\n\tkey "{key}"\n'
                      f'\troot "{tmp_path}"\n}}\n')
    with errors.open("wb") as standard_error:
        process = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "--logfile=/dev/stderr", "gemfcgi", "-c", str(config)],
            env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
            stdout=subprocess.DEVNULL, stderr=standard_error,
        )
    try:
        wait_for_text(errors, r"listening on 127\.0\.0\.1:")
        assert errors.read_text().count(f"{config}:1: extension 'a.b' holds '.'") == 1
    finally:
        process.terminate()
        process.wait(20)


@pytest.mark.parametrize("through", ["pipe", "link"])
def test_a_log_file_on_standard_error_is_written_and_never_renamed(through, tmp_path, certificate):
    # --logfile=/dev/stderr with standard error a pipe was a traceback at
    # the start (twistd's file seeks); with it a file, SIGUSR1 renamed
    # /dev/stderr itself, as it renames a link of one's own to fd 2.
    cert, key = certificate
    link = tmp_path / "stderr-link"
    link.symlink_to("/proc/self/fd/2")
    log_file = "/dev/stderr" if through == "pipe" else str(link)
    errors = tmp_path / "errors.log"
    with errors.open("wb") as to_file:
        process = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", f"--logfile={log_file}", "gemfcgi", "--root", str(tmp_path),
             "--cert", cert, "--key", key, "--listen", "tcp:0:interface=127.0.0.1"],
            env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if through == "pipe" else to_file,
        )
    lines: "queue.Queue[str]" = queue.Queue()
    if through == "pipe":
        threading.Thread(target=lambda: [lines.put(line.decode()) for line in process.stderr],
                         daemon=True).start()

    def said(text: str) -> str:
        seen = ""
        deadline = time.monotonic() + 20
        while text not in seen and time.monotonic() < deadline:
            if through == "pipe":
                try:
                    seen += lines.get(timeout=0.2)
                except queue.Empty:
                    pass
            else:
                time.sleep(0.1)
                seen = errors.read_text()
        assert text in seen, seen
        return seen

    try:
        said("listening on 127.0.0.1:")
        time.sleep(1)  # the signal handlers come once the listeners are open
        process.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        process.send_signal(signal.SIGUSR2)
        said("connected clients")  # still logged, to the same place
        assert link.is_symlink() and not (tmp_path / "stderr-link.1").exists()
    finally:
        process.terminate()
        process.wait(20)


def renew(cert, key) -> bytes:
    """A new pair written over ``cert`` and ``key``; the new certificate, DER."""
    from cryptography.hazmat.primitives import serialization

    cert_pem, key_pem = make_self_signed(["localhost"])
    write_key_pair(cert, key, cert_pem, key_pem)
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def test_sighup_in_quick_mode_reads_the_renewed_certificate_and_keeps_serving(tmp_path):
    (tmp_path / "capsule").mkdir()
    (tmp_path / "capsule" / "index.gmi").write_text("# quick\n")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    renew(cert, key)
    server = start_server("--root", str(tmp_path / "capsule"), "--cert", str(cert), "--key", str(key),
                          "--listen", "tcp:0:interface=127.0.0.1")
    try:
        renewed = renew(cert, key)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded from the command line")
        assert server.process.poll() is None
        assert served_certificate(server.port) == renewed
        assert fetch(server.port, f"gemini://localhost:{server.port}/").body == b"# quick\n"
    finally:
        server.stop()


def test_sighup_in_the_embedded_default_keeps_serving_and_its_demo_app(tmp_path):
    before = demo_apps_without_a_parent()
    server = start_server("--state-dir", str(tmp_path), "--listen", "tcp:0:interface=127.0.0.1")
    try:
        assert fetch(server.port, f"gemini://localhost:{server.port}/app/hello").status == 20
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded from the command line")
        assert server.process.poll() is None
        reply = fetch(server.port, f"gemini://localhost:{server.port}/app/hello")
        assert b"This page comes from a FastCGI application" in reply.body
        # The same application serves on: a reload does not start another.
        assert len(re.findall(r"gemfcgi\.demo\.app: started pid", server.log)) == 1
    finally:
        assert server.stop() in (0, -signal.SIGTERM)
    time.sleep(0.5)
    assert demo_apps_without_a_parent() - before == set()


def test_sighup_to_the_example_tac_reads_the_renewed_certificate(tmp_path):
    (tmp_path / "index.gmi").write_text("# from the tac\n")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    renew(cert, key)
    env = {
        "GEMINI_ROOT": str(tmp_path),
        "GEMINI_CERT": str(cert),
        "GEMINI_KEY": str(key),
        "GEMINI_LISTEN": "tcp:0:interface=127.0.0.1",
    }
    tac = str(PROJECT_ROOT / "conf" / "gemfcgi.tac")
    server = start_command([*TWISTD, "-n", "--pidfile=", "-y", tac], env=env)
    try:
        renewed = renew(cert, key)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded from GEMINI_CERT and GEMINI_KEY")
        assert served_certificate(server.port) == renewed
        assert fetch(server.port, f"gemini://localhost:{server.port}/").body == b"# from the tac\n"
    finally:
        server.stop()


def test_a_handler_the_program_put_in_place_survives_the_tac_s_reload(tmp_path):
    # README's visitor check on the example tac: a certificate renewal's
    # HUP gave the capsule back to gemfcgi's own handler, unguarded.
    (tmp_path / "index.gmi").write_text("# from the tac\n")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    renew(cert, key)
    tac = tmp_path / "guarded.tac"
    tac.write_text(
        f"exec(open({str(PROJECT_ROOT / 'conf' / 'gemfcgi.tac')!r}).read())\n"
        "def greet(client, request, settings):\n"
        "    client.respond(60, 'a client certificate is required')\n"
        "gemini.site.handlers['static'] = greet\n"
    )
    env = {"GEMINI_ROOT": str(tmp_path), "GEMINI_CERT": str(cert), "GEMINI_KEY": str(key),
           "GEMINI_LISTEN": "tcp:0:interface=127.0.0.1"}
    server = start_command([*TWISTD, "-n", "--pidfile=", "-y", str(tac)], env=env)
    try:
        url = f"gemini://localhost:{server.port}/"
        assert fetch(server.port, url).header == b"60 a client certificate is required"
        renew(cert, key)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded from GEMINI_CERT and GEMINI_KEY")
        assert fetch(server.port, url).header == b"60 a client certificate is required"
    finally:
        server.stop()


def test_backend_timeout_bounds_a_fastcgi_application_that_never_answers(tmp_path, certificate, capsule):
    cert, key = certificate
    command = python_app("misbehave.py")
    (tmp_path / "gmid.conf").write_text(
        f'server "localhost" {{\n\tlisten on 127.0.0.1 port 0\n\tcert "{cert}"\n\tkey "{key}"\n'
        f'\troot "{capsule}"\n\tlocation "/bad/*" {{ fastcgi spawn "{command}" }}\n}}\n'
    )
    server = start_server("-c", str(tmp_path / "gmid.conf"), "--backend-timeout", "2")
    try:
        assert fetch(server.port, f"gemini://localhost:{server.port}/bad/silent").header == b"42 CGI error"
        server.wait_for_log(r"gemini://localhost/bad/silent: FastCGI backend spawn:.*"
                            r"reply timeout: no header after 2 s", timeout=10)
    finally:
        server.stop()
