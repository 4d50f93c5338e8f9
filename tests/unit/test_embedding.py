"""The API README documents for Twisted code that knows its visitors by certificate."""

from __future__ import annotations

from dataclasses import replace

from twisted.internet.task import Clock

import gemfcgi
from gemfcgi.certificates import make_self_signed, write_key_pair
from gemfcgi.config import model
from gemfcgi.server import GeminiProtocol
from tests.certs import issue
from tests.fakes import TLSStringTransport


def greet(client, request, settings):
    """The handler shown in README, word for word in what it does."""
    visitor = client.tls.client_certificate
    if visitor is None:
        client.respond(60, "a client certificate is required")
        return
    client.send_header(20, "text/gemini", f"# Hello, {visitor.common_name}\n".encode())
    client.finish()


def visit(service, certificate=None) -> bytes:
    protocol = GeminiProtocol(service.site, Clock())
    transport = TLSStringTransport()
    transport.handle.peer_certificate = certificate
    protocol.makeConnection(transport)
    protocol.handshakeCompleted()
    protocol.dataReceived(b"gemini://localhost/\r\n")
    return transport.value()


def make_service(tmp_path):
    cert_pem, key_pem = make_self_signed(["localhost"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    config = model.Config(servers=[model.Server(
        name="localhost", cert=str(tmp_path / "c.pem"), key=str(tmp_path / "k.pem"),
        options=model.LocationOptions(root=str(tmp_path)))])
    service = gemfcgi.makeService(config, listen=["tcp:0:interface=127.0.0.1"])
    service.site.handlers["static"] = greet
    return service


def test_a_handler_greets_the_visitor_by_certificate(tmp_path):
    alice, _ = issue("alice")
    assert visit(make_service(tmp_path), alice) == b"20 text/gemini\r\n# Hello, alice\n"


def test_a_handler_sees_no_certificate_as_none(tmp_path):
    assert visit(make_service(tmp_path)) == b"60 a client certificate is required\r\n"


def test_the_certificate_facts_match_the_fastcgi_parameters(tmp_path):
    from cryptography.hazmat.primitives import hashes

    alice, _ = issue("alice")
    seen = []
    service = make_service(tmp_path)
    service.site.handlers["static"] = lambda client, request, settings: (
        seen.append(client.tls.client_certificate), client.respond(51, "seen"))
    visit(service, alice)
    [facts] = seen
    assert isinstance(facts, gemfcgi.ClientCertificate)
    assert (facts.subject, facts.issuer, facts.common_name) == ("/CN=alice", "/CN=alice", "alice")
    assert facts.sha256 == alice.fingerprint(hashes.SHA256()).hex()
    assert facts.serial == alice.serial_number
    assert (facts.not_before, facts.not_after) == (alice.not_valid_before_utc, alice.not_valid_after_utc)


def key_pair(tmp_path):
    cert_pem, key_pem = make_self_signed(["localhost"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    return tmp_path / "c.pem", tmp_path / "k.pem"


def test_a_configuration_twistd_gemfcgi_would_refuse_is_refused_with_its_file_and_line(tmp_path):
    import pytest

    from gemfcgi.config import ConfigError, load_config

    cert, key = key_pair(tmp_path)
    conf = tmp_path / "gmid.conf"
    conf.write_text(
        'server "localhost" {\n'
        "  listen on 127.0.0.1 port 0\n"
        f'  cert "{cert}"\n  key "{key}"\n'
        f'  root "{tmp_path / "not-there"}"\n'
        f'  location "/app/*" {{ fastcgi spawn "no-such-program-here" }}\n'
        "}\n"
    )
    config, _ = load_config(str(conf))
    with pytest.raises(ConfigError) as raised:
        gemfcgi.makeService(config)
    assert str(raised.value).splitlines() == [
        f"{conf}:5: root {tmp_path / 'not-there'} is not a directory",
        f"{conf}:6: fastcgi spawn: program 'no-such-program-here' not found in PATH (or not executable)",
    ]
    built = model.Config(servers=[model.Server(
        name="localhost", cert=str(cert), key=str(key),
        options=model.LocationOptions(root=str(tmp_path / "not-there")))])
    with pytest.raises(ConfigError, match=r"^<config>: root .*not-there is not a directory$"):
        gemfcgi.makeService(built)


def test_values_the_parser_would_refuse_are_refused_in_a_configuration_built_in_python(tmp_path):
    # A Config built in Python met no parser: each of these was served, and
    # failed at every request (a code given as "51"), failed the start with
    # a traceback (port 70000), or went out in a reply header (the lang).
    import pytest

    from gemfcgi.config import ConfigError

    cert, key = key_pair(tmp_path)

    def built(listen_port=0, **options):
        return model.Config(servers=[model.Server(
            name="localhost", cert=str(cert), key=str(key), listens=[model.Listen("127.0.0.1", listen_port)],
            options=model.LocationOptions(**{"root": str(tmp_path), **options}))])

    tcp = model.FastCGITCP("127.0.0.1", 9000)
    for config, message in [
        (built(block=model.BlockReturn(code="51")),
         "config.servers[0].options.block.code must be int, not str ('51')"),
        (built(block=model.BlockReturn(code=99)), "config.servers[0].options.block: invalid block code 99 (use 10-19 or 30-69; 2x codes "
                                                  "cannot be blocked to)"),
        (built(listen_port=70000), "config.servers[0].listens[0].port: invalid port number 70000 (use 0 to 65535, or a service name in quotes)"),
        (built(listen_port="99999"), "config.servers[0].listens[0].port: invalid port number 99999 (use 0 to 65535, or a service name in quotes)"),
        (built(strip=-1), "config.servers[0].options.strip: invalid strip number -1 (use 1 or more; leave strip out to strip nothing)"),
        (built(lang=5), "config.servers[0].options.lang must be str or None, not int (5)"),
        (built(lang="en\r\n20 text/html"), "config.servers[0].options.lang: lang 'en\\r\\n20 text/html' contains the control character "
                                            "'\\r': no reply may hold it"),
        (built(auto_index="no"), "config.servers[0].options.auto_index must be bool or None, not str ('no')"),
        (built(index="/etc/passwd"), "config.servers[0].options.index: index '/etc/passwd' must name a file "
                                     "inside the directory (no '..' and no leading '/')"),
        (built(root=5), "config.servers[0].options.root must be str or None, not int (5)"),
        (built(fastcgi=model.FastCGI(address=tcp, strip=-3)),
         "config.servers[0].options.fastcgi.strip: invalid fastcgi strip number -3 (use 0 or more)"),
        (built(fastcgi=model.FastCGI(address=tcp, params=[("SCRIPT_NAME", 5)])),
         "config.servers[0].options.fastcgi.params[0][1] must be str, not int (5)"),
        (replace(built(), prefork=0), "config.prefork: invalid prefork number 0 (use 1 to 15)"),
        (model.Config(servers=[model.Server(5)]), "config.servers[0].name must be str, not int (5)"),
    ]:
        with pytest.raises(ConfigError) as raised:
            gemfcgi.makeService(config)
        assert str(raised.value) == f"<config>: {message}", message
    # A reload is held to the same.
    service = gemfcgi.makeService(built(), listen=["tcp:0:interface=127.0.0.1"])
    with pytest.raises(ConfigError, match="invalid block code 99"):
        service.reload(built(block=model.BlockReturn(code=99)))
    # What the parser takes is taken: a 3x block, a lang, a strip, prefork 2.
    assert gemfcgi.makeService(replace(built(), prefork=2)) is not None
    assert gemfcgi.makeService(built(listen_port=1965, block=model.BlockReturn(31, "/there"),
                                     lang="en", strip=2)) is not None


def test_what_only_twistd_gemfcgi_applies_is_said_to_be_ignored(tmp_path):
    from twisted.logger import globalLogPublisher

    from gemfcgi.config import load_config

    cert, key = key_pair(tmp_path)
    (tmp_path / "jail").mkdir()
    conf = tmp_path / "gmid.conf"
    (tmp_path / "capsule").mkdir()
    conf.write_text(
        'user "nobody"\n'
        f'chroot "{tmp_path / "jail"}"\n'
        "prefork 2\n"
        f'log {{ access "{tmp_path / "access.log"}"; syslog off }}\n'
        'server "localhost" {\n'
        "  listen on 127.0.0.1 port 0\n"
        f'  cert "{cert}"\n  key "{key}"\n'
        f'  root "{tmp_path / "capsule"}"\n'
        "}\n"
    )
    config, _ = load_config(str(conf))
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        # Not applied, so not applied halfway either: the root and the
        # access file are where they are written, not inside the chroot.
        service = gemfcgi.makeService(config)
        service.startService()
        service.stopService()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert (tmp_path / "access.log").exists()
    assert not (tmp_path / "jail" / str(tmp_path).lstrip("/") / "access.log").exists()
    warnings = [e["diagnostic"] for e in logged if "diagnostic" in e and e["log_level"].name == "warn"]
    assert warnings == [
        f"{conf}:1: user 'nobody' is not applied in this program: it keeps its own privileges "
        "(twistd's --uid and --gid set them; to serve from a chroot, use chroot with twistd gemfcgi)",
        f"{conf}:2: chroot '{tmp_path / 'jail'}' is not applied in this program: it keeps its own "
        "privileges (twistd's --uid and --gid set them; to serve from a chroot, use chroot with "
        "twistd gemfcgi)",
        f"{conf}:3: prefork 2 is not applied in this program: one process serves",
    ]


def test_two_services_in_one_program_each_log_their_own_requests(tmp_path):
    services = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        service = make_service(tmp_path / name)
        service.config.log = model.LogSettings(access=str(tmp_path / f"{name}.log"), syslog=False)
        services.append(service)
    for service in services:
        service.startService()
    try:
        for service in services:
            protocol = GeminiProtocol(service.site, Clock())
            protocol.makeConnection(TLSStringTransport())
            protocol.handshakeCompleted()
            protocol.dataReceived(b"gemini://localhost/\r\n")
            protocol.connectionLost(None)
    finally:
        for service in services:
            service.stopService()
    assert [len((tmp_path / f"{name}.log").read_text().splitlines()) for name in ("one", "two")] == [1, 1]


def test_a_reload_is_checked_as_makeservice_checks_a_start(tmp_path):
    import pytest
    from twisted.logger import capturedLogs

    from gemfcgi.config import ConfigError

    cert, key = key_pair(tmp_path)
    (tmp_path / "capsule").mkdir()
    good = model.Config(servers=[model.Server(
        name="localhost", cert=str(cert), key=str(key),
        options=model.LocationOptions(root=str(tmp_path / "capsule")))])
    service = gemfcgi.makeService(good, listen=["tcp:0:interface=127.0.0.1"])
    service.startService()
    try:
        bad = replace(good, servers=[replace(good.servers[0], options=model.LocationOptions(
            root=str(tmp_path / "not-there")))])
        with pytest.raises(ConfigError, match=r"^<config>: root .*not-there is not a directory$"):
            service.reload(bad)
        assert service.config is good
        with capturedLogs() as logs:
            service.reload(replace(good, prefork=4))
        assert [e["diagnostic"] for e in logs if "diagnostic" in e] == [
            "<config>: prefork 4 is not applied in this program: one process serves"
        ]
    finally:
        service.stopService()


def test_arguments_twistd_would_refuse_are_refused_by_makeservice(tmp_path):
    import pytest

    from gemfcgi.fastcgi.client import FastCGITimeouts
    from gemfcgi.server import Timeouts

    cert, key = key_pair(tmp_path)
    config = model.Config(servers=[model.Server(
        name="localhost", cert=str(cert), key=str(key), options=model.LocationOptions(root=str(tmp_path)))])
    for arguments, kind, message in [
        (dict(listen="tcp:1965"), TypeError, "listen takes a list of endpoint strings, not one: "
                                             "listen=['tcp:1965']"),
        (dict(timeouts={"request": 5}), TypeError, "timeouts must be a gemfcgi.server.Timeouts, not dict"),
        (dict(max_connections=0), ValueError, "max_connections must be a whole number, at least 1, "
                                              "not 0"),
        (dict(max_connections="5"), ValueError, "max_connections must be a whole number, at least 1, "
                                                "not '5'"),
        (dict(drain_timeout=-1), ValueError, "drain_timeout must be 0 or more seconds, or None for no "
                                             "limit, not -1"),
        (dict(drain_timeout=float("nan")), ValueError, "drain_timeout must be 0 or more seconds, or "
                                                       "None for no limit, not nan"),
        # Taken for None, an empty list listened on every address.
        (dict(listen=[]), ValueError, "listen is empty: give endpoint strings, or None for the "
                                      "configuration's listen on lines"),
        (dict(max_connections=True), ValueError, "max_connections must be a whole number, at least "
                                                 "1, not True"),
        # A string failed every connection deep in the timers; nan and a
        # negative number quietly turned a timeout off, or every slow
        # client into a 59.
        (dict(timeouts=Timeouts(request="5")), ValueError, "timeouts.request takes a number of seconds "
                                                           "above 0, not '5'"),
        (dict(timeouts=Timeouts(idle=float("nan"))), ValueError, "timeouts.idle takes a number of "
                                                                 "seconds above 0, not nan"),
        (dict(timeouts=Timeouts(request=-1)), ValueError, "timeouts.request takes a number of seconds "
                                                          "above 0, not -1"),
        (dict(fastcgi_timeouts=FastCGITimeouts(kill=0)), ValueError, "fastcgi_timeouts.kill takes a "
                                                                     "number of seconds above 0, not 0"),
        (dict(listen=[b"tcp:0"]), TypeError, "listen takes endpoint strings, not b'tcp:0'"),
        # Above what a float holds: an OverflowError at every connection.
        (dict(timeouts=Timeouts(request=10**400)), ValueError, "timeouts.request takes a number of "
                                                               f"seconds above 0, not {10**400!r}"),
        (dict(drain_timeout=10**400), ValueError, "drain_timeout must be 0 or more seconds, or None "
                                                  f"for no limit, not {10**400!r}"),
        (dict(listen=[1965]), TypeError, "listen takes endpoint strings, not 1965"),
    ]:
        with pytest.raises(kind) as raised:
            gemfcgi.makeService(config, **arguments)
        assert str(raised.value) == message
    # load_config's pair given whole: a traceback deep in the path code.
    for wrong, named in [((config, []), "tuple: load_config returns (config, warnings), give its first item"),
                         (None, "NoneType"), ("gmid.conf", "str")]:
        with pytest.raises(TypeError) as raised:
            gemfcgi.makeService(wrong, listen=["tcp:0"])
        assert str(raised.value) == f"config must be a gemfcgi.config.model.Config, not {named}"
    assert gemfcgi.makeService(config, listen=["tcp:0"], timeouts=Timeouts(), max_connections=1,
                               drain_timeout=0) is not None
    assert gemfcgi.makeService(config, listen=["tcp:0"], drain_timeout=None).drain_timeout is None
    # A generator is read once: the endpoints it gives are the ones listened on.
    given = (description for description in ["tcp:0:interface=127.0.0.1"])
    assert gemfcgi.makeService(config, listen=given).listen == ["tcp:0:interface=127.0.0.1:backlog=1024"]


def test_a_fastcgi_location_on_a_site_wired_by_hand_gets_42_and_says_what_is_missing(tmp_path):
    from twisted.logger import capturedLogs

    config = model.Config(servers=[model.Server(
        name="localhost", options=model.LocationOptions(root=str(tmp_path)),
        locations=[model.Location("/app/*", model.LocationOptions(
            fastcgi=model.FastCGI(address=model.FastCGISocket("/run/app.sock"))))])])
    site = gemfcgi.build_site(config)
    protocol = GeminiProtocol(site, Clock())
    transport = TLSStringTransport()
    protocol.makeConnection(transport)
    protocol.handshakeCompleted()
    with capturedLogs() as logs:
        protocol.dataReceived(b"gemini://localhost/app/x\r\n")
    assert transport.value() == b"42 CGI error\r\n"
    assert [e["log_level"].name for e in logs if "no FastCGI backends" in e.get("log_format", "")] == ["error"]
    assert not [e for e in logs if e.get("log_failure") is not None]


def _listening(port) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port.getHost().port), timeout=2).close()
    except OSError:
        return False
    return True


def test_a_second_start_of_a_running_service_leaves_it_serving(tmp_path):
    # It closed every listener ("Address already in use" on its own port)
    # and the service stopped answering.
    service = make_service(tmp_path)
    service.startService()
    try:
        [port] = service.ports
        service.startService()
        assert service.running and service.ports == [port] and _listening(port)
    finally:
        service.stopService()


def draining(tmp_path):
    """A started service whose stop waits for a connection in flight: (the service, the connection)."""
    service = make_service(tmp_path)
    service.startService()
    held = object()
    service.connections.add(held)
    return service, held


def test_a_start_while_the_stop_still_drains_is_refused_and_the_stop_ends_cleanly(tmp_path):
    # The stop's last steps, run after the drain, stopped the FastCGI
    # backends and closed the access file of the service started again.
    import pytest

    service, held = draining(tmp_path)
    stopping = service.stopService()
    assert not stopping.called
    with pytest.raises(RuntimeError, match="still stopping: start it again once the Deferred"):
        service.startService()
    assert not service.running
    service.connections.remove(held)
    from twisted.internet import reactor

    reactor.runUntilCurrent()  # the drain's end, in the next turn
    assert stopping.called
    service.startService()
    try:
        assert service.running and _listening(service.ports[0])
    finally:
        service.stopService()


def test_a_second_stop_while_the_first_drains_waits_for_the_same_end(tmp_path):
    # It went through the stop again and fired at once, before the first
    # had stopped the spawned programs: a program's own stop, then its
    # process's shutdown, left them running and their socket behind.
    service, held = draining(tmp_path)
    first, second = service.stopService(), service.stopService()
    assert not first.called and not second.called
    results: list = []
    first.addBoth(results.append)
    second.addBoth(results.append)
    service.connections.remove(held)
    from twisted.internet import reactor

    reactor.runUntilCurrent()
    assert first.called and second.called
    assert results[0] == results[1]  # the first caller's result kept, and given to the second too


def test_a_reload_given_load_configs_pair_says_what_to_give(tmp_path):
    import pytest

    service = make_service(tmp_path)
    with pytest.raises(TypeError) as raised:
        service.reload((service.config, []))
    assert str(raised.value) == ("config must be a gemfcgi.config.model.Config, not tuple: load_config "
                                 "returns (config, warnings), give its first item")


def test_a_reload_while_the_stop_drains_is_refused_and_starts_nothing(tmp_path):
    # It started the new configuration's spawned programs (and could open
    # its listeners), which the stop then had to end.
    import pytest

    service, held = draining(tmp_path)
    stopping = service.stopService()
    config = replace(service.config, servers=[replace(service.config.servers[0], locations=[
        model.Location("/app/*", model.LocationOptions(fastcgi=model.FastCGI(
            address=model.FastCGISpawn("python3 -m gemfcgi.demo.app"))))])])
    with pytest.raises(RuntimeError, match="stopping: a reload now would start what the stop has to end"):
        service.reload(config)
    assert [s for s in service.fastcgi] == []
    service.connections.remove(held)
    from twisted.internet import reactor

    reactor.runUntilCurrent()
    assert stopping.called


def test_a_service_started_outside_the_main_thread_serves_without_its_signals(tmp_path, monkeypatch):
    # Python sets signal handlers in the main thread only: a start from a
    # reactor run in a thread of its own raised ValueError half-way, its
    # listeners open and its FastCGI programs never started.
    import threading

    from twisted.logger import capturedLogs

    from gemfcgi import service as service_module

    monkeypatch.setattr(service_module, "_signal_shares", {})  # the first service of its process
    service = make_service(tmp_path)
    raised = []

    def start() -> None:
        try:
            service.startService()
        except Exception as error:  # what the thread would have lost
            raised.append(error)

    with capturedLogs() as logs:
        thread = threading.Thread(target=start)
        thread.start()
        thread.join(30)
    try:
        assert raised == [] and service.running and _listening(service.ports[0])
        said = [e["log_format"].format(**e) for e in logs if "is not answered" in e.get("log_format", "")]
        assert said == [f"{name} is not answered: gemfcgi was started outside the main thread, where no "
                        "signal handler can be set" for name in ("SIGUSR1", "SIGUSR2")]
    finally:
        service.stopService()


def test_twistd_opens_the_sockets_before_it_gives_up_its_privileges(tmp_path):
    # twistd calls privilegedStartService before --uid and --gid take
    # effect; the sockets (a port below 1024, a root-owned directory) were
    # only opened in startService, after.
    service = make_service(tmp_path)
    service.privilegedStartService()
    try:
        [port] = service.ports
        assert not service.running and _listening(port)
        service.startService()
        assert service.ports == [port] and _listening(port)
    finally:
        service.stopService()


def test_each_reloader_of_a_program_reloads_its_own_service_on_one_hangup(tmp_path):
    # Only the last Reloader's service was reloaded: each took SIGHUP over
    # and did not call the handler before it.
    import signal

    from gemfcgi.reload import Reloader
    from tests.unit.test_service import ThreadedClock

    reactor = ThreadedClock()
    reloaded = []
    reloaders = [Reloader(name, lambda: (model.Config(), []), lambda config, name=name: reloaded.append(name),
                          reactor) for name in ("first", "second")]
    calls = []
    before = signal.signal(signal.SIGHUP, lambda number, frame: calls.append(number))
    try:
        for reloader in reloaders:
            reloader.startService()
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        assert sorted(reloaded) == ["first", "second"] and calls == [signal.SIGHUP]
        reloaders[0].stopService()
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        assert sorted(reloaded) == ["first", "second", "second"]
        reloaders[1].stopService()
        assert signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None) is None and calls == [signal.SIGHUP] * 3
    finally:
        signal.signal(signal.SIGHUP, before)


def test_relative_paths_lead_from_where_makeservice_was_called_after_twistd_moves_on(tmp_path, monkeypatch):
    # twistd's --rundir changes directory after the .tac made the service:
    # the root was checked from the first directory and served from the
    # second (every request 51), and the access file was made there.
    cert_pem, key_pem = make_self_signed(["localhost"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    (tmp_path / "root1").mkdir()
    (tmp_path / "root1" / "index.gmi").write_text("# root one\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    config = model.Config(servers=[model.Server(
        name="localhost", cert="c.pem", key="k.pem", options=model.LocationOptions(root="root1"))],
        log=model.LogSettings(access="access.log", syslog=False))
    service = gemfcgi.makeService(config, listen=["tcp:0:interface=127.0.0.1"])
    monkeypatch.chdir(tmp_path / "elsewhere")
    protocol = GeminiProtocol(service.site, Clock())
    transport = TLSStringTransport()
    protocol.makeConnection(transport)
    protocol.handshakeCompleted()
    protocol.dataReceived(b"gemini://localhost/\r\n")
    assert transport.value() == b"20 text/gemini\r\n# root one\n"
    assert config.log.access == str(tmp_path / "access.log")
    service.reload(config)  # read again from here, the paths still lead where they did
    assert service.config.servers[0].options.root == str(tmp_path / "root1")


def test_an_asynchronous_handler_answers_and_its_failure_gets_40(tmp_path):
    # A Deferred or a coroutine a handler returned was dropped: a failure
    # left the client waiting until the stop, unlogged (or logged as
    # "coroutine was never awaited").
    from twisted.internet.defer import Deferred, fail
    from twisted.logger import capturedLogs

    later = Deferred()

    async def coroutine_greeting(client, request, settings):
        await later
        client.send_header(20, "text/gemini", b"# later\n")
        client.finish()

    async def coroutine_failing(client, request, settings):
        await later
        raise ValueError("the database is away")

    handlers = {
        "coroutine": coroutine_greeting,
        "coroutine-failing": coroutine_failing,
        "deferred-failing": lambda client, request, settings: fail(ValueError("no such row")),
    }
    replies = {}
    with capturedLogs() as events:
        for name, handler in handlers.items():
            (tmp_path / name).mkdir()
            service = make_service(tmp_path / name)
            service.site.handlers["static"] = handler
            protocol = GeminiProtocol(service.site, Clock())
            replies[name] = transport = TLSStringTransport()
            protocol.makeConnection(transport)
            protocol.handshakeCompleted()
            protocol.dataReceived(b"gemini://localhost/\r\n")
        later.callback(None)
    assert {name: transport.value() for name, transport in replies.items()} == {
        "coroutine": b"20 text/gemini\r\n# later\n",
        "coroutine-failing": b"40 internal error\r\n",
        "deferred-failing": b"40 internal error\r\n",
    }
    failures = [event["log_failure"].getErrorMessage() for event in events if "log_failure" in event]
    assert sorted(failures) == ["no such row", "the database is away"]


def test_a_server_block_an_earlier_one_hides_is_warned_of_for_a_configuration_built_in_python(tmp_path):
    # twistd gemfcgi's parser warns of it; makeService said nothing, and
    # the second block was never used.
    from twisted.logger import capturedLogs

    cert_pem, key_pem = make_self_signed(["localhost"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    (tmp_path / "capsule").mkdir()
    servers = [model.Server(name=name, cert=str(tmp_path / "c.pem"), key=str(tmp_path / "k.pem"),
                            options=model.LocationOptions(root=str(tmp_path / "capsule")))
               for name in ("*.example", "www.example")]
    with capturedLogs() as events:
        gemfcgi.makeService(model.Config(servers=servers), listen=["tcp:0:interface=127.0.0.1"])
    assert [event["diagnostic"] for event in events if "diagnostic" in event] == [
        '<config>: server "www.example" is shadowed by server "*.example" at <config> '
        "(gemfcgi uses the first matching block)"
    ]


def test_the_privileged_start_reaches_the_children_and_a_stop_without_a_start_closes_the_access_file(
    tmp_path
):
    # twistd gemfcgi's Reloader is a child of the service: it took SIGHUP
    # in its privilegedStartService, before any program is spawned, and
    # no longer did once the service opened its sockets there.
    import signal

    from gemfcgi.reload import Reloader
    from tests.unit.test_service import ThreadedClock

    service = make_service(tmp_path)
    service.config.log.access = str(tmp_path / "access.log")
    reloader = Reloader("test", lambda: (service.config, []), lambda config: None, ThreadedClock())
    reloader.setServiceParent(service)
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        service.privilegedStartService()
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        opened = service._opened[0]
        service.stopService()
        assert opened._fd is None
    finally:
        reloader.stopService()
        signal.signal(signal.SIGHUP, before)
