"""A gmid.conf served end to end: virtual hosts, locations, reload."""

from __future__ import annotations

import os
import signal
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from gemfcgi.certificates import make_self_signed, write_key_pair
from tests.support import client_context, fetch, file_with, read_to_end, refused_soon, start_server

CONFIG = """
certs = "{certs}"
roots = "{roots}"

server "example.com" {{
    listen on 127.0.0.1 port 0
    alias "www.example.com"
    cert $certs "/example.com.pem"
    key $certs "/example.com.key"
    root $roots "/example"
    lang "en"

    location "/fr/*" {{ lang "fr" }}
    location "/dir/*" {{ index "page.gmi" }}
    location "/dir/*" {{ lang "de" }}
    location "/files/*" {{
        auto index on
        default type "text/plain"
    }}
    location "/listing/*" {{
        root $roots "/example/files"
        strip 1
        auto index on
    }}
    location "/old/*" {{
        strip 1
        block return 31 "gemini://%N:%P%p?%q"
    }}
    location "/deep/*" {{
        strip 2
        block return 51 "%p"
    }}
    location "/gone*" {{ block return 52 "gone for good" }}
    location "/secret/*" {{ block }}
    location "/quiet/*" {{ log off }}
    location "/neg/[^_]*" {{ block return 44 "negated" }}
    location "/cls/[[:digit:]]*" {{ block return 50 "digits" }}
    location "/lit/\\*" {{ block return 52 "a star" }}
    location "/untyped/*" {{
        root $roots "/example/files"
        strip 1
        default type ""
    }}
}}

server "*.example.org" {{
    listen on 127.0.0.1 port 0
    cert $certs "/example.org.pem"
    key $certs "/example.org.key"
    root $roots "/org"
}}

server "bücher.example" {{
    listen on 127.0.0.1 port 0
    cert $certs "/buecher.pem"
    key $certs "/buecher.key"
    root $roots "/org"
    location "/moved" {{ block return 31 "gemini://%N%p" }}
}}
"""


def make_pair(directory: Path, name: str, hosts):
    cert_pem, key_pem = make_self_signed(hosts)
    write_key_pair(directory / f"{name}.pem", directory / f"{name}.key", cert_pem, key_pem)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("config")
    certs = base / "certs"
    certs.mkdir()
    make_pair(certs, "example.com", ["example.com", "www.example.com"])
    make_pair(certs, "example.org", ["*.example.org"])
    make_pair(certs, "buecher", ["xn--bcher-kva.example"])
    roots = base / "roots"
    example = roots / "example"
    (example / "fr").mkdir(parents=True)
    (example / "index.gmi").write_text("# example.com\n")
    (example / "fr" / "index.gmi").write_text("# bonjour\n")
    (example / "fr" / "notes.txt").write_text("texte\n")
    (example / "dir").mkdir()
    (example / "dir" / "page.gmi").write_text("# page\n")
    (example / "files" / "sub dir").mkdir(parents=True)
    (example / "files" / "a.gmi").write_text("a\n")
    (example / "files" / "README").write_text("readme\n")
    (example / "files" / ".hidden").write_text("h\n")
    (example / "files" / "sub dir" / os.fsdecode(b"caf\xe9.gmi")).write_text("latin-1 name\n")
    (example / "files" / "sub dir" / "caf\u00e9.gmi").write_text("utf-8 name\n")
    (example / "quiet").mkdir()
    (example / "quiet" / "index.gmi").write_text("shh\n")
    (roots / "org").mkdir()
    (roots / "org" / "index.gmi").write_text("# example.org\n")
    config = base / "gmid.conf"
    config.write_text(CONFIG.format(certs=certs, roots=roots))
    return base


@pytest.fixture(scope="module")
def server(tree):
    process = start_server("-c", str(tree / "gmid.conf"))
    yield process
    process.stop()


def get(server, host, path="/", sni="default", **kwargs):
    sni = host if sni == "default" else sni
    return fetch(server.port, f"gemini://{host}:{server.port}{path}", sni=sni, **kwargs)


def peer_certificate_names(server, sni):
    context = client_context()
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_virtual_host_is_chosen_by_name(server):
    assert get(server, "example.com").body == b"# example.com\n"
    assert get(server, "blog.example.org").body == b"# example.org\n"


def test_alias_serves_the_same_capsule(server):
    assert get(server, "www.example.com").body == b"# example.com\n"


def test_unknown_host_gets_53(server):
    assert get(server, "example.net").status == 53


def test_idn_host_in_either_spelling(server):
    assert get(server, "bücher.example", sni="xn--bcher-kva.example").status == 20
    assert get(server, "xn--bcher-kva.example").status == 20


def test_certificate_is_chosen_by_sni(server):
    assert "example.com" in peer_certificate_names(server, "example.com")
    assert "example.com" in peer_certificate_names(server, "www.example.com")
    assert "*.example.org" in peer_certificate_names(server, "x.example.org")
    assert "xn--bcher-kva.example" in peer_certificate_names(server, "xn--bcher-kva.example")


@pytest.mark.parametrize("host", ["www.example.com", "blog.example.org"], ids=["alias", "another server"])
def test_a_tls12_session_resumed_under_another_name_is_served_for_the_name_sent_now(server, host):
    # OpenSSL names a TLS 1.2 resumption by the handshake that made the
    # session: the request's host is judged by itself, not refused as 53.
    context = client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    first = get(server, "example.com", context=context)
    assert first.status == 20 and first.session is not None
    reply = get(server, host, context=context, session=first.session)
    assert reply.session_reused
    assert reply.status == 20, reply.header


def test_unknown_sni_gets_the_first_servers_certificate(server):
    assert "example.com" in peer_certificate_names(server, "unknown.example")


def test_lang_is_added_to_text_gemini_only(server):
    assert get(server, "example.com").meta == "text/gemini;lang=en"
    assert get(server, "example.com", "/fr/").meta == "text/gemini;lang=fr"
    assert get(server, "example.com", "/fr/notes.txt").meta == "text/plain"


def test_location_options_resolve_per_directive(server):
    reply = get(server, "example.com", "/dir/")
    assert (reply.meta, reply.body) == ("text/gemini;lang=de", b"# page\n")


def test_block_return_formats_like_gmid(server):
    reply = get(server, "example.com", "/old/a/b?x%20y")
    assert reply.header == f"31 gemini://example.com:{server.port}/a/b?x%20y".encode()


def test_a_block_redirect_names_the_server_in_unicode_as_gmid_does(server):
    for host in ("bücher.example", "xn--bcher-kva.example"):
        reply = get(server, host, "/moved", sni="xn--bcher-kva.example")
        assert reply.header == "31 gemini://bücher.example/moved".encode()


def test_a_block_redirect_with_a_long_unicode_path_is_written_as_the_client_wrote_it(server):
    # Percent-encoded, the path would make the META 2,8xx bytes, more than
    # one may hold; written as UTF-8, it fits as the request did.
    path = "/" + "/".join(["é" * 120] * 4)
    reply = get(server, "example.com", f"/old{path}?q")
    assert reply.header == f"31 gemini://example.com:{server.port}{path}?q".encode()
    short = get(server, "example.com", "/old/é?q")
    assert short.header == f"31 gemini://example.com:{server.port}/%C3%A9?q".encode()


def test_location_patterns_mean_what_fnmatch_makes_of_them(server):
    assert [get(server, "example.com", path).header for path in (
        "/neg/a.txt", "/neg/_a.txt", "/cls/7", "/cls/x", "/lit/%2A", "/lit/x",
    )] == [b"44 negated", b"51 not found", b"50 digits", b"51 not found", b"52 a star", b"51 not found"]


def test_strip_removes_exactly_n_components(server):
    assert get(server, "example.com", "/deep/a/b/c").header == b"51 /b/c"


def test_block_defaults_to_40_and_any_code_can_be_returned(server):
    assert get(server, "example.com", "/secret/x").header == b"40 temporary failure"
    assert get(server, "example.com", "/gone").header == b"52 gone for good"


def test_auto_index_lists_the_directory_like_gmid(server):
    reply = get(server, "example.com", "/files/")
    assert reply.meta == "text/gemini;lang=en"
    assert reply.body.decode().splitlines() == [
        "# Index of /files/",
        "",
        "=> ./../",
        "=> ./.hidden",
        "=> ./README",
        "=> ./a.gmi",
        "=> ./sub%20dir/",
    ]


def test_an_auto_index_under_strip_is_titled_by_the_path_asked_for_and_links_its_parent(server):
    # As gmid: the page's links are relative to the URL the client has.
    top = get(server, "example.com", "/listing/")
    assert top.body.decode().splitlines()[:4] == ["# Index of /listing/", "", "=> ./../", "=> ./.hidden"]
    sub = get(server, "example.com", "/listing/sub%20dir/")
    assert sub.body.decode().splitlines() == [
        "# Index of /listing/sub dir/", "", "=> ./../", "=> ./caf%C3%A9.gmi",
    ]


def test_auto_index_leaves_out_a_name_that_is_not_utf8_which_no_request_can_reach(server):
    reply = get(server, "example.com", "/files/sub%20dir/")
    assert reply.body.decode().splitlines()[2:] == ["=> ./../", "=> ./caf%C3%A9.gmi"]
    assert get(server, "example.com", "/files/sub%20dir/caf%C3%A9.gmi").body == b"utf-8 name\n"
    # The link it had, followed:
    assert get(server, "example.com", "/files/sub%20dir/caf%E9.gmi").header == (
        b"59 path is not valid UTF-8")


def test_default_type_applies_to_unknown_extensions(server):
    assert get(server, "example.com", "/files/README").meta == "text/plain"


def test_an_empty_default_type_is_sent_and_logged_as_what_it_means(server):
    reply = get(server, "example.com", "/untyped/README")
    assert (reply.header, reply.body) == (b"20 text/gemini; charset=utf-8", b"readme\n")
    server.wait_for_log(r"GET gemini://example\.com/untyped/README 20 text/gemini; charset=utf-8 \d+ ")


def test_log_off_writes_no_access_line(server):
    assert get(server, "example.com", "/quiet/").status == 20
    assert get(server, "example.com", "/?after-quiet").status == 20
    server.wait_for_log(r"after-quiet")
    assert "/quiet/" not in server.log


def test_check_prints_configuration_ok(tree):
    import subprocess

    from tests.support import PROJECT_ROOT, TWISTD

    result = subprocess.run(
        [*TWISTD, "gemfcgi", "-c", str(tree / "gmid.conf"), "--check"],
        capture_output=True, timeout=60, env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert b"configuration OK" in result.stdout


def test_bad_config_exits_1_with_file_and_line(tmp_path):
    import subprocess

    from tests.support import PROJECT_ROOT, TWISTD

    bad = tmp_path / "bad.conf"
    bad.write_text('server "x" {\n  listen on 127.0.0.1 port 0\n  frobnicate on\n}\n')
    result = subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "gemfcgi", "-c", str(bad)],
        capture_output=True, timeout=60, env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert f"{bad}:3: unknown directive 'frobnicate'".encode() in result.stderr


def test_a_spawn_command_whose_program_is_missing_is_a_config_error(tree, tmp_path):
    import subprocess

    from tests.support import PROJECT_ROOT, TWISTD

    config = tmp_path / "gmid.conf"
    config.write_text((tree / "gmid.conf").read_text().replace(
        '    location "/secret/*" {{ block }}'.replace("{{", "{").replace("}}", "}"),
        '    location "/php/*" { fastcgi spawn "php-cgi-not-installed -d x=1" }\n'
        '    location "/sh/*" { fastcgi spawn "sh -c \'exit 0\'" }',
    ))
    result = subprocess.run(
        [*TWISTD, "gemfcgi", "-c", str(config), "--check"],
        capture_output=True, timeout=60, env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
    )
    line = config.read_text().splitlines().index(
        '    location "/php/*" { fastcgi spawn "php-cgi-not-installed -d x=1" }'
    ) + 1
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"{config}:{line}: fastcgi spawn: program 'php-cgi-not-installed' not found in PATH "
        "(or not executable)"
    ]


def line_of(config: Path, text: str) -> int:
    """The number of the configuration's first line holding ``text``."""
    lines = config.read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one process", "workers"])
def test_a_port_in_use_ends_the_start_naming_the_listen_line(tree, tmp_path, busy_port, workers):
    import subprocess

    from tests.support import TWISTD

    config = tmp_path / "gmid.conf"
    config.write_text((tree / "gmid.conf").read_text().replace(
        "listen on 127.0.0.1 port 0", f"listen on 127.0.0.1 port {busy_port}"))
    result = subprocess.run([*TWISTD, "-n", "--pidfile=", "gemfcgi", "-c", str(config), *workers],
                            capture_output=True, timeout=60)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 1, output
    assert (f"gemfcgi: {config}:{line_of(config, f'port {busy_port}')}: cannot listen on "
            f"tcp:{busy_port}:interface=127.0.0.1: ") in output
    assert "Traceback" not in output


def check_and_start_errors(config: Path) -> list[str]:
    """What ``--check`` and a start-up print of ``config``; both must agree and exit 1."""
    import subprocess

    from tests.support import PROJECT_ROOT, TWISTD

    printed = []
    for command in (
        [*TWISTD, "gemfcgi", "-c", str(config), "--check"],
        [*TWISTD, "-n", "--pidfile=", "gemfcgi", "-c", str(config)],
    ):
        result = subprocess.run(
            command, capture_output=True, timeout=60,
            env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 1, result.stderr
        printed.append(result.stderr.decode().splitlines())
    assert printed[0] == printed[1]
    return printed[0]


def test_an_access_log_in_a_missing_directory_is_a_config_error(tree, tmp_path):
    config = tmp_path / "gmid.conf"
    missing = tmp_path / "no-such-dir" / "access.log"
    config.write_text(f'log {{\n  access "{missing}"\n}}\n' + (tree / "gmid.conf").read_text())
    assert check_and_start_errors(config) == [
        f"{config}:2: log access '{missing}': no directory {missing.parent}"
    ]


def test_a_fastcgi_endpoint_that_is_no_endpoint_string_is_a_config_error(tree, tmp_path):
    # It started with a traceback (and under prefork, a reload that every
    # new worker died of was taken).
    certs = tree / "certs"
    config = tmp_path / "gmid.conf"
    config.write_text(
        'server "example.com" {\n'
        '  listen on 127.0.0.1 port 0\n'
        f'  cert "{certs / "example.com.pem"}"\n'
        f'  key "{certs / "example.com.key"}"\n'
        '  location "/a/*" { fastcgi endpoint "bogus:xx" }\n'
        '  location "/b/*" { fastcgi endpoint "tcp:127.0.0.1" }\n'
        '  location "/c/*" { fastcgi endpoint "tcp:host=127.0.0.1:port=abc" }\n'
        '  location "/d/*" { fastcgi endpoint "" }\n'
        '  location "/e/*" { fastcgi endpoint "tcp:host=127.0.0.1:port=9000" }\n'
        f'  location "/f/*" {{ fastcgi endpoint "ssl:host=localhost:port=9000:certKey={tmp_path}/none.pem" }}\n'
        '  location "/g/*" { fastcgi endpoint "unix:" }\n'
        '  location "/h/*" { fastcgi endpoint "tcp:localhost:99999" }\n'
        '}\n'
    )
    assert check_and_start_errors(config) == [
        f"{config}:5: fastcgi endpoint 'bogus:xx': unknown endpoint type 'bogus'",
        f"{config}:6: fastcgi endpoint 'tcp:127.0.0.1': not a client endpoint string "
        "(TCP4ClientEndpoint.__init__() missing 1 required positional argument: 'port')",
        f"{config}:7: fastcgi endpoint 'tcp:host=127.0.0.1:port=abc': not a client endpoint "
        "string (invalid literal for int() with base 10: 'abc')",
        f"{config}:8: fastcgi endpoint '': empty",
        f"{config}:10: fastcgi endpoint 'ssl:host=localhost:port=9000:certKey={tmp_path}/none.pem': "
        f"No such file or directory: {tmp_path}/none.pem",
        f"{config}:11: fastcgi endpoint 'unix:': no socket path",
        f"{config}:12: fastcgi endpoint 'tcp:localhost:99999': port 99999 is not 1 to 65535",
    ]


def test_each_problem_found_on_disk_or_in_the_network_names_its_own_file_and_line(tree, tmp_path):
    certs = tree / "certs"
    (tmp_path / "access.log").mkdir()
    (tmp_path / "globals.conf").write_text('# included\nuser "no-such-user-here"\n')
    config = tmp_path / "gmid.conf"
    config.write_text(
        f'include "{tmp_path / "globals.conf"}"\n'
        'protocols "tlsv1.2"\n'
        f'log {{ access "{tmp_path / "access.log"}" }}\n'
        'server "example.com" {\n'
        '  listen on 127.0.0.1 port "no-such-service"\n'
        '  listen on no-such-host.invalid port 1965\n'
        f'  cert "{certs / "example.com.pem"}"\n'
        f'  key "{certs / "missing.key"}"\n'
        '  location "/app/*" {\n'
        '    lang "en"\n'
        '    fastcgi socket tcp "127.0.0.1" port "no-such-service"\n'
        f'    root "{tmp_path / "no-such-root"}"\n'
        '  }\n'
        '}\n'
    )
    expected = [
        f"{tmp_path / 'globals.conf'}:2: unknown user 'no-such-user-here'",
        f"{config}:3: log access '{tmp_path / 'access.log'}': is a directory",
        f'{config}:5: listen on 127.0.0.1: unknown service "no-such-service" '
        "(not a port number, nor a name in /etc/services)",
        f'{config}:6: listen on no-such-host.invalid: cannot resolve "no-such-host.invalid": '
        "Name or service not known",
        f"{config}:8: server 'example.com': {certs / 'missing.key'}: cannot read key: "
        "No such file or directory",
        f"{config}:12: root {tmp_path / 'no-such-root'} is not a directory",
        f'{config}:11: fastcgi socket tcp "127.0.0.1" port "no-such-service": unknown service '
        "(not a port number, nor a name in /etc/services)",
    ]
    assert sorted(check_and_start_errors(config)) == sorted(expected)


def test_a_quoted_port_or_a_macro_holding_one_is_the_number(tree, tmp_path):
    text = (tree / "gmid.conf").read_text().replace(
        "listen on 127.0.0.1 port 0", 'listen on 127.0.0.1 port $zero'
    )
    config = tmp_path / "quoted.conf"
    config.write_text('zero = "0"\n' + text)
    server = start_server("-c", str(config), listeners=1)
    try:
        assert get(server, "example.com").body == b"# example.com\n"
    finally:
        server.stop()


def test_define_wins_over_the_files_macro(tree, tmp_path):
    text = (tree / "gmid.conf").read_text().replace(
        'roots = "', 'roots = "/nonexistent" # was "'
    )
    config = tmp_path / "defined.conf"
    config.write_text(text)
    server = start_server("-c", str(config), "-D", f"roots={tree / 'roots'}", listeners=1)
    try:
        assert get(server, "example.com").body == b"# example.com\n"
    finally:
        server.stop()


class TestReload:
    @pytest.fixture
    def reloadable(self, tree, tmp_path):
        config = tmp_path / "gmid.conf"
        config.write_text((tree / "gmid.conf").read_text())
        (tree / "roots" / "example" / "big.bin").write_bytes(b"z" * (4 * 1024 * 1024))
        server = start_server("-c", str(config))
        yield server, config
        server.stop()

    def test_a_file_named_relative_to_where_twistd_started_is_reloaded_after_rundir(self, tree, tmp_path):
        # twistd --rundir changes directory once the options are read.
        config = tmp_path / "gmid.conf"
        config.write_text((tree / "gmid.conf").read_text())
        rundir = tmp_path / "run"
        rundir.mkdir()
        server = start_server("-c", os.path.relpath(config), twistd_args=["--rundir", str(rundir)])
        try:
            config.write_text(config.read_text().replace('lang "en"', 'lang "eo"'))
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_log("configuration reloaded")
            assert get(server, "example.com").meta == "text/gemini;lang=eo"
        finally:
            server.stop()

    def test_relative_roots_name_what_they_named_where_twistd_started(
        self, tree, tmp_path
    ):
        # Relative to the directory the server started in, as gmid reads
        # them, whatever directory --rundir moves it to before it serves.
        config = tmp_path / "gmid.conf"
        config.write_text(CONFIG.format(certs=tree / "certs", roots=os.path.relpath(tree / "roots")))
        rundir = tmp_path / "run"
        rundir.mkdir()
        server = start_server("-c", str(config), twistd_args=["--rundir", str(rundir)])
        try:
            assert get(server, "example.com").body == b"# example.com\n"
            config.write_text(config.read_text().replace('lang "en"', 'lang "eo"'))
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_log("configuration reloaded")
            reply = get(server, "example.com")
            assert (reply.meta, reply.body) == ("text/gemini;lang=eo", b"# example.com\n")
        finally:
            server.stop()

    def test_a_reload_asking_for_workers_or_privileges_one_process_cannot_take_is_refused(
        self, reloadable
    ):
        server, config = reloadable
        config.write_text("prefork 2\n" + config.read_text().replace('lang "en"', 'lang "eo"'))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(
            rf"reload failed, keeping the running configuration: {config}:1: prefork 2: this server "
            "started in one process, and a reload cannot start workers: restart it to apply this"
        )
        assert get(server, "example.com").meta == "text/gemini;lang=en"

    def test_sighup_applies_a_good_file_to_new_connections(self, reloadable):
        server, config = reloadable
        config.write_text(config.read_text().replace('lang "en"', 'lang "eo"'))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded")
        assert get(server, "example.com").meta == "text/gemini;lang=eo"

    def test_sighup_follows_a_root_symlink_switched_to_a_new_release(self, tree, tmp_path):
        for release in ("1", "2"):
            (tmp_path / f"release{release}").mkdir()
            (tmp_path / f"release{release}" / "index.gmi").write_text(f"# release {release}\n")
        current = tmp_path / "current"
        current.symlink_to("release1")
        config = tmp_path / "gmid.conf"
        config.write_text((tree / "gmid.conf").read_text().replace(
            'root $roots "/example"', f'root "{current}"'
        ))
        server = start_server("-c", str(config))
        try:
            assert get(server, "example.com").body == b"# release 1\n"
            (tmp_path / "next").symlink_to("release2")
            (tmp_path / "next").replace(current)
            # As gmid: the root is opened at start and again on reload.
            assert get(server, "example.com").body == b"# release 1\n"
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_log("configuration reloaded")
            assert get(server, "example.com").body == b"# release 2\n"
        finally:
            server.stop()

    def test_sighup_with_a_bad_file_keeps_the_running_configuration(self, reloadable):
        server, config = reloadable
        config.write_text(config.read_text().replace('lang "en"', 'lang "en"\n    bogus 1'))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(rf"{config}:\d+: unknown directive 'bogus'")
        assert get(server, "example.com").meta == "text/gemini;lang=en"
        assert server.process.poll() is None

    def test_request_in_flight_finishes_across_a_reload(self, reloadable):
        server, config = reloadable
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        tls = client_context().wrap_socket(raw, server_hostname="example.com")
        tls.sendall(f"gemini://example.com:{server.port}/big.bin\r\n".encode())
        data = tls.recv(4096)
        config.write_text(config.read_text().replace('root $roots "/example"', 'root $roots "/org"'))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded")
        assert get(server, "example.com").body == b"# example.org\n"
        data, clean = read_to_end(tls, data)
        tls.close()
        assert clean and len(data.partition(b"\r\n")[2]) == 4 * 1024 * 1024

    def test_listeners_that_appear_in_the_file_are_opened_and_removed_ones_closed(self, reloadable):
        server, config = reloadable
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        new_port = free.getsockname()[1]
        free.close()
        text = config.read_text()
        config.write_text(text.replace(
            'listen on 127.0.0.1 port 0\n    alias',
            f'listen on 127.0.0.1 port {new_port}\n    alias', 1,
        ).replace("listen on 127.0.0.1 port 0", f"listen on 127.0.0.1 port {new_port}"))
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded")
        reply = fetch(new_port, f"gemini://example.com:{new_port}/", sni="example.com")
        assert reply.body == b"# example.com\n"
        assert refused_soon(server.port)

    def test_a_reload_that_switches_proxy_v1_on_a_port_says_a_restart_is_needed(self, tree, tmp_path):
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        config = tmp_path / "gmid.conf"
        config.write_text((tree / "gmid.conf").read_text().replace(
            "listen on 127.0.0.1 port 0", f"listen on 127.0.0.1 port {port}"))
        server = start_server("-c", str(config))
        try:
            config.write_text(config.read_text().replace(
                f"listen on 127.0.0.1 port {port}", f"listen on 127.0.0.1 port {port} proxy-v1"))
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_log(
                rf"reload failed, keeping the running configuration: {config}:{line_of(config, 'proxy-v1')}: "
                rf"haproxy:tcp:{port}:interface=127\.0\.0\.1: Address already in use "
                r"\(switching proxy-v1 on a listener's address and port needs a restart: a reload "
                r"opens its new sockets before it closes the old ones\)"
            )
            assert get(server, "example.com").status == 20
        finally:
            server.stop()

    def test_a_reload_whose_new_port_is_taken_keeps_serving_on_the_old_one(self, reloadable, busy_port):
        server, config = reloadable
        config.write_text(config.read_text().replace(
            "listen on 127.0.0.1 port 0", f"listen on 127.0.0.1 port {busy_port}"
        ).replace('lang "en"', 'lang "eo"'))
        server.process.send_signal(signal.SIGHUP)
        line = line_of(config, f"port {busy_port}")
        server.wait_for_log(
            rf"reload failed, keeping the running configuration: {config}:{line}: "
            rf"tcp:{busy_port}:interface=127\.0\.0\.1: Address already in use"
        )
        # Still there, and still serving the configuration it had.
        assert get(server, "example.com").meta == "text/gemini;lang=en"


def test_access_file_gets_the_configured_style_and_sigusr1_reopens_it(tree, tmp_path):
    log_file = tmp_path / "access.log"
    config = tmp_path / "logged.conf"
    config.write_text(
        f'log {{\n    access "{log_file}"\n    style combined\n    syslog off\n}}\n'
        + (tree / "gmid.conf").read_text()
    )
    server = start_server("-c", str(config))
    try:
        # gmid's log names the request rebuilt: host, decoded and normalised path, no port.
        assert get(server, "example.com", "/%64ir/./x/../page.gmi?first").status == 20
        first = file_with(log_file, "?first")
        assert ' "gemini://example.com/dir/page.gmi?first" 20 ' in first
        assert oct(log_file.stat().st_mode & 0o777) == "0o600"
        log_file.rename(tmp_path / "access.log.1")
        server.process.send_signal(signal.SIGUSR1)
        server.wait_for_log(f"access log reopened: {log_file}")
        assert get(server, "example.com", "/?second").status == 20
        assert "?second" in file_with(log_file, "?second")
        assert "?second" not in (tmp_path / "access.log.1").read_text()
    finally:
        server.stop()
