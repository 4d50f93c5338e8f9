"""
``proxy`` blocks end to end: a front gemfcgi relays requests to upstreams.

The main upstream is a second gemfcgi, started from a gmid.conf like the front.
It listens on unix sockets, reached through ``Forwarder``s: plain byte relays
from a TCP port, the ``relay-to`` of the front, the second of which keeps the
PROXY v1 lines it passes on (the upstream reads them with ``haproxy:unix:``).
The front sends the upstream's port (the forwarder's) in the URL, and in the
PROXY line as the destination, so the upstream's port check passes either
way. The faults come from small hand-written peers (``tests/proxy_peers.py``),
which also record what the front sends them byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gemfcgi.certificates import make_self_signed, write_key_pair
from tests.certs import issue, write
from tests.fastcgi_apps.harness import free_port
from tests.proxy_peers import Blackhole, Forwarder, Peer, Scripted, mute, not_tls
from tests.support import (
    TWISTD,
    Reply,
    ServerProcess,
    client_context,
    read_to_end,
    start_server,
)

BIG = os.urandom(4 * 1024 * 1024 + 12345)
FRONT_PAGE = b"# front local\n"
BACKEND_TIMEOUT = 3.0
FAULT_WAIT = 120.0  # a client's patience with a fault that takes the front a while (timeouts)

UPSTREAM_CONFIG = """
server "*.test" {{
    alias "localhost"
    listen on 127.0.0.1 port 0
    cert "{d}/peer.pem"
    key "{d}/peer.key"
    root "{d}/upstream"
    location "/members/*" {{ require client ca "{d}/upstream-ca.pem" }}
}}
"""

SERVER = """
server "{host}" {{
    listen on 127.0.0.1 port 0
{aliases}    cert "{d}/front.pem"
    key "{d}/front.key"
    root "{d}/front"
{proxies}}}
"""


def proxy(relay: str, *options: str, match: str = "") -> str:
    """One proxy block: ``relay`` is what follows ``relay-to``."""
    body = "".join(f"        {option}\n" for option in (f"relay-to {relay}", *options))
    head = f"proxy {match} " if match else "proxy "
    return f"    {head}{{\n{body}    }}\n"


def server_block(d: Path, host: str, *proxies: str, aliases: tuple[str, ...] = ()) -> str:
    alias_lines = "".join(f'    alias "{alias}"\n' for alias in aliases)
    return SERVER.format(host=host, d=d, aliases=alias_lines, proxies="".join(proxies))


def local(port: int) -> str:
    return f'"127.0.0.1" port {port}'


# -- the world: certificates, upstreams, peers, the front ----------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("proxy")
    d.chmod(0o755)
    for name, hosts in (("front", ["localhost", "127.0.0.1"]), ("peer", ["localhost", "127.0.0.1"]),
                        ("elsewhere", ["elsewhere.example"])):
        cert_pem, key_pem = make_self_signed(hosts)
        write_key_pair(d / f"{name}.pem", d / f"{name}.key", cert_pem, key_pem)
    upstream_ca, stranger_ca, gate_ca = (issue(f"{n} ca", ca=True) for n in ("upstream", "stranger", "gate"))
    write(d, "upstream-ca", upstream_ca)
    write(d, "gate-ca", gate_ca)
    identities = {
        "front-member": write(d, "front-member", issue("the front", upstream_ca)),
        "front-stranger": write(d, "front-stranger", issue("the front", stranger_ca)),
        "member": write(d, "member", issue("member", gate_ca)),
        "outsider": write(d, "outsider", issue("outsider", stranger_ca)),
    }
    (d / "front").mkdir()
    (d / "front" / "index.gmi").write_bytes(FRONT_PAGE)
    upstream = d / "upstream"
    (upstream / "members").mkdir(parents=True)
    (upstream / "index.gmi").write_text("# upstream\n")
    (upstream / "page.gmi").write_text("# upstream page\n")
    (upstream / "members" / "index.gmi").write_text("# members\n")
    (upstream / "big.bin").write_bytes(BIG)
    return d, identities


@pytest.fixture(scope="module")
def upstream(world):
    """A gemfcgi on two unix sockets, plain and PROXY, each behind a TCP forwarder."""
    d, _ = world
    (d / "upstream.conf").write_text(UPSTREAM_CONFIG.format(d=d))
    plain, proxied = d / "up.sock", d / "up-proxied.sock"
    process = ServerProcess([*TWISTD, "-n", "--pidfile=", "gemfcgi", "-c", str(d / "upstream.conf"),
                             "--listen", f"unix:{plain}", "--listen", f"haproxy:unix:{proxied}"])
    forwarders = []
    try:
        for name in (plain, proxied):
            process.wait_for_log(rf"listening on {re.escape(str(name))} ", timeout=15)
        forwarders = [Forwarder(str(plain)), Forwarder(str(proxied), proxy_header=True)]
        process.plain, process.proxied = forwarders
        yield process
    finally:
        for forwarder in forwarders:
            forwarder.close()
        process.stop()


@pytest.fixture(scope="module")
def peers(world):
    d, _ = world
    made = {
        "scripted": Scripted(str(d / "peer.pem"), str(d / "peer.key")),
        "plain": Scripted(),
        "elsewhere": Scripted(str(d / "elsewhere.pem"), str(d / "elsewhere.key")),
        "wants-a-certificate": Scripted(str(d / "peer.pem"), str(d / "peer.key"),
                                        client_ca=str(d / "upstream-ca.pem")),
        "mute": Peer(mute),
        "not-tls": Peer(not_tls),
        "blackhole": Blackhole(),
    }
    yield made
    for peer in made.values():
        peer.close()


@pytest.fixture(scope="module")
def front(world, upstream, peers):
    d, ids = world
    up = local(upstream.plain.port)
    refused = free_port()
    blocks = [
        server_block(d, "localhost", proxy(up)),
        server_block(
            d, "mixed.test",
            proxy(up, match='for-host "mixed.test" port "*"'),
            proxy(local(refused), match='for-host "m*" port "*"'),
            proxy(up, match='for-host "portless.test"'),  # port 1965 only
            aliases=("local.test", "portless.test"),
        ),
        server_block(d, "client-cert.test", proxy(up, *key_pair(ids["front-member"]))),
        server_block(d, "stranger-cert.test", proxy(up, *key_pair(ids["front-stranger"]))),
        server_block(d, "no-cert.test", proxy(up)),
        server_block(d, "gate.test", proxy(up, f'require client ca "{d}/gate-ca.pem"')),
        server_block(d, "pv1.test", proxy(local(upstream.proxied.port), "proxy-v1")),
        server_block(d, "scripted.test", proxy(local(peers["scripted"].port))),
        server_block(d, "pv1-tls.test", proxy(local(peers["scripted"].port), "proxy-v1")),
        server_block(d, "sni.test", proxy(local(peers["scripted"].port), 'sni "localhost"')),
        server_block(d, "plain.test", proxy(local(peers["plain"].port), "use-tls off")),
        server_block(d, "pv1-plain.test", proxy(local(peers["plain"].port), "use-tls off", "proxy-v1")),
        server_block(d, "misnamed.test", proxy(local(peers["elsewhere"].port))),
        server_block(d, "misnamed-off.test", proxy(local(peers["elsewhere"].port), "verifyname off")),
        server_block(d, "misnamed-sni.test",
                     proxy(local(peers["elsewhere"].port), 'sni "elsewhere.example"')),
        server_block(d, "wants-cert.test", proxy(local(peers["wants-a-certificate"].port))),
        server_block(d, "pv1-to-plain.test", proxy(up, "proxy-v1")),
        server_block(d, "plain-to-pv1.test", proxy(local(upstream.proxied.port))),
        server_block(d, "refused.test", proxy(local(refused))),
        server_block(d, "nowhere.test", proxy('"no-such-host.invalid"')),
        server_block(d, "blackhole.test", proxy(local(peers["blackhole"].port))),
        server_block(d, "mute.test", proxy(local(peers["mute"].port))),
        server_block(d, "not-tls.test", proxy(local(peers["not-tls"].port))),
    ]
    (d / "front.conf").write_text("".join(blocks))
    # A short backend timeout, so that the upstream that never answers fails in seconds.
    process = start_server("-c", str(d / "front.conf"), "--backend-timeout", str(BACKEND_TIMEOUT))
    process.upstreams = {
        "upstream": f"127.0.0.1:{upstream.plain.port}",
        "upstream-proxied": f"127.0.0.1:{upstream.proxied.port}",
        "refused": f"127.0.0.1:{refused}",
        "nowhere": "no-such-host.invalid:1965",
        **{name: f"127.0.0.1:{peer.port}" for name, peer in peers.items()},
    }
    yield process
    process.stop()


def key_pair(identity: tuple[str, str]) -> tuple[str, str]:
    cert, key = identity
    return f'cert "{cert}"', f'key "{key}"'


# -- a client and what to look for in the logs ---------------------------------------------


def exchange(front, host: str, path: str = "/", identity=None, timeout: float = 30.0,
             read=read_to_end) -> tuple[Reply, int]:
    """One request to the front; the reply and the client's own port."""
    context = client_context(*identity) if identity else client_context()
    raw = socket.create_connection(("127.0.0.1", front.port), timeout=timeout)
    client_port = raw.getsockname()[1]
    tls = context.wrap_socket(raw, server_hostname=host)
    tls.sendall(f"gemini://{host}:{front.port}{path}\r\n".encode())
    data, clean = read(tls)
    tls.close()
    header, _, body = data.partition(b"\r\n")
    return Reply(header, body, clean), client_port


def get(front, host: str, path: str = "/", **kwargs) -> Reply:
    return exchange(front, host, path, **kwargs)[0]


def access_line(server, since: int, client: str, url: str, status: int) -> re.Match:
    return server.wait_for_log(rf"{re.escape(client)} GET {re.escape(url)} {status}\b", since=since)


def warning(server, since: int, *patterns: str, timeout: float = 30.0) -> re.Match:
    """A warning line, logged after ``since``, that matches every one of ``patterns``."""
    lookaheads = "".join(f"(?=[^\\n]*(?i:{pattern}))" for pattern in ("#warn\\]", *patterns))
    return server.wait_for_log(f"(?m)^{lookaheads}[^\\n]*$", since=since, timeout=timeout)


def named(upstream: str) -> str:
    return re.escape(upstream) + r"(?!\d)"


def assert_still_serving(front) -> None:
    reply = get(front, "local.test")
    assert (reply.header, reply.body) == (b"20 text/gemini", FRONT_PAGE)


# -- 1. relaying a page ---------------------------------------------------------------------


def test_a_page_comes_back_whole_with_close_notify_and_the_upstreams_status_is_logged(front):
    before = len(front.log)
    reply, client_port = exchange(front, "localhost", "/page.gmi")
    assert (reply.header, reply.body, reply.clean_close) == (b"20 text/gemini", b"# upstream page\n", True)
    access_line(front, before, f"127.0.0.1:{client_port}", "gemini://localhost/page.gmi", 20)
    # A connection of one request is not worth two log lines of its factory.
    assert "Starting factory" not in "".join(front.log[before:])


def test_the_upstream_gets_the_clients_url_with_the_upstreams_port(front, peers):
    scripted = peers["scripted"]
    count = len(scripted.records)
    reply = get(front, "scripted.test", "/some/path?a=b%20c")
    assert (reply.header, reply.body) == (b"20 text/plain", b"scripted /some/path\n")
    record = scripted.next_record(count)
    expected = f"gemini://scripted.test:{scripted.port}/some/path?a=b%20c\r\n".encode()
    assert record.request == expected, record.request
    assert record.proxy_line == b""


def test_sni_is_the_sni_option_and_none_for_an_ip_address(front, peers):
    scripted = peers["scripted"]
    count = len(scripted.records)
    assert get(front, "scripted.test", "/a").status == 20
    assert get(front, "sni.test", "/b").status == 20
    first, second = scripted.next_record(count), scripted.next_record(count + 1)
    assert (first.request.startswith(b"gemini://scripted.test"), first.sni) == (True, None)
    assert (second.request.startswith(b"gemini://sni.test"), second.sni) == (True, "localhost")


def test_a_big_body_arrives_whole(front):
    reply = get(front, "localhost", "/big.bin", timeout=120)
    assert reply.header == b"20 application/octet-stream"
    digest = hashlib.sha256
    assert (len(reply.body), digest(reply.body).hexdigest()) == (len(BIG), digest(BIG).hexdigest())
    assert reply.clean_close


def client_program(name: str) -> str:
    """A client installed in the virtualenv (beside this Python) or on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    executable = shutil.which(name, path=search)
    if executable is None:
        pytest.fail(f"{name} is not installed (pip install {name})")
    return executable


def test_gemcall_and_agunua_read_a_relayed_page(front, tmp_path):
    url = f"gemini://localhost:{front.port}/page.gmi"
    gemcall = subprocess.run([client_program("gemcall"), "-s", "-u", url],
                             check=False, capture_output=True, timeout=60)
    assert gemcall.stdout == b"20 text/gemini\n# upstream page\n", gemcall.stderr
    agunua = subprocess.run([client_program("agunua"), "--insecure", url],
                            check=False, capture_output=True, timeout=60,
                            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert agunua.stdout.strip() == b"# upstream page", agunua.stderr


# -- 2. replies other than 2x ------------------------------------------------------------------


def test_a_non_success_reply_is_relayed_as_its_header_only(front):
    before = len(front.log)
    reply, client_port = exchange(front, "localhost", "/missing.gmi")
    assert (reply.header, reply.body) == (b"51 not found", b"")
    access_line(front, before, f"127.0.0.1:{client_port}", "gemini://localhost/missing.gmi", 51)


def test_a_non_success_body_from_the_upstream_is_dropped(front):
    reply = get(front, "scripted.test", "/gone")
    assert (reply.header, reply.body) == (b"51 not here", b"")


def test_after_a_non_success_header_the_upstream_connection_is_closed_whatever_it_does(front, peers):
    scripted = peers["scripted"]
    count = len(scripted.records)
    reply = get(front, "scripted.test", "/gone-kept-open")
    assert (reply.header, reply.body, reply.clean_close) == (b"51 not here", b"", True)
    # The upstream answers no close_notify: the front must not wait for one.
    assert scripted.next_record(count).closed.wait(30), "the upstream connection was left open"


# -- 3. which requests are proxied -------------------------------------------------------------


def test_only_requests_that_match_a_proxy_block_are_proxied(front):
    # mixed.test matches two blocks, the first of which relays to the upstream;
    # portless.test's block names no port, so it takes URLs on port 1965 only.
    assert get(front, "mixed.test").body == b"# upstream\n"
    for host in ("local.test", "portless.test"):
        reply = get(front, host)
        assert (host, reply.header, reply.body) == (host, b"20 text/gemini", FRONT_PAGE)


# -- 4. a client certificate for the upstream ---------------------------------------------------


@pytest.mark.parametrize("host, header, body", [
    ("client-cert.test", b"20 text/gemini", b"# members\n"),  # signed by the CA the upstream requires
    ("stranger-cert.test", b"61", b""),  # signed by another CA
    ("no-cert.test", b"60", b""),  # no cert/key in the proxy block
])
def test_the_front_presents_its_certificate_to_the_upstream(front, host, header, body):
    reply = get(front, host, "/members/")
    assert (reply.header[:len(header)], reply.body) == (header, body), reply.header


# -- 5. proxy-v1 ------------------------------------------------------------------------------


def test_proxy_v1_gives_the_upstream_the_clients_address(front, upstream):
    front_before, upstream_before = len(front.log), len(upstream.log)
    reply, client_port = exchange(front, "pv1.test", "/")
    assert (reply.header, reply.body) == (b"20 text/gemini", b"# upstream\n")
    assert upstream.proxied.proxy_lines[-1] == (
        f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {upstream.proxied.port}\r\n".encode())
    client = f"127.0.0.1:{client_port}"
    access_line(front, front_before, client, "gemini://pv1.test/", 20)
    access_line(upstream, upstream_before, client, "gemini://pv1.test/", 20)


def test_the_proxy_v1_line_comes_in_plaintext_before_the_tls_handshake(front, peers):
    scripted = peers["scripted"]
    count = len(scripted.records)
    reply, client_port = exchange(front, "pv1-tls.test", "/whole")
    assert (reply.header, reply.body) == (b"20 text/plain", b"whole body\n")
    proxy_line = scripted.next_record(count).proxy_line
    assert proxy_line == f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {scripted.port}\r\n".encode()


def test_the_proxy_v1_line_comes_first_then_the_request_line(front, peers):
    plain = peers["plain"]
    count = len(plain.records)
    reply, client_port = exchange(front, "pv1-plain.test", "/x?y")
    assert (reply.header, reply.body) == (b"20 text/plain", b"scripted /x\n")
    record = plain.next_record(count)
    assert record.proxy_line == f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {plain.port}\r\n".encode()
    assert record.request == f"gemini://pv1-plain.test:{plain.port}/x?y\r\n".encode(), record.request


# -- 6. require client ca in the proxy block --------------------------------------------------


@pytest.mark.parametrize("identity, header, body", [
    (None, b"60", b""),
    ("outsider", b"61", b""),
    ("member", b"20 text/gemini", b"# upstream\n"),
])
def test_require_client_ca_in_the_proxy_block(front, world, identity, header, body):
    _, ids = world
    reply = get(front, "gate.test", "/", identity=ids[identity] if identity else None)
    assert (reply.header[:len(header)], reply.body) == (header, body), reply.header


# -- 7. faults --------------------------------------------------------------------------------

MALFORMED = r"protocol|header|status|crlf|1029|clos|eof|malformed|invalid|digit"


@pytest.mark.parametrize("host, path, meta, upstream_name, fault", [
    ("refused.test", "/", "proxy error", "refused", r"refused"),
    ("nowhere.test", "/", "proxy error", "nowhere", r"dns|resolv|look ?up|not known|name|address"),
    ("blackhole.test", "/", "proxy error", "blackhole", r"not connected after 5 s"),  # no connect in time
    ("mute.test", "/", "timeout", "mute", r"time"),  # no TLS handshake within 5 s
    ("not-tls.test", "/", "handshake failed", "not-tls", r"not TLS: for a plaintext upstream, write use-tls off"),
    ("misnamed.test", "/whole", "handshake failed", "elsewhere", r"name|certificate|verif|handshake"),
    # TLS 1.3: the upstream refuses the missing client certificate after the front's side
    # of the handshake is done.
    ("wants-cert.test", "/whole", "handshake failed", "wants-a-certificate",
     r"handshake failed: refused after the handshake: .*certificate"),
    # A PROXY header one end sends and the other does not expect, either way.
    ("pv1-to-plain.test", "/", "handshake failed", "upstream", r"does it read PROXY headers\?"),
    ("plain-to-pv1.test", "/", "handshake failed", "upstream-proxied",
     r"if it listens with proxy-v1, this block needs proxy-v1 too"),
    ("scripted.test", "/silent", "timeout", "scripted", r"time"),  # no reply header in time
    ("scripted.test", "/no-crlf", "protocol error", "scripted", MALFORMED),
    ("scripted.test", "/code-99", "protocol error", "scripted", MALFORMED),
    ("scripted.test", "/code-09", "protocol error", "scripted", MALFORMED),
    ("scripted.test", "/one-digit", "protocol error", "scripted", MALFORMED),
    ("scripted.test", "/letters", "protocol error", "scripted", MALFORMED),
    ("scripted.test", "/nothing", "protocol error", "scripted", MALFORMED),
    ("scripted.test", "/half-header", "protocol error", "scripted", MALFORMED),
])
def test_a_fault_gets_43_and_a_warning_naming_the_upstream(front, host, path, meta, upstream_name, fault):
    before = len(front.log)
    reply, client_port = exchange(front, host, path, timeout=FAULT_WAIT)
    assert (reply.header, reply.body) == (f"43 {meta}".encode(), b"")
    warning(front, before, named(front.upstreams[upstream_name]), fault)
    access_line(front, before, f"127.0.0.1:{client_port}", f"gemini://{host}{path}", 43)
    assert_still_serving(front)


def test_an_upstream_listening_for_a_proxy_header_says_when_none_came(front, upstream):
    before = len(upstream.log)
    assert get(front, "plain-to-pv1.test", "/").header == b"43 handshake failed"
    upstream.wait_for_log(r"malformed PROXY header .*: no PROXY header but a TLS handshake "
                          r"\(the client sends none: is this listener's proxy-v1 meant\?\); "
                          "connection closed", since=before, timeout=10)


def test_a_body_the_upstream_breaks_off_is_cut_without_close_notify(front):
    before = len(front.log)
    reply = get(front, "scripted.test", "/cut")
    assert (reply.header, reply.body) == (b"20 text/plain", b"partial")
    assert not reply.clean_close  # the client can tell the body is not whole
    warning(front, before, named(front.upstreams["scripted"]),
            r"cut|short|clos|incomplete|truncat|eof|notify|broken|lost")
    assert_still_serving(front)


def test_a_body_that_stalls_while_the_client_reads_is_cut_after_the_backend_timeout(front):
    before = len(front.log)
    reply = get(front, "scripted.test", "/stall", timeout=FAULT_WAIT)
    assert (reply.header, reply.body, reply.clean_close) == (b"20 text/plain", b"the start", False)
    warning(front, before, named(front.upstreams["scripted"]),
            f"reply timeout: no body data for {BACKEND_TIMEOUT:g} s; body cut short")


def test_a_plaintext_body_the_upstream_resets_is_cut_without_close_notify(front):
    before = len(front.log)
    reply = get(front, "plain.test", "/reset")
    assert (reply.header, reply.body, reply.clean_close) == (b"20 text/plain", b"partial", False)
    warning(front, before, named(front.upstreams["plain"]),
            r"reply truncated: connection lost \(.*\); body cut short")


def test_a_reply_the_upstream_ends_with_close_notify_ends_with_close_notify(front):
    reply = get(front, "scripted.test", "/whole")
    assert (reply.header, reply.body, reply.clean_close) == (b"20 text/plain", b"whole body\n", True)


# -- 8. plain TCP, and the upstream's name ------------------------------------------------------


def test_use_tls_off_speaks_plain_gemini_to_the_upstream(front, peers):
    plain = peers["plain"]
    count = len(plain.records)
    reply = get(front, "plain.test", "/whole")
    assert (reply.header, reply.body) == (b"20 text/plain", b"whole body\n")
    # A plaintext peer read the request line: no TLS came first (its exact form is checked above).
    record = plain.next_record(count)
    assert record.proxy_line == b"" and record.request.startswith(b"gemini://plain.test")
    assert record.request.endswith(b"/whole\r\n")


def test_verifyname_off_takes_a_certificate_for_another_name(front):
    # The default (misnamed.test) refuses the same upstream: see the fault tests.
    reply = get(front, "misnamed-off.test", "/whole")
    assert (reply.header, reply.body) == (b"20 text/plain", b"whole body\n")


def test_the_sni_option_is_the_name_the_certificate_must_have(front, peers):
    elsewhere = peers["elsewhere"]
    count = len(elsewhere.records)
    reply = get(front, "misnamed-sni.test", "/whole")
    assert (reply.header, reply.body) == (b"20 text/plain", b"whole body\n")
    assert elsewhere.next_record(count).sni == "elsewhere.example"


# -- 9. a client that goes away, a client that reads slowly -------------------------------------


def read_some(amount: int):
    """A reader that stops after the header and ``amount`` body bytes, leaving the rest unread."""
    def read(tls) -> tuple[bytes, bool]:
        data = b""
        while b"\r\n" not in data or len(data.partition(b"\r\n")[2]) < amount:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
        return data, False
    return read


def test_a_client_that_goes_away_mid_body_closes_the_upstream_connection(front, peers):
    scripted = peers["scripted"]
    count = len(scripted.records)
    reply, _ = exchange(front, "scripted.test", "/endless", read=read_some(256 * 1024))
    assert reply.header == b"20 application/octet-stream"
    assert len(reply.body) >= 256 * 1024 and set(reply.body) == {ord("e")}
    record = scripted.next_record(count)
    assert record.closed.wait(60), "the upstream connection was left open"
    assert_still_serving(front)


def test_a_client_that_stops_reading_holds_the_upstream_back(front, peers):
    scripted = peers["scripted"]
    count = len(scripted.records)
    limit = 64 * 1024 * 1024
    raw = socket.create_connection(("127.0.0.1", front.port), timeout=30)
    tls = client_context().wrap_socket(raw, server_hostname="scripted.test")
    try:
        tls.sendall(f"gemini://scripted.test:{front.port}/endless\r\n".encode())
        assert tls.recv(64).startswith(b"20 ")
        record = scripted.next_record(count)
        # The client reads no more: the upstream must be made to wait, well short of
        # the limit, rather than the front buffering whatever it sends.
        previous, deadline = -1, time.monotonic() + 60
        while record.sent != previous and record.sent < limit and time.monotonic() < deadline:
            previous = record.sent
            time.sleep(1.0)
        assert record.sent < limit and record.sent == previous, f"{record.sent} bytes taken from the upstream"
    finally:
        tls.close()
    assert record.closed.wait(60), "the upstream connection was left open"


# -- 10. a reload ---------------------------------------------------------------------------------


def test_a_reload_moves_a_proxy_block_to_another_upstream(world, peers, tmp_path):
    d, _ = world
    config = tmp_path / "front.conf"
    first, second = peers["scripted"], peers["plain"]
    config.write_text(server_block(d, "moving.test", proxy(local(first.port))))
    server = start_server("-c", str(config))
    try:
        count = len(first.records)
        assert get(server, "moving.test", "/whole").body == b"whole body\n"
        assert first.next_record(count).request.startswith(b"gemini://moving.test:")
        config.write_text(server_block(d, "moving.test", proxy(local(second.port), "use-tls off")))
        before = len(server.log)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("configuration reloaded", since=before)
        count = len(second.records)
        assert get(server, "moving.test", "/whole").body == b"whole body\n"
        assert second.next_record(count).request == f"gemini://moving.test:{second.port}/whole\r\n".encode()
    finally:
        server.stop()


@pytest.mark.parametrize("relay_to", ["127.0.0.1", "0.0.0.0"])
def test_a_proxy_block_that_relays_to_its_own_server_answers_43_at_the_first_turn(
    tmp_path, certificate, relay_to
):
    # Each turn of the loop took a connection: one request made 4,000
    # nested hops, 8,000 descriptors and 435 MB more, until the limit. A
    # relay to 0.0.0.0, which reaches 127.0.0.1, went on so for ever.
    from tests.support import raw_exchange

    cert, key = certificate
    port = free_port()
    (tmp_path / "root").mkdir()
    config = tmp_path / "loop.conf"
    config.write_text(
        f'server "localhost" {{\n  alias "loop.test"\n  listen on 127.0.0.1 port {port}\n'
        f'  cert "{cert}"\n  key "{key}"\n  root "{tmp_path}/root"\n'
        f'  proxy for-host "loop.test" port {port} {{ relay-to "{relay_to}" port {port} sni "loop.test" '
        f'verifyname off }}\n}}\n'
    )
    server = start_server("-c", str(config))
    try:
        data, clean, _ = raw_exchange(port, f"gemini://loop.test:{port}/x\r\n".encode(), sni="loop.test")
        server.wait_for_log(r"GET gemini://loop\.test/x 43 ")
        time.sleep(0.5)
    finally:
        server.stop()
    assert (data, clean) == (b"43 proxy loop: relayed to this server itself\r\n", True)
    assert len(re.findall(r"GET gemini://loop\.test/x 43 ", server.log)) == 2, server.log
    assert "a proxy block of this server relayed the request to this server" in server.log


def test_relaying_twice_through_the_same_process_is_no_loop_but_coming_back_to_a_block_is(
    tmp_path, certificate
):
    # A first check took any request from this process's own relay to any
    # proxy block for a loop: a legitimate second hop got 43.
    from tests.support import raw_exchange

    cert, key = certificate
    p1, p2, p3 = free_port(), free_port(), free_port()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "page.gmi").write_text("# third hop\n")
    relay = 'sni "{host}" verifyname off'
    config = tmp_path / "hops.conf"
    config.write_text(
        'server "c.test" {\n  alias "l.test"\n'
        + "".join(f"  listen on 127.0.0.1 port {p}\n" for p in (p1, p2, p3))
        + f'  cert "{cert}"\n  key "{key}"\n  root "{tmp_path}/root"\n'
        f'  proxy for-host "c.test" port {p1} {{ relay-to "127.0.0.1" port {p2} '
        + relay.format(host="c.test") + " }\n"
        f'  proxy for-host "c.test" port {p2} {{ relay-to "127.0.0.1" port {p3} '
        + relay.format(host="c.test") + " }\n"
        f'  proxy for-host "l.test" port {p1} {{ relay-to "127.0.0.1" port {p2} '
        + relay.format(host="l.test") + " }\n"
        f'  proxy for-host "l.test" port {p2} {{ relay-to "127.0.0.1" port {p1} '
        + relay.format(host="l.test") + " }\n}\n"
    )
    server = start_server("-c", str(config), listeners=3)
    try:
        hops, clean, _ = raw_exchange(p1, f"gemini://c.test:{p1}/page.gmi\r\n".encode(), sni="c.test")
        loop, _, _ = raw_exchange(p1, f"gemini://l.test:{p1}/x\r\n".encode(), sni="l.test")
        server.wait_for_log(r"GET gemini://l\.test(:\d+)?/x 43 .*\n(.|\n)*GET gemini://l\.test(:\d+)?/x 43 ")
        time.sleep(0.5)
    finally:
        server.stop()
    assert (hops, clean) == (b"20 text/gemini\r\n# third hop\n", True)
    assert loop == b"43 proxy loop: relayed to this server itself\r\n"
    # Two blocks, each once, then the first again: three turns.
    assert len(re.findall(r"GET gemini://l\.test(?::\d+)?/x 43 ", server.log)) == 3, server.log


def test_under_log_off_the_loop_warning_and_a_refused_port_name_no_path_or_query(tmp_path, certificate):
    # The loop's warning and access line, and a refused port's access line,
    # came before the server's 'log off' was looked at: they held the path
    # and query (a token).
    from tests.support import raw_exchange

    cert, key = certificate
    port = free_port()
    config = tmp_path / "quiet.conf"
    config.write_text(
        f'server "loop.test" {{\n  listen on 127.0.0.1 port {port}\n  cert "{cert}"\n  key "{key}"\n'
        f'  log off\n  proxy {{ relay-to "127.0.0.1" port {port} sni "loop.test" verifyname off }}\n}}\n'
    )
    server = start_server("-c", str(config))
    try:
        data, _, _ = raw_exchange(port, f"gemini://loop.test:{port}/draft-SECRET?t=SECRET\r\n".encode(),
                                  sni="loop.test")
        refused, _, _ = raw_exchange(port, b"gemini://loop.test:1/draft-SECRET?t=SECRET\r\n", sni="loop.test")
        server.wait_for_log(r"gemini://loop\.test/\.\.\. \(log off\): a proxy block of this server relayed")
        time.sleep(0.5)
    finally:
        server.stop()
    assert data == b"43 proxy loop: relayed to this server itself\r\n"
    assert refused == b"53 port not served here\r\n"
    assert "SECRET" not in server.log
    assert not re.search(r"GET gemini://loop\.test", server.log), server.log
