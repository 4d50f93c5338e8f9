"""Which sockets a configuration's ``listen on`` lines open, before any is opened."""

from __future__ import annotations

import os

import pytest

from twisted.logger import capturedLogs

from gemfcgi.config.model import Config, Listen, Server
from gemfcgi.service import plan_listeners


def planned(*servers: Server) -> list[tuple[str, list[str]]]:
    config = Config(servers=list(servers))
    return [
        (listener.description, [config.servers[i].name for i in listener.servers])
        for listener in plan_listeners(config, None)
    ]


def test_a_wildcard_and_an_address_on_one_port_are_one_socket_serving_both():
    # gmid opens both (SO_REUSEPORT); on Linux the second bind would fail.
    assert planned(
        Server("a", listens=[Listen("*", 1965)]),
        Server("b", listens=[Listen("127.0.0.1", 1965), Listen("::1", 1965)]),
    ) == [("tcp6:1965:interface=\\:\\::backlog=1024", ["a", "b"])]


def test_an_ipv4_wildcard_takes_ipv4_addresses_only():
    assert planned(
        Server("a", listens=[Listen("127.0.0.1", 1965), Listen("::1", 1965)]),
        Server("b", listens=[Listen("0.0.0.0", 1965)]),
    ) == [
        ("tcp6:1965:interface=\\:\\:1:backlog=1024", ["a"]),
        ("tcp:1965:interface=0.0.0.0:backlog=1024", ["b", "a"]),
    ]


def test_other_ports_and_proxied_listeners_stay_apart():
    assert planned(
        Server("a", listens=[Listen("*", 1965)]),
        Server("b", listens=[Listen("127.0.0.1", 1966), Listen("127.0.0.1", 1965, proxy_v1=True)]),
    ) == [
        ("tcp6:1965:interface=\\:\\::backlog=1024", ["a"]),
        ("tcp:1966:interface=127.0.0.1:backlog=1024", ["b"]),
        ("haproxy:tcp:1965:interface=127.0.0.1:backlog=1024", ["b"]),
    ]


def test_servers_on_the_same_address_share_its_socket_first_one_first():
    assert planned(
        Server("a", listens=[Listen("127.0.0.1", 0)]),
        Server("b", listens=[Listen("127.0.0.1", 0)]),
    ) == [("tcp:0:interface=127.0.0.1:backlog=1024", ["a", "b"])]


def test_an_ssl_endpoint_is_refused_before_it_reads_any_certificate():
    from twisted.internet.testing import MemoryReactor

    from gemfcgi.service import ListenError, server_endpoint

    for description in (
        "ssl:1965", "ssl:1965:privateKey=k.pem:certKey=c.pem", "haproxy:ssl:1965", "tls:/etc/gemini:port=1965",
    ):
        with pytest.raises(ListenError) as raised:
            server_endpoint(MemoryReactor(), description)
        assert str(raised.value) == (
            f"{description}: gemfcgi does TLS itself, with each server's certificate: "
            "listen on a tcp: endpoint (same port and options, without the certificate ones)"
        )
    assert server_endpoint(MemoryReactor(), "tcp:1965") is not None


def test_an_endpoint_that_wraps_the_factory_is_refused_and_its_socket_closed():
    # An endpoint plugin with a TLS layer of its own: gemfcgi's transport on
    # its port would fail every connection.
    from twisted.internet import endpoints, reactor
    from twisted.internet.protocol import Factory
    from twisted.protocols.policies import WrappingFactory

    from gemfcgi.service import ListenError, ListenerService

    ports: list = []

    class WrappingEndpoint:
        def listen(self, factory):
            inner = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
            return inner.listen(WrappingFactory(factory)).addCallback(lambda port: ports.append(port) or port)

    listener = ListenerService("wrapping:0", WrappingEndpoint(), Factory(), None, 0)
    said: list = []
    listener.on_listening = said.append
    with capturedLogs() as logs:
        with pytest.raises(ListenError) as raised:
            listener.startService()
    assert str(raised.value) == (
        "wrapping:0: this endpoint wraps connections in a protocol of its own; gemfcgi does TLS "
        "itself: listen on a tcp: or unix: endpoint"
    )
    assert listener.port is None and said == []
    assert not [e for e in logs if "listening on" in e.get("log_format", "")]  # never said to listen
    [port] = ports
    assert port.disconnecting  # closed on the reactor's next turn, as Twisted closes a port


@pytest.mark.parametrize("description", ["TLS:/etc/gemini:port=1965", "SSL:1965", "HAPROXY:Tls:1965"])
def test_endpoint_types_are_refused_in_any_case_as_twisted_finds_them(description):
    from twisted.internet.testing import MemoryReactor

    from gemfcgi.service import ListenError, server_endpoint

    with pytest.raises(ListenError, match="gemfcgi does TLS itself"):
        server_endpoint(MemoryReactor(), description)


def test_a_haproxy_prefix_in_capitals_still_reads_proxy_headers():
    from gemfcgi.proxyv1 import split_proxied

    assert split_proxied("HAPROXY:tcp:1965") == (True, "tcp:1965")
    assert split_proxied("HaProxy:unix:/run/g.sock") == (True, "unix:/run/g.sock")


def test_an_endpoint_that_serves_one_stream_is_refused():
    from twisted.internet.defer import succeed
    from twisted.internet.protocol import Factory

    from gemfcgi.service import ListenError, ListenerService, server_endpoint
    from twisted.internet.testing import MemoryReactor

    with pytest.raises(ListenError, match="^stdio:: not a listening socket"):
        server_endpoint(MemoryReactor(), "stdio:")

    class OneStream:  # an endpoint plugin of that kind
        def listen(self, factory):
            return succeed(object())

    listener = ListenerService("onestream:", OneStream(), Factory(), None, 0)
    with pytest.raises(ListenError, match="^onestream:: not a listening socket"):
        listener.startService()
    assert listener.port is None


def test_a_unix_socket_that_cannot_be_made_says_why_without_twisteds_lock_file():
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    from gemfcgi.service import listen_failed, server_endpoint

    description = "unix:/no-such-directory-here/gemini.sock"
    failures: list = []
    server_endpoint(reactor, description).listen(Factory()).addErrback(failures.append)
    [failure] = failures
    assert str(listen_failed(description, failure)) == f"{description}: No such file or directory"


def test_a_unix_listener_is_logged_by_its_path():
    from twisted.internet.address import UNIXAddress
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi.service import ListenerService

    class Port:
        def getHost(self):
            return UNIXAddress(b"/run/gemini/g\xc3\xa9.sock")

    listener = ListenerService("unix:/run/gemini/gé.sock", None, None, None, 0)
    with capturedLogs() as logs:
        listener._listening(Port())
    assert [formatEvent(e) for e in logs] == [
        "listening on /run/gemini/gé.sock (unix:/run/gemini/gé.sock)"
    ]


def test_a_misspelt_listen_option_is_named_without_a_traceback():
    from twisted.internet.testing import MemoryReactor

    from gemfcgi.service import ListenError, server_endpoint

    with pytest.raises(ListenError) as raised:
        server_endpoint(MemoryReactor(), "tcp:1965:interfce=127.0.0.1")
    assert str(raised.value) == "tcp:1965:interfce=127.0.0.1: unknown option 'interfce'"


@pytest.mark.parametrize("written, said", [
    ("tcp:abc", "tcp:abc: 'abc' is not a number"),
    ("tcp:1965:backlog=x", "tcp:1965:backlog=x: 'x' is not a number"),
    ("unix:/run/g.sock:mode=zz", "unix:/run/g.sock:mode=zz: 'zz' is not a number"),
])
def test_a_listen_string_that_is_no_number_where_one_goes_is_said_as_written(written, said):
    # The error echoed a string the user never wrote (the backlog added)
    # and Python's "invalid literal for int() with base 10".
    from twisted.internet.testing import MemoryReactor

    from gemfcgi.service import ListenError, server_endpoint, with_backlog

    with pytest.raises(ListenError) as raised:
        server_endpoint(MemoryReactor(), with_backlog(written))
    assert str(raised.value) == said


def test_an_endpoint_type_in_capitals_is_the_type():
    # "TCP:1965" was refused: "Unknown endpoint type: 'tcp'".
    from twisted.internet import endpoints
    from twisted.internet.testing import MemoryReactor

    from gemfcgi.service import server_endpoint

    assert isinstance(server_endpoint(MemoryReactor(), "TCP:1965:interface=127.0.0.1"),
                      endpoints.TCP4ServerEndpoint)
    # And said as systemd's in any case (Python's IndexError showed).
    from gemfcgi.service import ListenError

    with pytest.raises(ListenError, match=r"^Systemd:domain=INET:index=7: no such socket was passed by systemd"):
        server_endpoint(MemoryReactor(), "Systemd:domain=INET:index=7")


def test_a_socket_passed_that_does_not_listen_is_refused(monkeypatch):
    import socket

    from gemfcgi.endpoints import inherited_socket_problem

    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        assert inherited_socket_problem(bound.fileno(), socket.AF_INET) == (
            f"descriptor {bound.fileno()} is not a listening socket (no listen() on it)")
        bound.listen()
        assert inherited_socket_problem(bound.fileno(), socket.AF_INET) is None
    with socket.socket(type=socket.SOCK_DGRAM) as datagram:
        assert "is not a stream socket" in inherited_socket_problem(datagram.fileno(), socket.AF_INET)
    # A descriptor that is no socket at all (a file systemd was told to pass).
    import os

    read_end, write_end = os.pipe()
    try:
        assert inherited_socket_problem(read_end, socket.AF_INET) == (
            f"descriptor {read_end}: Socket operation on non-socket")
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("given, opened", [
    ("tcp:1965:interface=127.0.0.1", "tcp:1965:interface=127.0.0.1:backlog=1024"),
    ("tcp6:1965:interface=\\:\\:", "tcp6:1965:interface=\\:\\::backlog=1024"),
    ("unix:/run/gemini.sock", "unix:/run/gemini.sock:backlog=1024"),
    ("haproxy:tcp:1965", "haproxy:tcp:1965:backlog=1024"),
    ("tcp:1965:backlog=64", "tcp:1965:backlog=64"),
    ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    # An escaped colon is part of the path; an escaped backslash is not an escape.
    ("unix:/run/a\\:backlog=5", "unix:/run/a\\:backlog=5:backlog=1024"),
    ("unix:/run/a\\\\:backlog=5", "unix:/run/a\\\\:backlog=5"),
])
def test_a_listen_string_without_a_backlog_gets_the_one_listen_on_lines_get(given, opened):
    # Twisted's default of 50 refused connections queued while the server
    # was busy, where a configuration's listener took them all.
    from gemfcgi.service import with_backlog

    assert with_backlog(given) == opened


@pytest.mark.parametrize("new, open_now, switched", [
    ("tcp6:1965:interface=\\:\\::backlog=1024", ["tcp:1965:interface=127.0.0.1:backlog=1024"], True),
    ("tcp:1965:interface=127.0.0.1:backlog=1024", ["tcp6:1965:interface=\\:\\::backlog=1024"], True),
    ("tcp:1965:interface=127.0.0.1:backlog=1024", ["haproxy:tcp:1965:interface=0.0.0.0"], True),
    ("tcp:1965:interface=127.0.0.1:backlog=1024", ["tcp:1966:interface=0.0.0.0"], False),
    ("tcp:1965:interface=127.0.0.2", ["tcp:1965:interface=127.0.0.1"], False),
    ("unix:/run/gemini.sock", ["tcp:1965:interface=0.0.0.0"], False),
])
def test_a_reload_moving_a_port_between_every_address_and_one_is_told_it_needs_a_restart(
    new, open_now, switched
):
    # It said only "Address already in use".
    from gemfcgi.service import wildcard_switched

    assert wildcard_switched(new, open_now) is switched


def test_the_reload_error_of_a_port_moved_to_every_address_says_why():
    from gemfcgi.config import model
    from gemfcgi.service import Listener, ListenError, opening_failed

    wanted = "tcp6:1965:interface=\\:\\::backlog=1024"
    problem = opening_failed(ListenError(f"{wanted}: Address already in use"),
                             Listener(wanted, [0], model.Origin("gmid.conf", 2)),
                             ["tcp:1965:interface=127.0.0.1:backlog=1024"])
    assert str(problem) == (
        f"{wanted}: Address already in use (moving a port between * and a specific address needs "
        "a restart: a reload opens its new sockets before it closes the old ones)")
    assert str(problem.origin) == "gmid.conf:2"


@pytest.mark.parametrize("environ, said", [
    ({}, "not socket-activated, or LISTEN_FDNAMES missing: systemd-socket-activate needs --fdname=NAME"),
    ({"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "gemini"},  # another process's
     "not socket-activated, or LISTEN_FDNAMES missing: systemd-socket-activate needs --fdname=NAME"),
    ({"LISTEN_FDS": "2", "LISTEN_PID": "self", "LISTEN_FDNAMES": "gemini:admin"},
     "2 passed, named gemini, admin; index= counts from 0"),
])
def test_a_systemd_socket_not_found_says_what_systemd_passed(environ, said):
    # A name written wrong was told LISTEN_FDNAMES was missing, which it was not.
    from twisted.python.systemd import ListenFDs

    from gemfcgi.service import _what_systemd_passed

    if environ.get("LISTEN_PID") == "self":
        environ = {**environ, "LISTEN_PID": str(os.getpid())}
    assert _what_systemd_passed(ListenFDs.fromEnvironment(environ)) == said
