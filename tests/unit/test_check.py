"""What the configuration check says of a ``fastcgi spawn`` command before anything is started."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from gemfcgi.check import access_log_problem, spawn_problem


def localhost_server(directory: Path, **fields):
    """A server block for localhost, its pair written as ``c.pem`` and ``k.pem`` in ``directory``."""
    from gemfcgi.config import model

    write_localhost_pair(directory)
    return model.Server(name="localhost", cert=str(directory / "c.pem"), key=str(directory / "k.pem"),
                        **fields)


def write_localhost_pair(directory: Path) -> None:
    """A self-signed pair for localhost, as ``c.pem`` and ``k.pem`` in ``directory``."""
    from gemfcgi.certificates import make_self_signed, write_key_pair

    cert_pem, key_pem = make_self_signed(["localhost"])
    write_key_pair(directory / "c.pem", directory / "k.pem", cert_pem, key_pem)


def test_a_command_the_server_can_start_has_no_problem():
    assert spawn_problem("sh -c 'exit 0'") is None


def test_a_program_nowhere_in_path_or_at_its_path_is_named():
    assert spawn_problem("no-such-program-here -x") == (
        "program 'no-such-program-here' not found in PATH (or not executable)"
    )
    assert spawn_problem("/no/such/program") == "program '/no/such/program' not found (or not executable)"


def test_the_program_a_wrapper_runs_is_looked_for_too_with_the_path_it_gives():
    # The README's own form passed the check with any program name after it.
    assert spawn_problem("env PHP_FCGI_CHILDREN=4 no-such-php-cgi") == (
        "program 'no-such-php-cgi' (run by env) not found in PATH (or not executable)")
    assert spawn_problem("env -i PATH=/usr/bin:/bin no-such-fcgiwrap -c 4") == (
        "program 'no-such-fcgiwrap' (run by env) not found in PATH (or not executable)")
    assert spawn_problem("nice -n 5 /no/such/app") == (
        "program '/no/such/app' (run by nice) not found (or not executable)")
    assert spawn_problem("env -i PATH=/nowhere sh -c 'exit 0'") == (
        "program 'sh' (run by env) not found in PATH (or not executable)")
    assert spawn_problem("env -i PATH=/usr/bin:/bin sh -c 'exit 0'") is None
    assert spawn_problem("env X=1 sh -c 'exit 0'") is None


@pytest.mark.parametrize("command", [
    "env -iu FOO sh -c 'exit 0'",
    "env -iS 'sh -c true'",
    "env -vS 'sh -c true'",
    "env -- PATH=/usr/bin:/bin sh -c 'exit 0'",
    "env --chd /tmp sh -c 'exit 0'",
    "env --chdir=/tmp --unset FOO -v sh -c 'exit 0'",
    "env -C /usr/bin ./nice true",
    "env -C /usr PATH=bin nice true",
    "nice --adj 5 sh -c 'exit 0'",
    "nice -5 sh -c 'exit 0'",
    "nice -n5 nohup sh -c 'exit 0'",
    "env =odd sh -c 'exit 0'",
    "env -C /tmp ./nothing-checked-from-there",
    "env --ignore-signal=PIPE sh -c 'exit 0'",
], ids=lambda command: command)
def test_what_a_wrapper_runs_is_read_as_the_wrapper_reads_its_options(command):
    # Joined short options, abbreviated long ones and assignments after
    # "--" were taken for the program, and working commands were refused.
    assert spawn_problem(command) is None


@pytest.mark.parametrize("command, said", [
    ("nice bin/no-such-app", "program 'bin/no-such-app' (run by nice) not found (or not executable)"),
    ("env FOO=1 ./no-such-app", "program './no-such-app' (run by env) not found (or not executable)"),
    ("env FOO=1", "env runs no program here: it prints the server's environment, into the log"),
    ("nice", "nice runs no program here"),
    ("nice env FOO=1", "env runs no program here: it prints the server's environment, into the log"),
    ("env nice FOO=1 sh", "program 'FOO=1' (run by nice) not found in PATH (or not executable)"),
    # It forks, gemfcgi's program being a session leader already: each run
    # ended at once, and every request got 42.
    ("setsid sh -c 'exit 0'", "setsid: the program is already started as a session leader, so "
     "setsid forks and leaves it running outside gemfcgi's watch: leave setsid out"),
    ("nice setsid -w sh -c 'exit 0'", "setsid: the program is already started as a session leader, "
     "so setsid forks and leaves it running outside gemfcgi's watch: leave setsid out"),
    ("setsid env -S 'sh -c true'", "setsid: the program is already started as a session leader, "
     "so setsid forks and leaves it running outside gemfcgi's watch: leave setsid out"),
    # Each exited at once with 125: every request got 42.
    ("env -0 sh -c 'exit 0'", "env -0 (--null) runs no program: the wrapper would exit at every start"),
    ("env -u A=B sh -c 'exit 0'", "env cannot unset 'A=B': the wrapper would exit at every start"),
    ("nice -n abc sh -c 'exit 0'", "nice: invalid adjustment 'abc': the wrapper would exit at every start"),
    ("nice --adjustment=zz sh", "nice: invalid adjustment 'zz': the wrapper would exit at every start"),
], ids=lambda value: value)
def test_a_wrapper_whose_program_cannot_run_or_that_runs_none_is_said_so(command, said):
    # Each passed the check: the first two lose PATH, the others' relative
    # programs were not looked for, and "env FOO=1" wrote the server's
    # environment into the log at every request.
    assert spawn_problem(command) == said


@pytest.mark.parametrize("wrapper", ["env -uPATH", "env -vi", "env -u PATH", "env --unset=PATH"])
def test_a_program_found_only_in_a_path_a_wrapper_takes_away_is_said_so(tmp_path, monkeypatch, wrapper):
    app = tmp_path / "bin" / "gemini-app"
    app.parent.mkdir()
    app.write_text("#!/bin/sh\n")
    app.chmod(0o755)
    monkeypatch.setenv("PATH", f"{app.parent}:/usr/bin:/bin")
    assert spawn_problem("gemini-app") is None
    assert spawn_problem(f"{wrapper} gemini-app") == (
        "program 'gemini-app' (run by env) not found in PATH (or not executable)")


def test_a_wrapper_run_by_another_is_looked_for_with_the_path_that_one_gives(tmp_path, monkeypatch):
    # env found nice nowhere in the PATH it gave, and exited 127 at every start.
    assert spawn_problem("env -i PATH=/nowhere nice sh -c 'exit 0'") == (
        "program 'nice' (run by env) not found in PATH (or not executable)")
    assert spawn_problem("env -i PATH=/usr/bin:/bin nice sh -c 'exit 0'") is None


def test_a_command_that_cannot_be_split_or_is_empty_is_said_so():
    assert spawn_problem("sh -c 'unclosed").startswith("cannot split \"sh -c 'unclosed\" into words: ")
    assert spawn_problem("   ") == "empty command"


def test_a_listen_name_idna_cannot_encode_and_a_key_path_ending_in_a_slash_are_errors(tmp_path):
    from gemfcgi.check import check_config
    from gemfcgi.config import model

    write_localhost_pair(tmp_path)
    origin = model.Origin("gmid.conf", 3)
    server = model.Server(
        name="localhost", cert=str(tmp_path / "c.pem"), key=str(tmp_path / "k.pem") + "/",
        listens=[model.Listen("a..b", 1965, origin=origin), model.Listen("x" * 64 + ".example", 1965)],
        origin=model.Origin("gmid.conf", 1), origins={"key": model.Origin("gmid.conf", 5)},
    )
    errors, _ = check_config(model.Config(servers=[server]))
    assert [str(e) for e in errors] == [
        'gmid.conf:3: listen on a..b: cannot resolve "a..b": '
        "encoding with 'idna' codec failed (UnicodeError: label empty or too long)",
        f'gmid.conf:1: listen on {"x" * 64}.example: cannot resolve "{"x" * 64}.example": '
        "encoding with 'idna' codec failed (UnicodeError: label empty or too long)",
        f"gmid.conf:5: server 'localhost': {tmp_path / 'k.pem'}/: cannot read key: Not a directory",
    ]


@contextmanager
def without_write_permission() -> Iterator[Path]:
    """
    A directory holding ``old.log``, where the caller may write neither:
    for root, by acting as ``nobody`` meanwhile (root passes every
    permission check); for anyone else, by taking the write bits away.
    """
    directory = Path(tempfile.mkdtemp())
    try:
        (directory / "old.log").write_text("")
        os.chmod(directory, 0o755)
        os.chmod(directory / "old.log", 0o644)
        if os.geteuid() != 0:
            os.chmod(directory / "old.log", 0o444)
            os.chmod(directory, 0o555)
            try:
                yield directory
            finally:
                os.chmod(directory, 0o755)
            return
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("no account named nobody to act as")
        os.setegid(nobody.pw_gid)
        os.seteuid(nobody.pw_uid)
        try:
            yield directory
        finally:
            os.seteuid(0)
            os.setegid(0)
    finally:
        shutil.rmtree(directory)


def test_an_access_log_the_server_may_not_write_or_create_is_said_so():
    with without_write_permission() as directory:
        assert access_log_problem(str(directory / "old.log")) == "not writable"
        assert access_log_problem(str(directory / "new.log")) == f"cannot create a file in {directory}"


def test_an_access_log_the_server_may_write_or_create_has_no_problem(tmp_path):
    (tmp_path / "old.log").write_text("")
    assert access_log_problem(str(tmp_path / "old.log")) is None
    assert access_log_problem(str(tmp_path / "new.log")) is None


def test_a_configuration_without_any_server_is_an_error():
    from gemfcgi.check import check_config
    from gemfcgi.config import model

    errors, _ = check_config(model.Config(source="empty.conf"))
    assert [str(e) for e in errors] == [
        'empty.conf: no server block: nothing to serve (add server "name" { ... })'
    ]


def ca_file_warnings(directory: Path, files: dict[str, list]) -> list[list[str]]:
    """The check's warnings for a server asking for each CA file, written from its certificates."""
    from cryptography.hazmat.primitives import serialization

    from gemfcgi.check import check_config
    from gemfcgi.config import model

    write_localhost_pair(directory)
    warnings = []
    for name, certificates in files.items():
        (directory / name).write_bytes(b"".join(
            certificate.public_bytes(serialization.Encoding.PEM) for certificate in certificates))
        server = model.Server(
            name="localhost", cert=str(directory / "c.pem"), key=str(directory / "k.pem"),
            options=model.LocationOptions(require_client_ca=str(directory / name)),
            origin=model.Origin("gmid.conf", 1),
        )
        warnings.append([str(w) for w in check_config(model.Config(servers=[server]))[1]])
    return warnings


def test_a_ca_file_is_warned_of_for_a_certificate_that_vouches_for_nobody_not_for_a_pinned_one(tmp_path):
    from tests.certs import issue

    carol = issue("carol")
    dave = issue("dave", carol)  # CA:FALSE, and not self-signed
    assert ca_file_warnings(tmp_path, {"pinned.pem": [carol[0]], "nobody.pem": [dave[0]]}) == [[], [
        f"gmid.conf:1: require client ca {tmp_path / 'nobody.pem'}: CN=dave: not a CA "
        "certificate (basicConstraints CA:FALSE), nor self-signed; neither it nor any client "
        "certificate it issued is accepted"
    ]]


def test_a_ca_file_holding_an_intermediate_without_its_root_is_warned_of(tmp_path):
    # "configuration OK", and every client certificate it issued got 61.
    from tests.certs import issue

    root = issue("root", ca=True)
    intermediate = issue("intermediate", root, ca=True)
    # Another root of the same name signs nothing of this intermediate's;
    # and one below an intermediate without its root reaches none either.
    impostor = issue("root", ca=True)
    lower = issue("lower", intermediate, ca=True)
    files = {"alone.pem": [intermediate[0]], "both.pem": [intermediate[0], root[0]],
             "namesake.pem": [intermediate[0], impostor[0]], "two.pem": [lower[0], intermediate[0]],
             "chain.pem": [lower[0], intermediate[0], root[0]]}

    def said(name: str, subject: str) -> str:
        return (f"gmid.conf:1: require client ca {tmp_path / name}: CN={subject}: an intermediate CA whose "
                "chain in the file reaches no root (none signed by CN=root) vouches for nobody: add the "
                "root it chains to")

    assert ca_file_warnings(tmp_path, files) == [
        [said("alone.pem", "intermediate")], [], [said("namesake.pem", "intermediate")],
        [said("two.pem", "lower"), said("two.pem", "intermediate")], []]


def test_a_malformed_bracket_expression_in_a_name_or_pattern_is_warned_of(tmp_path):
    from gemfcgi.check import check_config
    from gemfcgi.config import model

    server = localhost_server(
        tmp_path,
        aliases=["[ab.example"],
        locations=[model.Location("/[a-[:alpha:]", origin=model.Origin("gmid.conf", 4)),
                   model.Location("/ok/[a-z]*", origin=model.Origin("gmid.conf", 5))],
        origin=model.Origin("gmid.conf", 1),
    )
    _, warnings = check_config(model.Config(servers=[server]))
    tail = ("a malformed bracket expression, which gmid's fnmatch(3) reads only as far as each "
            "name needs: gemfcgi may match it differently (close it with ], and use only "
            "characters, ranges, [:class:], [.x.] and [=x=])")
    assert [str(w) for w in warnings] == [
        f"gmid.conf:1: alias '[ab.example': {tail}",
        f'gmid.conf:4: location "/[a-[:alpha:]": {tail}',
    ]


def _served_from(root: str, tmp_path: Path, **privileges):
    from gemfcgi.config import model

    server = localhost_server(
        tmp_path,
        listens=[model.Listen("127.0.0.1", 1965)],
        options=model.LocationOptions(root=root, origins={"root": model.Origin("gmid.conf", 9)}),
        origin=model.Origin("gmid.conf", 5),
    )
    origins = {name: model.Origin("gmid.conf", line) for name, line in (("user", 1), ("chroot", 4))}
    return model.Config(servers=[server], origins=origins, **privileges)


def test_a_chroot_that_is_no_directory_is_said_at_its_own_line_and_its_roots_go_unchecked(tmp_path):
    from gemfcgi.check import check_config

    config = _served_from("/root", tmp_path, user="nobody", chroot=str(tmp_path / "no-such-dir"))
    errors, _ = check_config(config)
    assert [str(e) for e in errors] == [f"gmid.conf:4: chroot {tmp_path / 'no-such-dir'} is not a directory"]


def test_a_root_missing_inside_the_chroot_is_named_as_it_is_opened(tmp_path):
    from gemfcgi.check import check_config

    errors, _ = check_config(_served_from("/etc", tmp_path, user="nobody", chroot=str(tmp_path)))
    assert [str(e) for e in errors] == [
        f"gmid.conf:9: root /etc is not a directory (inside the chroot: {tmp_path / 'etc'})"
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a directory owned by root that nobody may read")
def test_a_root_the_user_may_not_read_is_warned_of(tmp_path):
    from gemfcgi.check import check_config

    chroot = tmp_path / "chroot"
    (chroot / "private").mkdir(parents=True)
    (chroot / "public").mkdir()
    chroot.chmod(0o755)
    (chroot / "private").chmod(0o700)
    (chroot / "public").chmod(0o755)
    for root, expected in [("/public", []), ("/private", [
        f"gmid.conf:9: root /private (inside the chroot: {chroot / 'private'}): user nobody may "
        "not read it (by its mode bits, or those of a directory above it): every request under "
        "it would get 51"
    ])]:
        errors, warnings = check_config(_served_from(root, tmp_path, user="nobody", chroot=str(chroot)))
        assert errors == []
        assert [str(w) for w in warnings] == expected


def test_a_root_inside_the_chroot_is_looked_for_as_a_process_inside_it_finds_it(tmp_path):
    # Relative to the chroot's /, not to where the server starts; a symlink
    # to an absolute path leads to that path inside the chroot.
    from gemfcgi.check import check_config

    chroot = tmp_path / "jail"
    (chroot / "srv" / "cap").mkdir(parents=True)
    (chroot / "srv" / "inside").symlink_to("/srv/cap")
    (chroot / "srv" / "outside").symlink_to(str(tmp_path))  # a directory here, not in the jail
    for root, expected in [
        ("srv/cap", []),
        ("/srv/inside", []),
        ("/srv/outside", [f"gmid.conf:9: root /srv/outside is not a directory (inside the chroot: "
                          f"{chroot}{tmp_path})"]),
    ]:
        errors, _ = check_config(_served_from(root, tmp_path, user="nobody", chroot=str(chroot)))
        assert [str(e) for e in errors] == expected, root


def checked(tmp_path, text: str) -> list[str]:
    """The errors ``load_and_check`` finds in ``text`` (a gmid.conf), as FILE:LINE lines."""
    from gemfcgi.check import load_and_check
    from gemfcgi.config import ConfigError

    write_localhost_pair(tmp_path)
    (tmp_path / "root").mkdir(exist_ok=True)
    path = tmp_path / "gmid.conf"
    path.write_text(text.format(cert=tmp_path / "c.pem", key=tmp_path / "k.pem", root=tmp_path / "root"))
    try:
        load_and_check(str(path), {})
    except ConfigError as error:
        return [str(d).removeprefix(f"{path}:") for d in error.diagnostics]
    return []


def test_listen_lines_that_resolve_to_one_socket_must_agree_on_proxy_v1(tmp_path):
    # Written differently, the parser let them be; the start then failed
    # on its own socket ("Address already in use").
    assert checked(tmp_path, (
        'server "localhost" {{\n\tlisten on localhost port 22040 proxy-v1\n'
        '\tcert "{cert}"\n\tkey "{key}"\n\troot "{root}"\n}}\n'
        'server "other" {{\n\tlisten on 127.0.0.1 port 22040\n'
        '\tcert "{cert}"\n\tkey "{key}"\n\troot "{root}"\n}}\n'
    )) == [
        f"8: listen on 127.0.0.1 port 22040: no PROXY header (proxy-v1 or proxy-v2) is read here but "
        f"one is at {tmp_path}/gmid.conf:2 (localhost), and tcp:22040:interface=127.0.0.1 would take the connections of "
        "both: every listen on the same address and port must agree"
    ]


def test_an_embedded_configuration_whose_alike_listens_disagree_on_proxy_v1_is_refused(tmp_path):
    # makeService runs no parser: its check let them be, and the start failed on its own port.
    from gemfcgi.check import check_config
    from gemfcgi.config import model

    server = localhost_server(
        tmp_path,
        listens=[model.Listen("127.0.0.1", 22042), model.Listen("127.0.0.1", 22042, proxy_v1=True)],
        options=model.LocationOptions(root=str(tmp_path)),
    )
    errors, _ = check_config(model.Config(servers=[server]))
    assert [str(e) for e in errors] == [
        "<config>: listen on 127.0.0.1 port 22042: a PROXY header (proxy-v1 or proxy-v2) is read "
        "here but not on an earlier listen (127.0.0.1), and tcp:22042:interface=127.0.0.1 would take the "
        "connections of both: every listen on the same address and port must agree"
    ]


@pytest.mark.parametrize("first, second", [("*", "127.0.0.1"), ("127.0.0.1", "*"), ("0.0.0.0", "127.0.0.1")])
def test_a_wildcard_and_an_address_it_takes_must_agree_on_proxy_v1(tmp_path, first, second):
    # The wildcard's socket takes the address's connections only when they
    # agree: otherwise both were bound, and the second bind failed at start.
    errors = checked(tmp_path, (
        f'server "localhost" {{{{\n\tlisten on {first} port 22041\n'
        '\tcert "{cert}"\n\tkey "{key}"\n\troot "{root}"\n}}\n'
        f'server "other" {{{{\n\tlisten on {second} port 22041 proxy-v1\n'
        '\tcert "{cert}"\n\tkey "{key}"\n\troot "{root}"\n}}\n'
    ))
    assert len(errors) == 1
    assert errors[0].startswith(f"8: listen on {second} port 22041: a PROXY header (proxy-v1 or "
                                "proxy-v2) is read here but not at ")
    # The socket named is the one that would take both: the wildcard's.
    wildcard = {"*": "tcp6:22041:interface=\\:\\:", "0.0.0.0": "tcp:22041:interface=0.0.0.0"}
    socket = wildcard.get(first, wildcard.get(second, "tcp:22041:interface=127.0.0.1"))
    assert f"), and {socket} would take the connections of both" in errors[0]
    assert errors[0].endswith(": every listen on the same address and port must agree")


def test_an_unknown_service_beside_a_proxy_block_is_named_with_its_line(tmp_path):
    # The proxy loop check met it first, and the error lost its line.
    assert checked(tmp_path, (
        'server "localhost" {{\n\tlisten on 127.0.0.1 port "no-such-service"\n'
        '\tcert "{cert}"\n\tkey "{key}"\n\troot "{root}"\n'
        '\tproxy {{ relay-to "127.0.0.1" port 22050 }}\n}}\n'
    )) == [
        '2: listen on 127.0.0.1: unknown service "no-such-service" (not a port number, nor a name '
        "in /etc/services)"
    ]


def test_a_document_root_outside_the_chroot_is_warned_of():
    from gemfcgi.check import unseen_document_root
    from gemfcgi.config import model

    outside = model.FastCGI(params=[("DOCUMENT_ROOT", "/srv/jail/../cgi")])
    assert unseen_document_root(outside, "/srv/jail") == (
        "param DOCUMENT_ROOT /srv/jail/../cgi is outside the chroot /srv/jail: scripts cannot be "
        "looked for there, so no request names one (write param SCRIPT_NAME)")
    assert unseen_document_root(model.FastCGI(params=[("DOCUMENT_ROOT", "/srv/jail/cgi")]), "/srv/jail") is None
    assert unseen_document_root(outside, None) is None
    named = model.FastCGI(params=[("DOCUMENT_ROOT", "/cgi"), ("SCRIPT_NAME", "/cgi-bin/x")])
    assert unseen_document_root(named, "/srv/jail") is None


def test_php_cgi_spawned_to_serve_one_request_at_a_time_is_warned_of():
    # Alone, php-cgi is one process: a client reading a large reply slowly
    # held every other PHP request up for a minute.
    from gemfcgi.check import one_php_at_a_time

    advice = 'so one client reading a reply slowly holds up every other (spawn "env PHP_FCGI_CHILDREN=4 '
    assert one_php_at_a_time("php-cgi", {}) == (
        "fastcgi spawn: php-cgi without PHP_FCGI_CHILDREN serves one request at a time, " + advice + 'php-cgi")')
    assert one_php_at_a_time("env PHP_FCGI_CHILDREN=1 /usr/bin/php-cgi8.2 -d x=1", {}) == (
        "fastcgi spawn: php-cgi8.2 with PHP_FCGI_CHILDREN=1 serves one request at a time, "
        + advice + '/usr/bin/php-cgi8.2 -d x=1")')
    assert one_php_at_a_time("php-cgi", {"PHP_FCGI_CHILDREN": "0"}) is not None
    # Set where the program will see it, or no php-cgi at all: nothing to say.
    assert one_php_at_a_time("env PHP_FCGI_CHILDREN=4 php-cgi", {}) is None
    assert one_php_at_a_time("php-cgi", {"PHP_FCGI_CHILDREN": "8"}) is None
    assert one_php_at_a_time("/usr/sbin/fcgiwrap -c 4", {}) is None
    assert one_php_at_a_time("php-cgi 'unclosed", {}) is None


def test_fcgiwrap_spawned_to_run_one_script_at_a_time_is_warned_of():
    # Without -c, fcgiwrap is one process: a hung script held every other
    # CGI request up, past the backend timeout.
    from gemfcgi.check import one_fcgiwrap_at_a_time

    advice = "runs one script at a time, so one slow or hung script holds up every other"
    assert one_fcgiwrap_at_a_time("/usr/sbin/fcgiwrap", {}) == (
        f'fastcgi spawn: fcgiwrap without -c N {advice} (spawn "/usr/sbin/fcgiwrap -c 4")')
    assert one_fcgiwrap_at_a_time("env -i PATH=/bin /usr/sbin/fcgiwrap -c 1", {}) == (
        f'fastcgi spawn: fcgiwrap without -c N {advice} (spawn "env -i PATH=/bin /usr/sbin/fcgiwrap -c 1 -c 4")')
    for command in ("/usr/sbin/fcgiwrap -c 4", "fcgiwrap -c8", "fcgiwrap -f -c 2", "fcgiwrap -fc4",
                    "fcgiwrap -p /x -c 3", "php-cgi", "fcgiwrap 'x"):
        assert one_fcgiwrap_at_a_time(command, {}) is None, command
    # As getopt reads it: the last -c wins; -s takes a value ("-c" is it).
    for command in ("fcgiwrap -c 4 -c 1", "fcgiwrap -s -c", "fcgiwrap -f"):
        assert one_fcgiwrap_at_a_time(command, {}) is not None, command


def test_the_php_cgi_warning_reads_the_command_as_it_will_run(tmp_path):
    from gemfcgi.check import one_php_at_a_time

    many = {"PHP_FCGI_CHILDREN": "4"}
    # The environment the program gets, as env changes it.
    assert one_php_at_a_time("env -i php-cgi", many) is not None
    assert one_php_at_a_time("env -u PHP_FCGI_CHILDREN php-cgi", many) is not None
    assert one_php_at_a_time("php-cgi", {"PHP_FCGI_CHILDREN": ""}) is not None
    assert one_php_at_a_time("nice -n 5 php-cgi", {}) is not None
    assert one_php_at_a_time("env -i PHP_FCGI_CHILDREN=2 php-cgi", {}) is None
    # php-cgi as a word given to another program is not what runs.
    assert one_php_at_a_time("/usr/bin/multi-app php-cgi", {}) is None
    # A link of another name to php-cgi is php-cgi.
    (tmp_path / "php-cgi").write_text("#!/bin/sh\n")
    (tmp_path / "php-cgi").chmod(0o755)
    (tmp_path / "myphp").symlink_to(tmp_path / "php-cgi")
    assert one_php_at_a_time(str(tmp_path / "myphp"), {}) is not None


def test_the_php_cgi_warning_names_its_line(tmp_path, monkeypatch):
    from gemfcgi.check import load_and_check

    monkeypatch.delenv("PHP_FCGI_CHILDREN", raising=False)
    write_localhost_pair(tmp_path)
    (tmp_path / "root").mkdir()
    php = tmp_path / "opt" / "php" / "bin" / "php-cgi"
    php.parent.mkdir(parents=True)
    php.write_text("#!/bin/sh\n")
    php.chmod(0o755)
    path = tmp_path / "gmid.conf"
    path.write_text(
        f'server "localhost" {{\n\tlisten on 127.0.0.1 port 22060\n\tcert "{tmp_path}/c.pem"\n'
        f'\tkey "{tmp_path}/k.pem"\n\troot "{tmp_path}/root"\n'
        f'\tlocation "/php/*" {{ fastcgi spawn "env {php}" }}\n'
        f'\tlocation "/many/*" {{ fastcgi spawn "env PHP_FCGI_CHILDREN=4 {php}" }}\n}}\n'
    )
    _, warnings = load_and_check(str(path), {})
    assert [str(w) for w in warnings] == [
        f"{path}:6: fastcgi spawn: php-cgi without PHP_FCGI_CHILDREN serves one request at a time, so one "
        f'client reading a reply slowly holds up every other (spawn "env PHP_FCGI_CHILDREN=4 {php}")'
    ]


def test_a_reload_that_asks_for_a_user_is_refused_for_that_line_before_its_paths_are_checked(tmp_path):
    # The refusal named the access file's line: with ``user``, the paths
    # of the file are read inside the user's home, where it was not.
    from gemfcgi.check import load_and_check, needs_a_restart
    from gemfcgi.config import ConfigError

    write_localhost_pair(tmp_path)
    (tmp_path / "root").mkdir()
    (tmp_path / "logs").mkdir()
    path = tmp_path / "gmid.conf"
    path.write_text(
        'log { access "logs/access.log" }\nuser "nobody"\n'
        f'server "localhost" {{\n\tlisten on 127.0.0.1 port 22060\n\tcert "{tmp_path}/c.pem"\n'
        f'\tkey "{tmp_path}/k.pem"\n\troot "{tmp_path}/root"\n}}\n'
    )
    with pytest.raises(ConfigError) as refused:
        load_and_check(str(path), {}, str(tmp_path), needs_a_restart)
    assert [str(d) for d in refused.value.diagnostics] == [
        f"{path}:2: user 'nobody': privileges are dropped at a start only, and this server started "
        "in one process without: restart it to apply this"]


def test_a_spawned_program_the_user_may_not_run_is_warned_of(tmp_path):
    # It passed the check, and every start failed with exit status 126.
    import pwd

    from gemfcgi.check import spawn_unrunnable_by
    from gemfcgi.privileges import Identity

    nobody = pwd.getpwnam("nobody")
    identity = Identity(nobody.pw_uid, nobody.pw_gid, "nobody", str(tmp_path))
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    program = private / "app"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert spawn_unrunnable_by(f"{program} -x", identity) == (
        f"fastcgi spawn: user nobody may not run {program} (by its mode bits or those of a "
        "directory above it): every start would fail")
    assert spawn_unrunnable_by("sh -c 'exit 0'", identity) is None
    assert spawn_unrunnable_by(f"{program} -x", None) is None
    assert spawn_unrunnable_by("no-such-program", identity) is None
    # Read past env; a script must be readable too, and so must a script
    # given to an interpreter.
    assert spawn_unrunnable_by(f"env A=1 {program}", identity).startswith(
        f"fastcgi spawn: user nobody may not run {program} ")
    public = Path(tempfile.mkdtemp(prefix="gemfcgi-check-", dir="/tmp"))  # which anyone may search
    try:
        public.chmod(0o711)
        unreadable = public / "noread.py"
        unreadable.write_text("#!/bin/sh\n")
        unreadable.chmod(0o711)
        assert spawn_unrunnable_by(str(unreadable), identity).startswith(
            f"fastcgi spawn: user nobody may not run {unreadable} ")
        unreadable.chmod(0o755)
        assert spawn_unrunnable_by(str(unreadable), identity) is None
    finally:
        shutil.rmtree(public)
    assert spawn_unrunnable_by(f"sh {program}", identity) == (
        f"fastcgi spawn: user nobody may not read {program} (by its mode bits or those of a "
        "directory above it), which the program is given")


@pytest.mark.parametrize("name, why", [
    ("a.test:30241", 'a port is no part of a host name: write "a.test" and listen on the port'),
    ("gemini://a.test", "a URL is no host name: write the host alone"),
    ("a.test/", "it is no host name"),
    ("a..test", "it is no host name"),
    ("", "it is no host name"),
    ("*.te st", "no host holds ' '"),
    ("[^w]*.example.com", None), ("*[^0-9].example.org", None),  # ^ negates in brackets
    ("[ ]x[]a b].test", None), ("[ ]x[ a.test", "no host holds ' '"),  # in brackets, if closed
    ("a.test", None), ("*.test", None), ("[::1]", None), ("bücher.example", None),
])
def test_a_server_name_or_alias_no_host_can_match_is_warned_of(tmp_path, name, why):
    # Each passed --check, and requests for the name got 53.
    from gemfcgi.check import check_config
    from gemfcgi.config import model

    server = localhost_server(tmp_path, aliases=[name], origin=model.Origin("gmid.conf", 1),
                              options=model.LocationOptions(root=str(tmp_path)))
    errors, warnings = check_config(model.Config(servers=[server]))
    said = [str(w) for w in warnings if "no request can reach this server" in str(w)]
    assert errors == []
    assert said == ([f'gmid.conf:1: alias "{name}": no request can reach this server by it: {why}']
                    if why else [])


def test_a_name_of_many_unclosed_brackets_is_searched_for_what_no_host_holds_in_one_pass(monkeypatch):
    # The closed brackets were looked for from each "[" on to the end.
    from gemfcgi import check

    searched: list[int] = []
    real_sub = check.re.sub
    monkeypatch.setattr(check.re, "sub", lambda pattern, replacement, text, *rest: (
        searched.append(len(text)) or real_sub(pattern, replacement, text, *rest)))
    assert check.no_host_matches("[@]" + "[" * 10_000 + "%") == "no host holds '%'"
    assert sum(searched) == len("[@]")


def test_a_strip_or_params_no_fastcgi_request_uses_are_warned_of(tmp_path):
    # Each passed --check: the location's strip is not applied to what it
    # sends to FastCGI (fcgiwrap found no script: 50), and params without an
    # application in their block are dropped; both as in gmid.
    from gemfcgi.check import check_config
    from gemfcgi.config import model

    socket = model.FastCGISocket(str(tmp_path / "app.sock"))

    def at(line: int, **options) -> model.Location:
        return model.Location(f"/{line}/*", model.LocationOptions(**options), origin=model.Origin("gmid.conf", line))

    server = localhost_server(tmp_path, origin=model.Origin("gmid.conf", 1), locations=[
        at(2, strip=1, fastcgi=model.FastCGI(address=socket)),
        at(3, fastcgi=model.FastCGI(params=[("A", "b")])),
        at(4, fastcgi=model.FastCGI(address=socket, strip=1)),
        at(5, strip=1),
        # Used by its block's %p; and beside an inherited application, by
        # another location of the same paths that may turn fastcgi off.
        at(6, strip=1, block=model.BlockReturn(31, "/new%p"), fastcgi=model.FastCGI(address=socket)),
        at(7, strip=1),
    ], options=model.LocationOptions(root=str(tmp_path), fastcgi=model.FastCGI(address=socket)))
    _, warnings = check_config(model.Config(servers=[server]))
    assert [str(w) for w in warnings if "as in gmid" in str(w)] == [
        "gmid.conf:2: strip 1 does not apply to the requests this block sends to FastCGI, as in "
        "gmid: write fastcgi strip 1",
        "gmid.conf:3: fastcgi param and strip go with the application of their own block, and this "
        "one names none (no socket, spawn or endpoint): they are not used, as in gmid",
    ]


def test_a_private_key_under_a_served_root_is_warned_of(tmp_path):
    # A key kept beside the capsule's files was served to anyone who asked
    # for /k.pem, and the check said nothing.
    from gemfcgi.check import check_config
    from gemfcgi.config import model

    (tmp_path / "capsule" / "files").mkdir(parents=True)
    (tmp_path / "keys").mkdir()
    write_localhost_pair(tmp_path / "capsule")
    write_localhost_pair(tmp_path / "keys")
    relay = model.Proxy(relay_to=("up.example", 1965), cert=str(tmp_path / "capsule/files/../c.pem"),
                        key=str(tmp_path / "capsule/k.pem"))
    beside = model.Server(name="localhost", cert=str(tmp_path / "capsule/c.pem"),
                          key=str(tmp_path / "capsule/k.pem"), options=model.LocationOptions(root=str(tmp_path / "capsule")))
    elsewhere = model.Server(
        name="other.test", cert=str(tmp_path / "keys/c.pem"), key=str(tmp_path / "keys/k.pem"),
        options=model.LocationOptions(root=str(tmp_path / "capsule/files")),
        locations=[model.Location("/k/*", model.LocationOptions(root=str(tmp_path)))], proxies=[relay])
    _, warnings = check_config(model.Config(servers=[beside, elsewhere]))
    said = [w.message for w in warnings if "private key" in w.message]
    assert said == [
        f"key {tmp_path}/capsule/k.pem is under the root {tmp_path}/capsule, where anyone may ask for "
        "the private key (keep keys outside every root)",
        f"key {tmp_path}/keys/k.pem is under the root {tmp_path}, where anyone may ask for the private "
        "key (keep keys outside every root)",
    ]
    # A root only an application or a block answers for serves no file.
    relayed = model.Server(name="localhost", cert=str(tmp_path / "capsule/c.pem"), key=str(tmp_path / "capsule/k.pem"),
                           options=model.LocationOptions(root=str(tmp_path / "keys")), locations=[
                               model.Location("/app/*", model.LocationOptions(
                                   root=str(tmp_path / "capsule"),
                                   fastcgi=model.FastCGI(address=model.FastCGISocket("/run/app.sock")))),
                               model.Location("/no/*", model.LocationOptions(
                                   root=str(tmp_path), block=model.BlockReturn(51)))])
    assert not [w for w in check_config(model.Config(servers=[relayed]))[1] if "private key" in w.message]
    outside = model.Server(name="localhost", cert=str(tmp_path / "keys/c.pem"), key=str(tmp_path / "keys/k.pem"),
                           options=model.LocationOptions(root=str(tmp_path / "capsule")))
    assert not [w for w in check_config(model.Config(servers=[outside]))[1] if "private key" in w.message]


def test_an_endpoint_naming_a_file_its_parser_would_read_that_is_no_regular_file_is_an_error(tmp_path):
    # Twisted's ssl: parser reads certKey= and the like there and then: a
    # FIFO held the check, the start and a reload for good, and /dev/zero
    # took all the memory there was.
    from gemfcgi.check import endpoint_problem

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "cas").mkdir()
    os.mkfifo(tmp_path / "cas" / "root.pem")
    assert endpoint_problem(f"ssl:host=x:port=1:certKey={tmp_path}/fifo") == (
        f"certKey={tmp_path}/fifo: not a regular file (a FIFO)")
    assert endpoint_problem("tls:x:1:certificate=/dev/zero") == (
        "certificate=/dev/zero: not a regular file (a character device)")
    assert endpoint_problem(f"tls:x:1:trustRoots={tmp_path}/cas") == (
        f"trustRoots={tmp_path}/cas: {tmp_path}/cas/root.pem is not a regular file (a FIFO)")
    # A unix socket is what unix: names: no file read.
    assert endpoint_problem(f"unix:path={tmp_path}/fifo") is None


def test_a_spawn_program_that_is_a_fifo_does_not_hold_the_check(tmp_path):
    # Asked whether it was a script, the check opened it and waited for a writer.
    from gemfcgi.check import spawn_unrunnable_by
    from gemfcgi.privileges import Identity

    os.mkfifo(tmp_path / "program", 0o755)
    nobody = pwd.getpwnam("nobody")
    identity = Identity(nobody.pw_uid, nobody.pw_gid, "nobody", str(tmp_path))
    # It answers, from the mode bits, without opening the FIFO (pytest's
    # directories are its owner's alone).
    assert spawn_unrunnable_by(str(tmp_path / "program"), identity) == (
        f"fastcgi spawn: user nobody may not run {tmp_path}/program (by its mode bits or those of a "
        "directory above it): every start would fail")
    assert spawn_problem(str(tmp_path / "program")) == (
        f"program '{tmp_path}/program' is not a regular file (a FIFO): it cannot be run")


def test_fastcgi_addresses_no_connect_can_reach_are_errors(tmp_path):
    # Each passed the check, and every request got 42 ("invalid hostname",
    # "Connection refused").
    from gemfcgi.check import fastcgi_problem
    from gemfcgi.config import model

    assert fastcgi_problem(model.FastCGITCP("[::1]", 9000)) == (
        'fastcgi socket tcp "[::1]": an IPv6 address is written here without brackets: write "::1"')
    assert fastcgi_problem(model.FastCGITCP("127.0.0.1", 0)) == (
        'fastcgi socket tcp "127.0.0.1" port 0: no application listens on port 0')
    assert fastcgi_problem(model.FastCGITCP("", 9000)) == 'fastcgi socket tcp "": an empty host name'
    assert fastcgi_problem(model.FastCGISocket(f"{tmp_path}/")) == (
        f'fastcgi socket "{tmp_path}/": a directory, not a socket')
    # Longer than a socket address holds: "An error occurred while connecting: None".
    long = "/run/" + "d" * 60 + "/" + "s" * 37 + ".sock"
    assert fastcgi_problem(model.FastCGISocket(long)) == (
        f'fastcgi socket "{long}": 108 bytes long, over the 107 a unix socket\'s address holds')
    assert fastcgi_problem(model.FastCGIEndpoint(f"unix:path={long}")) == (
        f"fastcgi endpoint 'unix:path={long}': a socket path of 108 bytes, over the 107 a unix socket's "
        "address holds")
    for fine in (model.FastCGITCP("::1", 9000), model.FastCGITCP("localhost", 9000),
                 model.FastCGITCP("app.example", "http"), model.FastCGISocket(f"{tmp_path}/app.sock"),
                 model.FastCGISocket(long[:-6] + ".sock")):
        assert fastcgi_problem(fine) is None, fine


def test_an_access_file_that_is_a_link_to_nowhere_or_a_loop_is_said_so(tmp_path):
    # "configuration OK", then the start failed: "No such file or directory".
    (tmp_path / "dangling.log").symlink_to("/nonexistent/access.log")
    (tmp_path / "one").symlink_to(tmp_path / "two")
    (tmp_path / "two").symlink_to(tmp_path / "one")
    (tmp_path / "logs").mkdir()
    (tmp_path / "made.log").symlink_to(tmp_path / "logs" / "access.log")
    assert access_log_problem(str(tmp_path / "dangling.log")) == (
        "a link to /nonexistent/access.log, in no directory")
    assert access_log_problem(str(tmp_path / "one")) == "Too many levels of symbolic links"
    # A link whose target open() makes, as it does: fine.
    assert access_log_problem(str(tmp_path / "made.log")) is None


def index_warnings(text: str) -> list[str]:
    from gemfcgi.check import indexes_an_application_runs
    from gemfcgi.config.parser import parse_config

    config, _ = parse_config(text, "gmid.conf")
    return [f"{where.line}: {message}" for where, message in indexes_an_application_runs(config.servers[0])]


def test_an_index_a_fastcgi_location_runs_is_warned_of_where_its_directory_serves_files():
    # "/" got index.php as a file, the script's source, and the check was silent.
    head = 'server "localhost" {\n\tcert "/c.pem"\n\tkey "/k.pem"\n\troot "/srv"\n'
    php = '\tlocation "*.php" { fastcgi socket tcp "127.0.0.1" port 9000 }\n'
    assert index_warnings(head + '\tindex "index.php"\n' + php + "}\n") == [
        '6: index "index.php": a request for / gets /index.php as a file, its source, where this '
        "application answers a request for it, as in gmid (index another file; or send / to the "
        "application with a location of its own, whose param SCRIPT_FILENAME names the script: "
        "php-cgi is sent none for a directory)"
    ]
    # A location's own index, under the directory it begins with.
    [warning] = index_warnings(head + '\tlocation "/wiki/*" { index "index.php" }\n' + php + "}\n")
    assert warning.startswith('6: index "index.php": a request for /wiki/ gets /wiki/index.php as a file')
    # Directories a location's glob takes, the script named by its own pattern.
    nested = '\tindex "index.php"\n\tlocation "/" { fastcgi socket "/s" }\n'
    [warning] = index_warnings(head + nested + '\tlocation "/*/index.php" { fastcgi socket "/s" }\n}\n')
    assert warning.startswith('7: index "index.php": a request for /*/ gets /*/index.php as a file')
    [warning] = index_warnings(head + '\tindex "index.php"\n\tlocation "/blog/*/*.php" { fastcgi socket "/s" }\n}\n')
    assert warning.startswith('6: index "index.php": a request for /blog/*/ gets /blog/*/index.php')
    # A bracket is sampled by a character it takes.
    for bracket in ("[ab]", "[!x]", "v[[:digit:]]", "[wW]iki", "v[23]", "[é]", "[[:space:]]"):
        location = f'\tlocation "/{bracket}/index.php" {{ fastcgi socket "/s" }}\n'
        [warning] = index_warnings(head + nested + location + "}\n")
        assert warning.startswith(f'7: index "index.php": a request for /{bracket}/ gets'), warning
    # Every request relayed by a proxy block: no file is served.
    for relayed in ('\tproxy { relay-to "192.0.2.1" port 1965 }\n',
                    '\tproxy for-host "*" port "*" { relay-to "192.0.2.1" port 1965 }\n',
                    '\tlisten on * port 1966\n\tproxy for-host "*" port 1966 { relay-to "192.0.2.1" port 1965 }\n'):
        assert index_warnings(head + '\tindex "index.php"\n' + php + relayed + "}\n") == [], relayed
    # The directory goes to the application too, the index is no script, or the directory is blocked.
    assert index_warnings(head + '\tindex "index.php"\n\tlocation "*" { fastcgi socket "/s" }\n}\n') == []
    assert index_warnings(head + php + "}\n") == []
    assert index_warnings(head + '\tindex "index.php"\n\tlocation "/" { block }\n' + php + "}\n") == []


def test_counts_are_read_as_c_reads_them_not_as_a_traceback(monkeypatch):
    # str.isdigit took '²', and int() then failed the check. Both programs
    # read their count with atoi: C's white space and a sign, then ASCII
    # digits up to the first other character. A no-break space, '²' or
    # full-width digits are read as 0: one process (seen by counting the
    # processes php-cgi 8.2 and fcgiwrap 1.1 start).
    from gemfcgi.check import one_fcgiwrap_at_a_time, one_php_at_a_time

    monkeypatch.delenv("PHP_FCGI_CHILDREN", raising=False)
    for count in ("²", "\u00a04", "\uff14", "x4"):
        assert one_php_at_a_time("php-cgi", {"PHP_FCGI_CHILDREN": count}) == (
            f"fastcgi spawn: php-cgi with PHP_FCGI_CHILDREN={count!r} (read as 0) serves one request at a "
            'time, so one client reading a reply slowly holds up every other '
            '(spawn "env PHP_FCGI_CHILDREN=4 php-cgi")'), count
        assert one_fcgiwrap_at_a_time(f"/usr/sbin/fcgiwrap -c {count}", {}) is not None, count
    for count in (" 3", "+2", "4abc", "\t8"):
        assert one_php_at_a_time("php-cgi", {"PHP_FCGI_CHILDREN": count}) is None, count
        assert one_fcgiwrap_at_a_time(f"/usr/sbin/fcgiwrap -c '{count}'", {}) is None, count
    # Cut to an int's 32 bits as atoi's cast does: 4294967296 is 0, 4294967298
    # is 2 (php-cgi then runs two), 2147483648 is negative.
    assert one_php_at_a_time("php-cgi", {"PHP_FCGI_CHILDREN": "4294967298"}) is None
    for count, read in (("4294967296", 0), ("2147483648", -2147483648), ("99999999999999999999", -1)):
        assert f"(read as {read})" in one_php_at_a_time("php-cgi", {"PHP_FCGI_CHILDREN": count}), count
        assert one_fcgiwrap_at_a_time(f"fcgiwrap -c {count}", {}) is not None, count
    # php-cgi refuses a negative count, and exits.
    assert one_php_at_a_time("env PHP_FCGI_CHILDREN=-1 php-cgi", {}) == (
        "fastcgi spawn: php-cgi with PHP_FCGI_CHILDREN='-1' (read as -1) exits at every start (not valid) "
        '(spawn "env PHP_FCGI_CHILDREN=4 php-cgi")')


def test_fcgiwrap_options_after_another_word_count_as_its_getopt_permutes_them():
    from gemfcgi.check import one_fcgiwrap_at_a_time

    assert one_fcgiwrap_at_a_time("fcgiwrap x -c 4", {}) is None
    assert one_fcgiwrap_at_a_time("fcgiwrap -- -c 4", {}) is not None
    # Unless POSIXLY_CORRECT is in its environment: getopt then stops at
    # the first other word (fcgiwrap ran one process).
    assert one_fcgiwrap_at_a_time("fcgiwrap x -c 4", {"POSIXLY_CORRECT": "1"}) is not None
    assert one_fcgiwrap_at_a_time("env POSIXLY_CORRECT= fcgiwrap x -c 4", {}) is not None
    assert one_fcgiwrap_at_a_time("fcgiwrap -c 4 x", {"POSIXLY_CORRECT": "1"}) is None
    # Its advice puts -c 4 where getopt still reads it: before that word.
    warning = one_fcgiwrap_at_a_time("env POSIXLY_CORRECT=1 /usr/sbin/fcgiwrap x -c 4", {})
    assert warning.endswith('(spawn "env POSIXLY_CORRECT=1 /usr/sbin/fcgiwrap -c 4 x -c 4")')


def test_fcgiwrap_options_it_refuses_are_said_to_stop_it_at_every_start():
    # It exits at once (status 1, or 0 after its help): the advice to add
    # -c 4 was no help, and "-c -c 4" ran no worker at all.
    from gemfcgi.check import one_fcgiwrap_at_a_time

    for command, why in [("fcgiwrap -c", "option -c requires a value"), ("fcgiwrap -x", "invalid option -x"),
                         ("fcgiwrap -f -q -c 4", "invalid option -q"), ("fcgiwrap -h", "-h prints its help and exits"),
                         ("fcgiwrap -fh", "-h prints its help and exits")]:
        assert one_fcgiwrap_at_a_time(command, {}) == f"fastcgi spawn: fcgiwrap exits at every start: {why}", command
    # Past "--", or past another word under POSIXLY_CORRECT, they are no options.
    assert one_fcgiwrap_at_a_time("fcgiwrap -c 4 -- -x", {}) is None
    assert one_fcgiwrap_at_a_time("fcgiwrap -c 4 x -x", {"POSIXLY_CORRECT": ""}) is None


def test_fcgiwrap_told_to_listen_on_a_socket_of_its_own_is_said_to_serve_nothing():
    # With -s it listens on its own socket in place of the one it is
    # given, and every request waited for the backend timeout; a -s it
    # cannot read ("help") made it exit at every start. Both passed.
    from gemfcgi.check import one_fcgiwrap_at_a_time

    for command in ["fcgiwrap -c 4 -s unix:/run/fcgiwrap.sock", "fcgiwrap -s tcp:127.0.0.1:9000 -c 4",
                    "fcgiwrap -fsunix:/x -c 4"]:
        warning = one_fcgiwrap_at_a_time(command, {})
        assert warning is not None and "serves no request: it listens on a socket of its own" in warning, command
    for command, value in [("fcgiwrap -c 4 -s help", "'help'"), ("fcgiwrap -sbogus:x", "'bogus:x'"),
                           ("fcgiwrap -s UNIX:/x", "'UNIX:/x'")]:
        assert one_fcgiwrap_at_a_time(command, {}) == (
            f"fastcgi spawn: fcgiwrap exits at every start: -s {value} is no socket URL "
            "(unix:PATH, tcp:ADDRESS:PORT or tcp6:[ADDRESS]:PORT)"), command
    # Past "--" it is no option: fcgiwrap serves its socket.
    assert one_fcgiwrap_at_a_time("fcgiwrap -c 4 -- -s help", {}) is None


def test_the_advice_keeps_the_wrappers_and_puts_options_before_the_end_of_options():
    # The php-cgi advice dropped nice and env's other settings; the fcgiwrap
    # advice put -c 4 after "--", where it is no option.
    from gemfcgi.check import one_fcgiwrap_at_a_time, one_php_at_a_time

    def advice(warning):
        return warning[warning.index('(spawn "') + 8:-2]

    for command, advised in [
        ("nice -n 5 php-cgi -d x=1", "nice -n 5 env PHP_FCGI_CHILDREN=4 php-cgi -d x=1"),
        ("env -i PATH=/usr/bin php-cgi", "env -i PATH=/usr/bin PHP_FCGI_CHILDREN=4 php-cgi"),
        ("env PHP_FCGI_CHILDREN=1 A=2 php-cgi", "env A=2 PHP_FCGI_CHILDREN=4 php-cgi"),
        ("env -u PHP_FCGI_CHILDREN php-cgi", "env -u PHP_FCGI_CHILDREN PHP_FCGI_CHILDREN=4 php-cgi"),
        ("env A=1 nohup php-cgi", "env A=1 nohup env PHP_FCGI_CHILDREN=4 php-cgi"),
    ]:
        assert advice(one_php_at_a_time(command, {})) == advised, command
    assert advice(one_fcgiwrap_at_a_time("fcgiwrap -- -c 4", {})) == "fcgiwrap -c 4 -- -c 4"
    assert advice(one_fcgiwrap_at_a_time("nice fcgiwrap -f -- x", {})) == "nice fcgiwrap -f -c 4 -- x"
    assert advice(one_fcgiwrap_at_a_time("fcgiwrap -f", {})) == "fcgiwrap -f -c 4"


def test_a_spawned_programs_socket_too_long_in_the_temporary_directory_is_an_error(tmp_path, monkeypatch):
    # "AF_UNIX path too long" at every start, every request a 42.
    import tempfile

    from gemfcgi.check import spawn_socket_too_long

    deep = tmp_path / ("d" * (100 - len(str(tmp_path))))
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    assert spawn_socket_too_long() == (
        f"fastcgi spawn: its socket would be 137 bytes long in the temporary directory {deep}, over the "
        "107 a unix socket's address holds (set TMPDIR to a shorter one)")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert spawn_socket_too_long() is None


def test_a_chroot_any_user_may_write_to_is_warned_of_for_spawned_programs_sockets(tmp_path):
    # The workers connect by path: after a removal, another user's socket
    # put at it got every request.
    import os

    from gemfcgi.check import spawn_directory_open_to_others

    os.chmod(tmp_path, 0o1777)
    assert spawn_directory_open_to_others(str(tmp_path)) == (
        f"fastcgi spawn: its socket is made at the top of the chroot {tmp_path}, which any user may "
        "write to: should its directory be removed, another user could put a socket of their own at its "
        "path, where the workers send requests (let only root write there)")
    os.chmod(tmp_path, 0o755)
    assert spawn_directory_open_to_others(str(tmp_path)) is None
    assert spawn_directory_open_to_others(None) is None
