"""A static capsule served over real TLS on a real socket."""

from __future__ import annotations

import os
import socket
import ssl
import time

import pytest

from gemfcgi.pagecache import SETTLED
from tests.support import client_context, fetch, memory_tls, pyopenssl_client, raw_exchange, read_to_end


def url(server, path="/"):
    return f"gemini://localhost:{server.port}{path}"


def test_empty_path_is_served_with_20_no_redirect(server):
    reply = fetch(server.port, f"gemini://localhost:{server.port}")
    assert reply.header == b"20 text/gemini"
    assert reply.body == b"# Home\n=> sub/ sub\n"


def test_slash_is_served_with_20(server):
    assert fetch(server.port, url(server)).header == b"20 text/gemini"


def test_directory_without_slash_gets_31_to_the_slash_form_keeping_the_query(server):
    assert fetch(server.port, url(server, "/sub")).header == b"31 /sub/"
    assert fetch(server.port, url(server, "/sub?x=1")).header == b"31 /sub/?x=1"


def test_directory_with_slash_serves_its_index(server):
    reply = fetch(server.port, url(server, "/sub/"))
    assert (reply.header, reply.body) == (b"20 text/gemini", b"# Sub\n")


def test_a_symlinks_type_is_that_of_the_name_asked_for_not_of_its_target(server):
    # gmid's rule: index.gmi -> README.md is served as text/gemini.
    assert fetch(server.port, url(server, "/project/")).header == b"20 text/gemini"
    assert fetch(server.port, url(server, "/project/index.gmi")).header == b"20 text/gemini"
    reply = fetch(server.port, url(server, "/notes.gmi"))
    assert (reply.header, reply.body) == (b"20 text/gemini", b"plain\n")
    assert fetch(server.port, url(server, "/project/README.md")).header == b"20 text/markdown"


def test_directory_without_index_gets_51(server):
    assert fetch(server.port, url(server, "/noindex/")).status == 51


def test_file_asked_for_as_a_directory_gets_51(server):
    assert fetch(server.port, url(server, "/sub/index.gmi")).header == b"20 text/gemini"
    assert fetch(server.port, url(server, "/sub/index.gmi/")).status == 51
    assert fetch(server.port, url(server, "/inside-link.gmi/")).status == 51
    assert fetch(server.port, url(server, "/data.bin/?x")).status == 51


@pytest.mark.parametrize(
    "path, mime",
    [
        ("/UPPER.GMI", "text/gemini"),
        ("/picture.PNG", "image/png"),
        ("/readme.md", "text/markdown"),
        ("/noindex/file.txt", "text/plain"),
        ("/data.bin", "application/octet-stream"),
    ],
)
def test_mime_type_comes_from_gmids_table_ignoring_case(server, path, mime):
    assert fetch(server.port, url(server, path)).meta == mime


def test_binary_file_arrives_intact(server):
    assert fetch(server.port, url(server, "/data.bin")).body == bytes(range(256))


def test_missing_file_gets_51(server):
    assert fetch(server.port, url(server, "/nothing-here.gmi")).status == 51


def test_fifo_is_never_opened_and_gets_51(server):
    assert fetch(server.port, url(server, "/fifo")).status == 51
    assert fetch(server.port, url(server)).status == 20


def test_unreadable_file_gets_51(server):
    assert fetch(server.port, url(server, "/secret.gmi")).status == 51


@pytest.mark.parametrize(
    "path",
    [
        "/../../../../etc/hostname",
        "/%2e%2e/%2e%2e/%2e%2e/etc/hostname",
        "/%2E%2E%2f%2E%2E%2fetc%2fhostname",
        "/sub/..%2f..%2f..%2fetc%2fhostname",
        "/escape.txt",
        "/escape-dir/hostname",
    ],
)
def test_nothing_resolves_outside_the_root(server, path):
    assert fetch(server.port, url(server, path)).status == 51


def test_symlink_inside_the_root_is_followed(server):
    assert fetch(server.port, url(server, "/inside-link.gmi")).body == b"# Home\n=> sub/ sub\n"


@pytest.mark.parametrize(
    "line, status",
    [
        (b"gemini://localhost:{port}/\r\n", 20),
        (b"gemini://localhost:{port}/missing\r\n", 51),
        (b"gemini://u@localhost:{port}/\r\n", 59),
        (b"gemini://localhost:{port}/#frag\r\n", 59),
        (b"https://localhost:{port}/\r\n", 53),
        (b"gemini://elsewhere.example:{port}/\r\n", 53),
        (b"gemini://localhost:1/\r\n", 53),
        (b"gemini://localhost/\r\n", 53),
        (b"\r\n", 59),
        (b"/\r\n", 59),
        (b"//localhost/\r\n", 59),
    ],
)
def test_every_outcome_ends_with_close_notify(server, line, status):
    data, clean, _ = raw_exchange(server.port, line.replace(b"{port}", str(server.port).encode()))
    assert int(data[:2]) == status
    assert clean, "connection closed without TLS close_notify"


def test_uri_of_1025_bytes_gets_59_and_1024_is_served(server):
    base = f"gemini://localhost:{server.port}/"
    longest = base + "a" * (1024 - len(base))
    assert fetch(server.port, longest).status == 51
    assert fetch(server.port, longest + "a").status == 59


def test_url_host_that_differs_from_sni_gets_53(server):
    reply = fetch(server.port, f"gemini://127.0.0.1:{server.port}/", sni="localhost")
    assert reply.status == 53


def test_a_percent_escaped_host_and_a_zero_padded_port_name_this_server(server):
    reply = fetch(server.port, f"gemini://local%68ost:0{server.port}/")
    assert (reply.header, reply.body) == (b"20 text/gemini", b"# Home\n=> sub/ sub\n")


def test_no_sni_lets_the_url_host_pick_the_server(server):
    assert fetch(server.port, url(server), sni=None).status == 20


def test_idle_client_gets_59_at_the_request_timeout(server):
    context = client_context()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            started = time.monotonic()
            tls.sendall(b"gemini://localhost")
            data = b""
            while True:
                chunk = tls.recv(1024)
                if not chunk:
                    break
                data += chunk
            waited = time.monotonic() - started
    assert data == b"59 request timeout\r\n"
    assert waited > 0.5


def test_client_that_never_handshakes_is_closed_at_the_handshake_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        started = time.monotonic()
        try:
            data = raw.recv(1024)
        except ConnectionResetError:
            data = b""
        waited = time.monotonic() - started
    assert data == b""
    assert waited > 0.5


def test_a_page_kept_in_memory_is_served_anew_once_it_changes(server, capsule):
    page = capsule / "changing.gmi"
    page.write_bytes(b"# first\n")
    page.chmod(0o644)
    long_ago = time.time() - 3600
    os.utime(page, (long_ago, long_ago))
    # Only a file left alone for SETTLED seconds is kept (gemfcgi.pagecache).
    time.sleep(SETTLED + 0.1)
    for _ in range(2):
        assert fetch(server.port, url(server, "/changing.gmi")).body == b"# first\n"
    # Rewritten in place, same size, with its old mtime put back: only the
    # ctime tells, and it must.
    page.write_bytes(b"# other\n")
    os.utime(page, (long_ago, long_ago))
    assert fetch(server.port, url(server, "/changing.gmi")).body == b"# other\n"
    page.unlink()
    assert fetch(server.port, url(server, "/changing.gmi")).status == 51


def test_access_log_has_one_line_per_request(server):
    fetch(server.port, url(server, "/sub/?logged"))
    match = server.wait_for_log(
        r"127\.0\.0\.1:\d+ GET gemini://localhost/sub/\?logged 20 text/gemini (\d+) [\d.]+ms"
    )
    assert int(match.group(1)) == len(b"20 text/gemini\r\n# Sub\n")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_large_file_to_a_slow_client_holds_memory_flat(server):
    pid = server.process.pid
    before = _rss_kib(pid)
    context = client_context()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(url(server, "/big.bin").encode() + b"\r\n")
            received = len(tls.recv(65536))
            peak = before
            for _ in range(20):
                time.sleep(0.1)
                received += len(tls.recv(65536))
                peak = max(peak, _rss_kib(pid))
    assert received > 0
    assert peak - before < 32 * 1024, f"server RSS grew by {peak - before} KiB"
    assert fetch(server.port, url(server)).status == 20


def read_while_truncated(tls, url_of_page: str, page) -> tuple[bytes, bool]:
    """Ask for ``page`` (20 MiB), cut it to 1 MiB once its reply has begun, and read to the end."""
    tls.sendall(url_of_page.encode() + b"\r\n")
    first = tls.recv(1024)
    assert first.startswith(b"20 application/octet-stream\r\n")
    with open(page, "r+b") as file:
        file.truncate(1024 * 1024)
    return read_to_end(tls, first)


def test_a_file_truncated_while_it_is_sent_ends_without_close_notify(server, capsule):
    page = capsule / "shrinking.bin"
    page.write_bytes(b"s" * (20 * 1024 * 1024))
    page.chmod(0o644)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        with client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            data, clean = read_while_truncated(tls, url(server, "/shrinking.bin"), page)
    assert not clean, "a body cut short must not end as a whole one"
    assert len(data) < 20 * 1024 * 1024
    server.wait_for_log(
        rf"{capsule / 'shrinking.bin'} ended at \d+ of its {20 * 1024 * 1024} bytes while it was sent "
        r"\(truncated\?\): 127\.0\.0\.1:\d+ gemini://localhost/shrinking\.bin cut short"
    )
    assert fetch(server.port, url(server)).status == 20


def test_a_file_rewritten_in_place_while_it_is_sent_ends_without_close_notify(server, capsule):
    # A file written over in place (cp truncates it first; here it keeps
    # its size throughout, so that no read can meet a shorter file): the
    # reply held old bytes, then new ones, and ended with close_notify, as
    # if whole.
    page = capsule / "rewritten.bin"
    size = 20 * 1024 * 1024
    page.write_bytes(b"A" * size)
    page.chmod(0o644)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        with client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(url(server, "/rewritten.bin").encode() + b"\r\n")
            first = tls.recv(1024)
            assert first.startswith(b"20 application/octet-stream\r\n")
            with open(page, "r+b") as file:
                file.write(b"B" * size)
            data, clean = read_to_end(tls, first)
    assert not clean, "a file rewritten while it was sent must not end as a whole one"
    assert b"B" in data  # the new bytes did reach the client
    server.wait_for_log(
        rf"{capsule / 'rewritten.bin'} was modified while it was sent \(\d+ bytes, {size} when "
        r"opened\): 127\.0\.0\.1:\d+ gemini://localhost/rewritten\.bin cut short"
    )
    # Once it stays as it is, it is sent whole.
    reply = fetch(server.port, url(server, "/rewritten.bin"))
    assert (reply.status, reply.body == b"B" * size, reply.clean_close) == (20, True, True)


def test_a_long_unicode_directory_without_slash_is_redirected_as_the_client_wrote_it(server, capsule):
    # Percent-encoded, this path would take 2,883 bytes, more than a META
    # may hold; the request, with the path as UTF-8, took 988.
    name = "/".join(["é" * 120] * 4)
    (capsule / name).mkdir(parents=True)
    (capsule / name / "index.gmi").write_text("# long\n")
    asked = url(server, "/" + name)
    assert len(asked.encode()) < 1024
    assert fetch(server.port, asked).header == f"31 /{name}/".encode()
    assert fetch(server.port, asked + "?q").header == f"31 /{name}/?q".encode()
    reply = fetch(server.port, asked + "/")
    assert (reply.header, reply.body) == (b"20 text/gemini", b"# long\n")
    short = "/".join(["é" * 10] * 2)
    (capsule / short).mkdir(parents=True)
    quoted = "/".join(["%C3%A9" * 10] * 2)
    assert fetch(server.port, url(server, "/" + short)).header == f"31 /{quoted}/".encode()


@pytest.mark.parametrize("space", ["\u00a0", "\u3000"])
def test_a_long_directory_of_spaces_an_iri_escapes_is_redirected_as_the_client_wrote_it(
    server, capsule, space
):
    # No-break and ideographic spaces were escaped even in the IRI form:
    # the target took some 1,500 bytes, and the client got "40 internal
    # error". Written as the client sent them, the target fits, and the
    # request that follows it fits as the first did.
    segment = "x" * 150 + space * 40 if space == "\u00a0" else "x" * 60 + space * 50
    name = "/".join([segment] * 4)
    (capsule / "nb" / name).mkdir(parents=True)
    (capsule / "nb" / name / "index.gmi").write_text("# deep\n")
    asked = url(server, f"/nb/{name}")
    assert len(asked.encode()) < 1024
    reply = fetch(server.port, asked)
    assert reply.header == f"31 /nb/{name}/".encode()
    followed = fetch(server.port, url(server, reply.header[3:].decode()))
    assert (followed.header, followed.body) == (b"20 text/gemini", b"# deep\n")


def wrapped_listener(kind: str, capsule, certificate, tmp_path):
    """
    Quick mode on a listener that keeps Twisted's own TLS layer: a unix
    socket, or a TCP port that reads a PROXY header first.
    """
    from tests.support import TWISTD, ServerProcess

    cert, key = certificate
    listen = f"unix:{tmp_path / 'gemini.sock'}" if kind == "unix" else "haproxy:tcp:0:interface=127.0.0.1"
    return ServerProcess([*TWISTD, "-n", "--pidfile=", "gemfcgi", "--root", str(capsule),
                          "--hostname", "localhost", "--cert", cert, "--key", key, "--listen", listen])


def connect_wrapped(kind: str, server, tmp_path) -> tuple[socket.socket, str]:
    """A socket to a ``wrapped_listener`` (its PROXY header sent), and the URL's host to ask for."""
    if kind == "unix":
        server.wait_for_log("listening on")
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        raw.settimeout(10)
        raw.connect(str(tmp_path / "gemini.sock"))
        return raw, "localhost"
    port = server.wait_listening()[0]
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    raw.sendall(f"PROXY TCP4 192.0.2.7 127.0.0.1 40000 {port}\r\n".encode())
    return raw, f"localhost:{port}"


@pytest.mark.parametrize("kind", ["unix", "haproxy"])
def test_a_handshake_flight_over_32_kib_goes_out_whole_on_wrapped_listeners(kind, capsule, tmp_path):
    # Twisted's layer sent 32 KiB of what OpenSSL made at a time: a
    # certificate of 2,000 names (46 KB) stopped there, and the client
    # waited out the handshake timeout (10 s) for the rest.
    from gemfcgi.certificates import make_self_signed, write_key_pair

    cert_pem, key_pem = make_self_signed(["localhost", *(f"n{n:05d}.example.org" for n in range(2000))])
    assert len(cert_pem) > 48 * 1024
    write_key_pair(tmp_path / "big.pem", tmp_path / "big.key", cert_pem, key_pem)
    server = wrapped_listener(kind, capsule, (str(tmp_path / "big.pem"), str(tmp_path / "big.key")), tmp_path)
    try:
        raw, where = connect_wrapped(kind, server, tmp_path)
        raw.settimeout(5)
        with raw, client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"gemini://{where}/\r\n".encode())
            assert read_to_end(tls)[0].split(b"\r\n", 1)[0] == b"20 text/gemini"
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["unix", "haproxy"])
def test_a_file_truncated_while_it_is_sent_ends_without_close_notify_on_wrapped_listeners(
    kind, capsule, certificate, tmp_path
):
    # Listeners that keep Twisted's own TLS layer sent the cut body's
    # close_notify, so the client took it for whole, and logged a KeyError
    # from a second connectionLost.
    server = wrapped_listener(kind, capsule, certificate, tmp_path)
    page = capsule / f"shrinking-{kind}.bin"
    page.write_bytes(b"s" * (20 * 1024 * 1024))
    page.chmod(0o644)
    try:
        raw, where = connect_wrapped(kind, server, tmp_path)
        with raw, client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            data, clean = read_while_truncated(tls, f"gemini://{where}/shrinking-{kind}.bin", page)
        assert not clean, "a body cut short must not end as a whole one"
        assert len(data) < 20 * 1024 * 1024
        server.wait_for_log(rf"shrinking-{kind}\.bin cut short")
        time.sleep(0.5)
        assert "Unhandled Error" not in server.log and "Traceback" not in server.log, server.log
    finally:
        server.stop()
        page.unlink()


@pytest.mark.parametrize("how", ["close_notify", "close_notify+FIN", "FIN"])
@pytest.mark.parametrize("kind", ["unix", "haproxy"])
def test_a_client_that_ends_its_side_after_the_request_gets_the_whole_reply_on_wrapped_listeners(
    kind, how, capsule, certificate, tmp_path
):
    # Twisted's TLS layer answered the client's close_notify with its own
    # and dropped the rest of the reply: 256 KiB of 5 MB arrived, ending as
    # if whole, and the access line counted all of it; a FIN lost it all.
    from OpenSSL import SSL

    server = wrapped_listener(kind, capsule, certificate, tmp_path)
    page = capsule / f"halfclosed-{kind}.bin"
    page.write_bytes(os.urandom(5 * 1024 * 1024))
    page.chmod(0o644)
    try:
        raw, where = connect_wrapped(kind, server, tmp_path)
        with raw:
            tls = pyopenssl_client(raw)
            tls.sendall(f"gemini://{where}/halfclosed-{kind}.bin\r\n".encode())
            if how.startswith("close_notify"):
                tls.shutdown()  # the client's side of TLS ends here
            if how.endswith("FIN"):
                raw.shutdown(socket.SHUT_WR)  # and of TCP
            received = b""
            while True:
                try:
                    received += tls.recv(65536)
                except SSL.ZeroReturnError:
                    break  # the server's close_notify: the reply is whole
            # The server's close_notify answered the client's, or no answer
            # can come after the client's FIN: it closes at once, without
            # waiting out its 2 s linger.
            ended = time.monotonic()
            assert raw.recv(1) == b""
            assert time.monotonic() - ended < 1.5
        assert received == b"20 application/octet-stream\r\n" + page.read_bytes()
        server.wait_for_log(rf"GET gemini://localhost/halfclosed-{kind}\.bin 20 application/octet-stream "
                            rf"{len(received)} ")
        # Before a request line, the client's end still ends the connection,
        # at once, without a request timeout's 59 in the log.
        raw, _ = connect_wrapped(kind, server, tmp_path)
        with raw, client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.unwrap()
        raw, _ = connect_wrapped(kind, server, tmp_path)
        with raw:
            tls = pyopenssl_client(raw)
            tls.sendall(b"gemini://local")
            raw.shutdown(socket.SHUT_WR)
            ended = time.monotonic()
            with pytest.raises(SSL.ZeroReturnError):
                tls.recv(4096)
            assert raw.recv(1) == b""
            assert time.monotonic() - ended < 1.5
        # A client that answers the server's close_notify is let go then,
        # not after the linger.
        raw, where = connect_wrapped(kind, server, tmp_path)
        with raw, client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"gemini://{where}/\r\n".encode())
            assert read_to_end(tls)[1]
            answered = time.monotonic()
            plain = tls.unwrap()
            assert plain.recv(1) == b""
            assert time.monotonic() - answered < 1.5
        assert "request timeout" not in server.log
    finally:
        server.stop()
        page.unlink()


def test_a_unix_socket_client_reset_for_idling_is_logged_with_what_it_was_sent(
    capsule, certificate, tmp_path
):
    # A reset destroys what TCP's kernel queue holds for the client, which
    # the access line leaves out; a unix socket's peer reads its queue all
    # the same, and the line said 0 bytes for a client that got 100 KB.
    from tests.support import TWISTD, ServerProcess

    cert, key = certificate
    sock = tmp_path / "gemini.sock"
    server = ServerProcess([*TWISTD, "-n", "--pidfile=", "gemfcgi", "--root", str(capsule),
                            "--hostname", "localhost", "--cert", cert, "--key", key,
                            "--listen", f"unix:{sock}", "--idle-timeout", "1"])
    page = capsule / "idled.bin"
    page.write_bytes(b"i" * (20 * 1024 * 1024))
    page.chmod(0o644)
    try:
        server.wait_for_log("listening on")
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(10)
        raw.connect(str(sock))
        with raw, client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"gemini://localhost/idled.bin\r\n")
            first = tls.recv(100)
            server.wait_for_log(r"idled\.bin: client read nothing for 1 s; closing", timeout=10)
            data, clean = read_to_end(tls, first)
        assert not clean
        logged = int(server.wait_for_log(
            r"unix GET gemini://localhost/idled\.bin 20 application/octet-stream (\d+) ").group(1))
        assert 100 < len(data) <= logged < 20 * 1024 * 1024, (len(data), logged)
    finally:
        server.stop()
        page.unlink()


def test_a_fin_in_the_middle_of_a_proxy_header_ends_the_connection(capsule, certificate, tmp_path):
    # The half-close goes down to the TLS layer only once the header has
    # been read; before, there is nothing to half-close.
    server = wrapped_listener("haproxy", capsule, certificate, tmp_path)
    try:
        port = server.wait_listening()[0]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"PROXY TCP4 192.0.2.7")
            raw.shutdown(socket.SHUT_WR)
            assert raw.recv(100) == b""
        raw, where = connect_wrapped("haproxy", server, tmp_path)
        with raw, client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"gemini://{where}/\r\n".encode())
            assert read_to_end(tls)[0].startswith(b"20 ")
        assert "Traceback" not in server.log and "Unhandled Error" not in server.log
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["unix", "haproxy"])
def test_a_reply_cut_by_a_record_that_does_not_decrypt_is_logged_with_what_left(
    kind, capsule, certificate, tmp_path
):
    # Twisted's TLS layer dropped every write after the failure, the file's
    # producer was never paused, and the whole 20 MB was read and logged
    # as sent to a client that got about one. (Now the record is read once
    # the client has taken what was sent: the reply goes on meanwhile.)
    server = wrapped_listener(kind, capsule, certificate, tmp_path)
    (capsule / "large.bin").write_bytes(b"L" * (20 * 1024 * 1024))
    try:
        raw, where = connect_wrapped(kind, server, tmp_path)
        with raw:
            tls, incoming, outgoing = memory_tls(raw)
            tls.write(f"gemini://{where}/large.bin\r\n".encode())
            raw.sendall(outgoing.read())
            plain = wire = 0
            while plain < 1_000_000:
                try:
                    plain += len(tls.read(65536))
                except ssl.SSLWantReadError:
                    data = raw.recv(65536)
                    wire += len(data)
                    incoming.write(data)
            raw.sendall(b"\x17\x03\x03\x00\x20" + os.urandom(32))  # no key makes this
            try:
                while data := raw.recv(65536):
                    wire += len(data)
            except ConnectionResetError:
                pass  # closed with the client's bytes unread: a reset, as fits a failed connection
        logged = server.wait_for_log(r"large\.bin 20 application/octet-stream (\d+) ")
        # Not the whole file; on a unix socket, no more than the client got,
        # TLS's own bytes and all. (Over TCP the connection ends in a reset,
        # and what the kernel held for the client, a few MB on loopback, is
        # counted too: the kernel cannot tell what the peer took.)
        assert int(logged.group(1)) < 10 * 1024 * 1024, logged.group(0)
        if kind == "unix":
            assert int(logged.group(1)) < wire, logged.group(0)
    finally:
        server.stop()
