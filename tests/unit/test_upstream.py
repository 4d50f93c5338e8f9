"""Which requests a ``proxy`` block takes, what the upstream is sent, and what the check says of the block."""

from __future__ import annotations

from typing import Optional

import pytest
from cryptography import x509

from gemfcgi.certificates import make_self_signed, write_key_pair
from gemfcgi.check import check_config
from gemfcgi.config import parse_config
from gemfcgi.gemini.request import parse_request_line
from gemfcgi.routing import Routes
from gemfcgi.upstream import UpstreamTLS, upstream_request_line


def routes_of(body: str) -> Routes:
    text = (
        'server "example.com" {\n\tlisten on * port 1965\n\tcert "/c.pem"\n\tkey "/k.pem"\n'
        f'\talias "*.example.com"\n\troot "/srv"\n{body}\n}}\n'
    )
    config, _ = parse_config(text, "gmid.conf")
    return Routes(config)


def relayed_to(routes: Routes, host: str, port: int = 1965):
    vhost = routes.select(host)
    settings = vhost.proxy_for(host, port)
    return None if settings is None else settings.proxy.relay_to[0]


def test_a_block_without_for_host_takes_every_request_of_its_server():
    routes = routes_of('\tproxy { relay-to "up" }')
    assert relayed_to(routes, "example.com") == "up"
    assert relayed_to(routes, "a.example.com", 1966) == "up"


def test_the_first_matching_block_wins_and_the_rest_is_served_here():
    routes = routes_of(
        '\tproxy for-host "a.example.com" { relay-to "first" }\n'
        '\tproxy for-host "*.example.com" port "*" { relay-to "second" }\n'
        '\tproxy for-host "b.example.com" { relay-to "never" }'
    )
    assert relayed_to(routes, "a.example.com") == "first"
    assert relayed_to(routes, "a.example.com", 1966) == "second"
    assert relayed_to(routes, "b.example.com") == "second"
    assert relayed_to(routes, "example.com") is None


def test_for_host_matches_the_port_it_names_1965_unless_given():
    routes = routes_of(
        '\tproxy for-host "a.example.com" { relay-to "default" }\n'
        '\tproxy for-host "b.example.com" port 1966 { relay-to "numbered" }\n'
        '\tproxy for-host "c.example.com" port "https" { relay-to "service" }'
    )
    assert relayed_to(routes, "a.example.com") == "default"
    assert relayed_to(routes, "a.example.com", 1966) is None
    assert relayed_to(routes, "b.example.com", 1966) == "numbered"
    assert relayed_to(routes, "b.example.com") is None
    assert relayed_to(routes, "c.example.com", 443) == "service"  # a name of /etc/services


def test_a_block_for_another_scheme_takes_no_gemini_request():
    routes = routes_of('\tproxy proto "titan" { relay-to "up" }')
    assert relayed_to(routes, "example.com") is None


def test_a_proxied_request_gets_the_blocks_own_settings():
    routes = routes_of('\tproxy { relay-to "up"\n\t\trequire client ca "/ca.pem" }')
    settings = routes.select("example.com").proxy_for("example.com", 1965)
    assert settings.require_client_ca == "/ca.pem"
    assert settings.root is None and settings.fastcgi is None and settings.log


@pytest.mark.parametrize("line, port, sent", [
    (b"gemini://example.com/a/b?q=1", 1965, b"gemini://example.com/a/b?q=1\r\n"),
    (b"gemini://example.com:1965/a", 1965, b"gemini://example.com/a\r\n"),
    (b"gemini://example.com:1966/a", 10965, b"gemini://example.com:10965/a\r\n"),
    (b"gemini://example.com", 1965, b"gemini://example.com/\r\n"),
    (b"gemini://example.com?x", 1965, b"gemini://example.com?x\r\n"),
    (b"gemini://[::1]:1966/%20x", 1965, b"gemini://[::1]/%20x\r\n"),
    (b"gemini://[::1]/", 2000, b"gemini://[::1]:2000/\r\n"),
    ("gemini://bücher.example:1965/ä".encode(), 1965, "gemini://bücher.example/ä\r\n".encode()),
])
def test_the_upstream_gets_the_clients_url_with_its_own_port(line, port, sent):
    assert upstream_request_line(parse_request_line(line), port) == sent


def check(tmp_path, block: str, port: int = 1965, *more_ports: int, name: str = "localhost",
          names: tuple[str, ...] = ("localhost", "127.0.0.1"), listen: str = "", top: str = ""):
    """Errors and warnings of a server ``name`` on ``port``s, its certificate for ``names``."""
    cert_pem, key_pem = make_self_signed(list(names))
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    (tmp_path / "root").mkdir()
    listens = "".join(f"\tlisten on 127.0.0.1 port {number}{listen}\n" for number in (port, *more_ports))
    text = top + (
        f'server "{name}" {{\n{listens}\tcert "{tmp_path}/c.pem"\n'
        f'\tkey "{tmp_path}/k.pem"\n\troot "{tmp_path}/root"\n{block}\n}}\n'
    )
    config, _ = parse_config(text, "gmid.conf")
    errors, warnings = check_config(config)
    return [str(e) for e in errors], [str(w) for w in warnings]


def test_a_well_formed_block_with_a_client_certificate_passes(tmp_path):
    assert check(tmp_path, f'\tproxy {{ relay-to "up"\n\t\tcert "{tmp_path}/c.pem"\n'
                           f'\t\tkey "{tmp_path}/k.pem" }}') == ([], [])


def test_what_keeps_a_block_from_relaying_is_an_error_at_its_line(tmp_path):
    errors, _ = check(tmp_path, f'\tproxy {{ relay-to "up" port "no-such-service"\n'
                                f'\t\tcert "{tmp_path}/none.pem"\n\t\tkey "{tmp_path}/k.pem" }}')
    assert errors == [
        'gmid.conf:6: relay-to port "no-such-service": unknown service (not a port number, '
        "nor a name in /etc/services)",
        # Each at the line of the option it is about, not the block's.
        f"gmid.conf:7: proxy client certificate: {tmp_path}/none.pem: cannot read certificate: "
        "No such file or directory",
    ]


def test_a_proxy_blocks_ca_file_is_said_at_its_own_line(tmp_path):
    errors, _ = check(tmp_path, '\tproxy { relay-to "up"\n\t\trequire client ca "/dev/null" }')
    assert [error.split(":")[1] for error in errors] == ["7"], errors


def test_a_block_for_another_scheme_is_pointed_out(tmp_path):
    errors, warnings = check(tmp_path, '\tproxy proto "titan" { relay-to "up" }')
    assert errors == []
    assert warnings == ['gmid.conf:6: proxy proto "titan" matches no request: '
                        "gemfcgi answers gemini:// requests only"]


def test_names_that_cannot_be_sent_or_checked_are_errors(tmp_path):
    errors, _ = check(tmp_path, '\tproxy { relay-to "a..example"\n\t\tsni "' + "x" * 64 + '.example" }\n'
                                '\tproxy for-host "*" port "no-such-service" { relay-to "up" }')
    assert errors == [
        'gmid.conf:6: relay-to "a..example": a host name with an empty label',
        f'gmid.conf:7: sni "{"x" * 64}.example": a host name longer than DNS allows '
        "(63 bytes a label, 253 in all)",
        'gmid.conf:8: for-host port "no-such-service": unknown service (not a port number, '
        "nor a name in /etc/services)",
    ]


def test_protocols_that_leave_no_version_gemfcgi_offers_are_an_error(tmp_path):
    errors, _ = check(tmp_path, '\tproxy { relay-to "up"\n\t\tprotocols "tlsv1.1" }')
    assert errors == ['gmid.conf:7: proxy protocols: protocols "tlsv1.1" allows no TLS 1.2 or 1.3, '
                      "the only versions gemfcgi offers"]


def as_peer(certificate, as_cryptography=False):
    """What pyOpenSSL's get_peer_certificate gives: its own X509 unless cryptography's is asked for."""
    from OpenSSL import crypto

    return certificate if as_cryptography else crypto.X509.from_cryptography(certificate)


def test_the_certificate_is_checked_for_the_a_label_of_the_name():
    cert_pem, _ = make_self_signed(["localhost"])

    class Connection:
        def get_peer_certificate(self, as_cryptography=False):
            return as_peer(x509.load_pem_x509_certificate(cert_pem), as_cryptography)

    assert UpstreamTLS("localhost").name_problem(Connection()) is None
    assert UpstreamTLS("elsewhere.example").name_problem(Connection()).startswith(
        "the certificate is not for elsewhere.example")
    # A symbol IDNA 2008 refuses (its U-label made service_identity raise) is
    # checked as the A-label sent as SNI: a mismatch, said as one.
    assert UpstreamTLS("♨.example").name_problem(Connection()).startswith(
        "the certificate is not for xn--j6h.example")


def test_a_unicode_sni_is_sent_and_checked_as_its_a_label(tmp_path):
    errors, _ = check(tmp_path, '\tproxy { relay-to "up"\n\t\tsni "♨.Example" }')
    assert errors == []
    assert UpstreamTLS("♨.Example").server_name == "xn--j6h.example"
    assert UpstreamTLS("Bücher.example.").server_name == "xn--bcher-kva.example"


def test_a_block_for_a_port_its_server_does_not_listen_on_is_pointed_out(tmp_path):
    _, warnings = check(tmp_path, '\tproxy for-host "localhost" { relay-to "up" }\n'
                                  '\tproxy for-host "localhost" port "*" { relay-to "up" }', port=11965)
    assert warnings == [
        'gmid.conf:6: proxy for-host "localhost" port 1965: server \'localhost\' listens on no '
        "port 1965, and a URL must name its listener's port: this block relays nothing "
        '(write port "*" to take any)',
    ]


def test_a_servers_require_client_ca_is_said_not_to_cover_its_proxy_blocks(tmp_path):
    cert_pem, _ = make_self_signed(["ca"])
    (tmp_path / "ca.pem").write_bytes(cert_pem)
    _, warnings = check(tmp_path, f'\trequire client ca "{tmp_path}/ca.pem"\n\tproxy {{ relay-to "up" }}')
    assert warnings == [
        "gmid.conf:7: the require client ca of server 'localhost' does not apply to the requests "
        "this proxy block relays (as in gmid): write require client ca inside the block to ask for one",
    ]



def test_a_proxy_block_with_a_require_client_ca_of_its_own_is_not_warned_of(tmp_path):
    cert_pem, _ = make_self_signed(["ca"])
    (tmp_path / "ca.pem").write_bytes(cert_pem)
    _, warnings = check(tmp_path, f'\trequire client ca "{tmp_path}/ca.pem"\n'
                                  f'\tproxy {{ relay-to "up" require client ca "{tmp_path}/ca.pem" }}')
    assert warnings == []


def test_a_url_the_port_would_make_too_long_goes_without_it():
    path = "/" + "p" * (1024 - len("gemini://example.com/"))
    request = parse_request_line(f"gemini://example.com{path}".encode())
    assert upstream_request_line(request, 10965) == f"gemini://example.com{path}\r\n".encode()


def test_a_relay_to_port_0_and_blocks_a_catch_all_block_hides_are_pointed_out(tmp_path):
    errors, warnings = check(tmp_path, '\tlocation "/x/*" { lang "en" }\n'
                                       '\tproxy { relay-to "up" port 0 }\n'
                                       '\tproxy for-host "*" port "*" { relay-to "up" }')
    assert errors == ['gmid.conf:7: relay-to "up" port 0: no server listens on port 0']
    assert warnings == [
        "gmid.conf:8: this proxy block is never used: the proxy block at gmid.conf:7 relays every "
        "request of its server first",
        'gmid.conf:6: location "/x/*" is never used: the proxy block at gmid.conf:7 relays every '
        "request of its server first",
    ]



LOOP = ('gmid.conf:6: relay-to "{host}" port 1965 is a listener of this configuration, where the '
        "relayed request comes back to this proxy block: each request would be relayed again "
        "without end")


@pytest.mark.parametrize("block, expected", [
    ('\tproxy { relay-to "127.0.0.1" }', [LOOP.format(host="127.0.0.1")]),
    ('\tproxy { relay-to "localhost"; sni "localhost" }', [LOOP.format(host="localhost")]),
    # Addresses as the relay connects to them: 0.0.0.0 reaches 127.0.0.1,
    # ::ffff:127.0.0.1 is 127.0.0.1 (neither is in the certificate).
    ('\tproxy { relay-to "0.0.0.0"; verifyname off }', [LOOP.format(host="0.0.0.0")]),
    ('\tproxy { relay-to "::ffff:127.0.0.1"; verifyname off }', [LOOP.format(host="::ffff:127.0.0.1")]),
    ('\tproxy { relay-to "::FFFF:7f00:1"; verifyname off }', [LOOP.format(host="::FFFF:7f00:1")]),
    # A name with a final dot is looked up as written, and no address is.
    ('\tproxy { relay-to "127.0.0.1." }', []),
    # Short and numeric IPv4 forms are names to the relay, which the C
    # library's lookup reads as addresses: with an SNI this block takes, a
    # loop; with their own SNI (no server's name), 53 at the second turn.
    ('\tproxy { relay-to "127.1"; sni "localhost"; verifyname off }', [LOOP.format(host="127.1")]),
    ('\tproxy { relay-to "2130706433"; sni "localhost"; verifyname off }', [LOOP.format(host="2130706433")]),
    ('\tproxy { relay-to "0x7f.1"; sni "localhost"; verifyname off }', [LOOP.format(host="0x7f.1")]),
    ('\tproxy { relay-to "0"; sni "localhost"; verifyname off }', [LOOP.format(host="0")]),
    ('\tproxy { relay-to "127.1"; verifyname off }', []),
    # Checking the certificate against an all-digit name: no DNS name can
    # be one, the handshake fails (43), no loop (the check raised).
    ('\tproxy { relay-to "2130706433" }', []),
    ('\tproxy { relay-to "0" }', []),
    ('\tproxy { relay-to "127.1."; sni "localhost"; verifyname off }', []),
    # Another port, an SNI this block does not take, or no TLS: no loop.
    ('\tproxy { relay-to "127.0.0.1" port 1966 }', []),
    ('\tproxy for-host "a.example" { relay-to "127.0.0.1"; sni "b.example" }', []),
    ('\tproxy { relay-to "127.0.0.1"; use-tls off }', []),
    # A block that takes no host of its server relays nothing at all.
    ('\tproxy for-host "other.example" port "*" { relay-to "127.0.0.1" }', []),
])
def test_a_block_that_relays_to_its_own_listener_is_warned_of_as_a_loop(tmp_path, block, expected):
    assert [warning for warning in check(tmp_path, block)[1] if "relayed again" in warning] == expected


@pytest.mark.parametrize("names, warned", [
    ("", True),
    ('\talias "old.example"\n', False),
    ('\talias "*.example"\n', False),
])
def test_a_block_for_a_host_that_never_chooses_its_server_is_warned_of(tmp_path, names, warned):
    # README's own example relayed nothing: a request for old.example got
    # 53 from server "localhost", whose names it does not match, and
    # --check said "configuration OK".
    warnings = check(tmp_path, names + '\tproxy for-host "old.example" { relay-to "10.0.0.7" }')[1]
    said = [warning for warning in warnings if "no request reaches this block" in warning]
    assert said == ([
        f'gmid.conf:{6 + bool(names)}: proxy for-host "old.example": no request reaches this block: '
        "its host would have to choose server 'localhost', whose names it does not match "
        '(add alias "old.example" to the server)'] if warned else [])


@pytest.mark.parametrize("sni, loops", [
    # gmid's regress proxy: the relay's SNI (and URL host) is "localhost",
    # which the first server answers itself.
    ("", False),
    ('; sni "localhost.local"', True),
])
def test_a_relay_whose_host_another_server_answers_is_no_loop(tmp_path, sni, loops):
    cert_pem, key_pem = make_self_signed(["localhost", "localhost.local"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    (tmp_path / "root").mkdir()
    keys = f'cert "{tmp_path}/c.pem"; key "{tmp_path}/k.pem"'
    text = (
        f'server "localhost" {{ {keys}; root "{tmp_path}/root"; listen on 127.0.0.1 port 10965 }}\n'
        f'server "localhost.local" {{ {keys}; listen on 127.0.0.1 port 10966\n'
        f'\tproxy {{ relay-to localhost port 10965{sni} }}\n}}\n'
    )
    config, _ = parse_config(text, "gmid.conf")
    warnings = [str(w) for w in check_config(config)[1]]
    loop = [w for w in warnings if "without end" in w]
    assert loop == ([
        'gmid.conf:3: relay-to "localhost" port 10965 is a listener of this configuration, where '
        "the relayed request comes back to this proxy block: each request would be relayed again "
        "without end"] if loops else []), warnings


THROUGH = ('gmid.conf:{line}: relay-to "{host}" port {port} is a listener of this configuration, '
           "where the relayed request comes back to this proxy block through the proxy block at "
           "gmid.conf:{other}: each request would be relayed again without end")


@pytest.mark.parametrize("second, expected", [
    # Port 10965 relays to 10966, which relays back: a loop through two blocks.
    ('\tproxy for-host "localhost" port 10966 { relay-to "127.0.0.1" port 10965 }',
     [THROUGH.format(line=7, host="localhost", port=10966, other=8),
      THROUGH.format(line=8, host="127.0.0.1", port=10965, other=7)]),
    ('\tproxy for-host "*" port "*" { relay-to "localhost" port 10965; sni "localhost" }',
     # The second relays to a port it takes itself: its own loop is said.
     [THROUGH.format(line=7, host="localhost", port=10966, other=8),
      'gmid.conf:8: relay-to "localhost" port 10965 is a listener of this configuration, where the '
      "relayed request comes back to this proxy block: each request would be relayed again "
      "without end"]),
    # Relayed on to a port of no listener here, or to a name the URL's host
    # is not (the upstream answers 53): no loop.
    ('\tproxy for-host "localhost" port 10966 { relay-to "127.0.0.1" port 10967 }', []),
    ('\tproxy for-host "localhost" port 10966 { relay-to "127.0.0.1" port 10965; sni "other.test" }',
     []),
    # To a block that asks for a client certificate the relay has not: 60
    # there, no loop from 10965; from 10966, a client it lets in comes back
    # to it, and gets 43 before any certificate is asked for.
    ('\tproxy for-host "localhost" port 10966 { relay-to "127.0.0.1" port 10965\n'
     '\t\trequire client ca "{ca}" }', [THROUGH.format(line=8, host="127.0.0.1", port=10965, other=7)]),
])
def test_a_relay_that_comes_back_through_another_block_is_warned_of_as_a_loop(
    tmp_path, second, expected
):
    first = '\tproxy for-host "localhost" port 10965 { relay-to "localhost" port 10966 }\n'
    warnings = check(tmp_path, first + second.replace("{ca}", str(tmp_path / "c.pem")), 10965, 10966)[1]
    assert [w for w in warnings if "without end" in w] == expected, warnings


BACK_AND_FORTH = ('\tproxy for-host "{host}" port 10965 {{ relay-to "127.0.0.1" port 10966{first} }}\n'
                  '\tproxy for-host "{host}" port 10966 {{ relay-to "127.0.0.1" port 10965{second} }}')


def loop_lines(warnings: list[str]) -> list[int]:
    return [int(w.split(":")[1]) for w in warnings if "without end" in w]


@pytest.mark.parametrize("name, host", [("*.test", "*"), ("a.test", "*.a.test"), ("[ab].test", "*")])
def test_a_loop_of_hosts_only_globs_name_is_warned_of(tmp_path, name, host):
    # The relay keeps the client's host, whichever the glob took: "a.test"
    # with alias "*.a.test" loops for x.a.test as "localhost" would.
    aliases = '\talias "*.a.test"\n' if name == "a.test" else ""
    block = aliases + BACK_AND_FORTH.format(host=host, first="; verifyname off", second="; verifyname off")
    warnings = check(tmp_path, block, 10965, 10966, name=name, names=("a.test",))[1]
    assert loop_lines(warnings) == ([8, 9] if aliases else [7, 8]), warnings


def test_a_loop_through_a_block_that_asks_for_the_certificate_the_relay_presents_is_warned_of(tmp_path):
    # The relay presents the server's own pair, and the block asks for a
    # certificate under that one (self-signed, it is its own CA).
    pair = f'; cert "{tmp_path}/c.pem"; key "{tmp_path}/k.pem"'
    ca = f'\n\t\trequire client ca "{tmp_path}/c.pem"'
    presented = check(tmp_path, BACK_AND_FORTH.format(host="localhost", first=pair, second=ca), 10965, 10966)[1]
    assert loop_lines(presented) == [7, 8], presented
    # Without one, the relay from 10965 gets 60 there: no loop from 10965.
    (tmp_path / "b").mkdir()
    ca = f'\n\t\trequire client ca "{tmp_path}/b/c.pem"'
    none = check(tmp_path / "b", BACK_AND_FORTH.format(host="localhost", first="", second=ca), 10965, 10966)[1]
    assert loop_lines(none) == [8], none


@pytest.mark.parametrize("first", ["cert", ""])
def test_a_circle_through_a_block_whose_ca_refuses_the_relay_is_a_loop_only_from_that_block(tmp_path, first):
    # From port 10965 the relay presents its pair (or none), which the CA
    # of the block on 10966 refuses: 61 (or 60) there, no loop. From 10966,
    # a client that block lets in comes back to it, and gets 43 there
    # before any certificate is asked for.
    other, _ = make_self_signed(["another-ca.example"])
    (tmp_path / "ca.pem").write_bytes(other)
    pair = f'; cert "{tmp_path}/c.pem"; key "{tmp_path}/k.pem"' if first else ""
    ca = f'\n\t\trequire client ca "{tmp_path}/ca.pem"'
    warnings = check(tmp_path, BACK_AND_FORTH.format(host="localhost", first=pair, second=ca), 10965, 10966)[1]
    assert loop_lines(warnings) == [8], warnings


@pytest.mark.parametrize("presented, ca", [(False, "c.pem"), (True, "other.pem"), (True, "c.pem")])
def test_a_block_asking_for_a_certificate_that_relays_to_itself_is_a_loop_whatever_the_relay_presents(
        tmp_path, presented, ca):
    # A request that comes back to the block it went through gets 43 there,
    # before the block asks for a certificate: a client it lets through
    # gets "43 proxy loop", whether the relay's certificate would pass.
    other, _ = make_self_signed(["another-ca.example"])
    (tmp_path / "other.pem").write_bytes(other)
    pair = f'; cert "{tmp_path}/c.pem"; key "{tmp_path}/k.pem"' if presented else ""
    block = f'\tproxy {{ relay-to "127.0.0.1"; require client ca "{tmp_path}/{ca}"{pair} }}'
    warnings = check(tmp_path, block)[1]
    assert [w for w in warnings if "relayed again" in w] == [LOOP.format(host="127.0.0.1")]


@pytest.mark.parametrize("names, first, listen, loops", [
    # The relay checks that the certificate names 127.0.0.1 (verifyname):
    # one for localhost alone fails the handshake, a 43, not a loop.
    (("localhost",), "", "", False),
    (("localhost",), "; verifyname off", "", True),
    (("localhost", "127.0.0.1"), "", "", True),
    # A PROXY header where none is read, or none where one is: 43 too.
    (("localhost", "127.0.0.1"), "; proxy-v1", "", False),
    (("localhost", "127.0.0.1"), "", " proxy-v1", False),
    (("localhost", "127.0.0.1"), "; proxy-v1", " proxy-v1", True),
    # No TLS version in common with the listeners (TLS 1.3 only here).
    (("localhost", "127.0.0.1"), '; protocols "tlsv1.2"', "", False),
    (("localhost", "127.0.0.1"), '; protocols "tlsv1.2,tlsv1.3"', "", True),
])
def test_a_relay_whose_handshake_would_fail_is_no_loop(tmp_path, names, first, listen, loops):
    block = BACK_AND_FORTH.format(host="localhost", first=first, second=first)
    warnings = check(tmp_path, block, 10965, 10966, names=names, listen=listen,
                     top='protocols "tlsv1.3"\n')[1]
    assert loop_lines(warnings) == ([8, 9] if loops else []), warnings


def certificate_named_only_by(common_name: str, alternative: Optional[str] = None) -> x509.Certificate:
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    if alternative is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(alternative)]), critical=False)
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize("common_name, name, matches", [
    ("cnonly.test", "cnonly.test", True),
    ("CNonly.Test", "cnonly.test", True),
    ("*.example.org", "gemini.example.org", True),
    ("*.example.org", "a.b.example.org", False),
    ("*.org", "example.org", False),
    ("cnonly.test", "other.test", False),
    ("127.0.0.1", "127.0.0.1", True),
])
def test_a_certificate_without_alternative_names_is_checked_by_its_common_name_as_libtls_does(
    common_name, name, matches
):
    # Many self-signed Gemini certificates name their host only so; gmid
    # (libtls) accepts them.
    certificate = certificate_named_only_by(common_name)

    class Connection:
        def get_peer_certificate(self, as_cryptography=False):
            return as_peer(certificate, as_cryptography)

    problem = UpstreamTLS(name).name_problem(Connection())
    assert (problem is None) == matches, problem


def test_a_common_name_does_not_count_beside_alternative_names():
    certificate = certificate_named_only_by("cnonly.test", alternative="other.test")

    class Connection:
        def get_peer_certificate(self, as_cryptography=False):
            return as_peer(certificate, as_cryptography)

    assert UpstreamTLS("cnonly.test").name_problem(Connection()) is not None


@pytest.mark.parametrize("alternative, name, matches", [
    (None, "up.test", True), ("up.test", "up.test", True), ("up.test", "other.test", False),
    (None, "other.test", False), ("*.wild.test", "a.wild.test", True),
])
def test_an_upstream_certificate_only_openssl_reads_is_checked_by_the_same_rules(alternative, name, matches):
    # A name cryptography cannot read (a PrintableString holding '@') made
    # the check raise: 43 "protocol error" and an Unhandled Error.
    import datetime

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from OpenSSL import crypto

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meQexample"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "up.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    if alternative is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(alternative)]), critical=False)
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    odd = der.replace(b"\x0c\x0ameQexample", b"\x13\x0ame@example")
    assert odd != der
    held = crypto.load_certificate(crypto.FILETYPE_ASN1, odd)

    class Connection:
        def get_peer_certificate(self, as_cryptography=False):
            return held.to_cryptography() if as_cryptography else held

    problem = UpstreamTLS(name).name_problem(Connection())
    assert (problem is None) == matches, problem


def test_a_for_host_with_a_port_is_not_told_to_become_an_alias(tmp_path):
    # The parser says how to write the port; 'add alias "old.example:1966"'
    # named an alias that no request could match either.
    warnings = check(tmp_path, '\tproxy for-host "old.example:1966" { relay-to "10.0.0.7" }')[1]
    assert [warning for warning in warnings if "add alias" in warning] == []


def test_a_for_host_no_host_can_match_says_why(tmp_path):
    warnings = check(tmp_path, '\tproxy for-host "a test" { relay-to "10.0.0.7" }')[1]
    assert [warning for warning in warnings if "for-host" in warning] == [
        'gmid.conf:6: proxy for-host "a test": no request reaches this block: it is no host name']


def test_a_connection_is_this_process_relaying_to_itself_only_if_both_its_ends_are_a_relays():
    # Linux gives one local port to connections to different places: an
    # ordinary client whose port a relay also had (to another server) got
    # 43 "proxy loop".
    from types import SimpleNamespace

    from twisted.internet.address import IPv4Address, IPv6Address
    from twisted.internet.testing import StringTransport

    from gemfcgi.upstream import OWN_ENDS, UpstreamProtocol, blocks_behind

    relay = SimpleNamespace(client=SimpleNamespace(relayed_through=frozenset({7})),
                            upstream_connected=lambda protocol: None, upstream_closed=lambda reason: None)
    protocol = UpstreamProtocol(relay)
    protocol.makeConnection(StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 36380),
                                            peerAddress=IPv4Address("TCP", "127.0.0.1", 20002)))
    try:
        # Seen from the listener it reached (a dual-stack one sees IPv4 mapped).
        assert blocks_behind(IPv6Address("TCP", "::ffff:127.0.0.1", 36380),
                             IPv6Address("TCP", "::ffff:127.0.0.1", 20002)) == {7}
        assert blocks_behind(IPv4Address("TCP", "127.0.0.1", 36380),
                             IPv4Address("TCP", "127.0.0.1", 20011)) == frozenset()
    finally:
        protocol.connectionLost(None)
    assert OWN_ENDS == {}


def test_an_ipv6_address_in_brackets_as_relay_to_is_an_error_saying_what_to_write(tmp_path):
    # It passed --check, and every request got 43: "invalid hostname: [::1]".
    errors, _ = check(tmp_path, '\tproxy { relay-to "[::1]" port 1966; verifyname off }')
    assert errors == ['gmid.conf:6: relay-to "[::1]": an IPv6 address is written here without '
                      'brackets: write "::1"']


def test_each_listen_address_is_looked_up_once_for_the_relay_checks(tmp_path, monkeypatch):
    # A file of a thousand servers listening on "localhost", each relaying
    # to it, took 30 s to check (at each start and reload too): every
    # block's relay looked every server's address up again.
    from gemfcgi import check as checking

    looked_up: list[str] = []

    def counting(name: str) -> set[str]:
        looked_up.append(name)
        return {"127.0.0.1", "::1"} if name == "localhost" else set()

    monkeypatch.setattr(checking, "addresses_of", counting)
    cert_pem, key_pem = make_self_signed(["localhost", "127.0.0.1"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    text = "".join(
        f'server "s{n}.test" {{ listen on localhost port 1965; cert "{tmp_path}/c.pem"\n'
        f'\tkey "{tmp_path}/k.pem"; root "{tmp_path}"\n'
        f'\tproxy for-host "s{n}.test" {{ relay-to "127.0.0.1" port 1965 }}\n}}\n'
        for n in range(20)
    )
    config, _ = parse_config(text, "gmid.conf")
    warnings = [str(w) for w in check_config(config)[1]]
    assert len([w for w in warnings if "without end" in w]) == 20
    assert looked_up == ["localhost"]


class _Socket:
    """A connected socket's ``getpeername``, or the error it raises."""

    def __init__(self, peer) -> None:
        self.peer = peer

    def getpeername(self):
        if isinstance(self.peer, Exception):
            raise self.peer
        return self.peer


class _Relayed:
    """What a relay's transport gives: its socket, and the address Twisted was asked for."""

    def __init__(self, sock: Optional[_Socket], asked) -> None:
        self.socket = sock
        self.asked = asked

    def getPeer(self):
        return self.asked


def test_a_relay_is_known_by_where_the_kernel_connected_it_else_by_what_it_asked_for():
    import errno

    from twisted.internet.address import IPv4Address

    from gemfcgi.upstream import _socket_peer

    asked = IPv4Address("TCP", "0.0.0.0", 1965)
    # 0.0.0.0 reaches 127.0.0.1, which is what the listener sees; a
    # dual-stack socket says it IPv4-mapped.
    assert _socket_peer(_Relayed(_Socket(("127.0.0.1", 1965)), asked)) == ("127.0.0.1", 1965)
    assert _socket_peer(_Relayed(_Socket(("::ffff:127.0.0.1", 1965, 0, 0)), asked)) == ("127.0.0.1", 1965)
    # A connection reset before it is asked has no peer: Twisted's word is taken.
    reset = _Socket(OSError(errno.ENOTCONN, "Transport endpoint is not connected"))
    assert _socket_peer(_Relayed(reset, asked)) == ("0.0.0.0", 1965)
    assert _socket_peer(_Relayed(None, asked)) == ("0.0.0.0", 1965)
    # A unix socket's peer is a path, no address.
    assert _socket_peer(_Relayed(_Socket(""), None)) is None


def test_the_loop_check_passes_a_relay_to_a_server_whose_certificate_cannot_be_read(tmp_path):
    # verifyname needs the certificate the relay would be shown; one that
    # cannot be read is said where the server's pair is checked, and the
    # loop check says nothing of its own.
    from gemfcgi.check import OwnRelays

    cert_pem, key_pem = make_self_signed(["localhost", "127.0.0.1"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    text = (f'server "localhost" {{ listen on 127.0.0.1 port 1965; cert "{tmp_path}/c.pem"; '
            f'key "{tmp_path}/k.pem"\n\tproxy {{ relay-to "127.0.0.1" }}\n}}\n')
    config, _ = parse_config(text, "gmid.conf")
    [proxy] = config.servers[0].proxies
    assert OwnRelays(config).to_itself(config.servers[0], proxy)
    (tmp_path / "c.pem").write_text("not a certificate\n")
    assert not OwnRelays(config).to_itself(config.servers[0], proxy)
    errors, warnings = check_config(config)
    assert [str(e) for e in errors if "c.pem" in str(e)] and not [w for w in warnings if "without end" in str(w)]


@pytest.mark.parametrize("blocks, expected", [
    # Port 10967 relays to 10965, where 10965 and 10966 relay to each other:
    # a request at 10967 goes round their loop, and gets 43 once back at one.
    ('\tproxy for-host "localhost" port 10967 { relay-to "127.0.0.1" port 10965; sni "localhost" }\n'
     '\tproxy for-host "localhost" port 10965 { relay-to "127.0.0.1" port 10966; sni "localhost" }\n'
     '\tproxy for-host "localhost" port 10966 { relay-to "127.0.0.1" port 10965; sni "localhost" }',
     {8: "the proxy block at gmid.conf:9 and the proxy block at gmid.conf:10", 9: None, 10: None}),
    # Into a block that relays to itself.
    ('\tproxy for-host "localhost" port 10967 { relay-to "127.0.0.1" port 10965; sni "localhost" }\n'
     '\tproxy for-host "localhost" port 10965 { relay-to "127.0.0.1" port 10965; sni "localhost" }',
     {8: "the proxy block at gmid.conf:9", 9: None}),
    # Into blocks that relay elsewhere: no loop.
    ('\tproxy for-host "localhost" port 10967 { relay-to "127.0.0.1" port 10965; sni "localhost" }\n'
     '\tproxy for-host "localhost" port 10965 { relay-to "127.0.0.1" port 10966; sni "localhost" }',
     {}),
])
def test_a_relay_into_a_loop_of_other_blocks_is_warned_of(tmp_path, blocks, expected):
    warnings = check(tmp_path, blocks, 10965, 10966, 10967)[1]
    assert sorted(loop_lines(warnings)) == sorted(expected), warnings
    for line, loop in expected.items():
        if loop is not None:
            said = next(w for w in warnings if w.startswith(f"gmid.conf:{line}:"))
            assert said == (f'gmid.conf:{line}: relay-to "127.0.0.1" port 10965 is a listener of this '
                            f"configuration, where the relayed request goes round the loop of {loop}: "
                            "each request would be relayed again without end")


def test_a_long_chain_of_relays_is_followed_once_not_once_per_block(tmp_path, monkeypatch):
    # Every block's walk followed the chain again, trying each block at
    # each hop: 250 blocks took 10 s, 500 took 83 s. Here 60 blocks relay
    # each to the next; the last 20 go round a loop of their own.
    from gemfcgi.gemini.hosts import HostPattern

    count, loop = 60, 20
    ports = [10965 + n for n in range(count)]
    following = [ports[n + 1] if n + 1 < count else ports[count - loop] for n in range(count)]
    blocks = "\n".join(
        f'\tproxy for-host "localhost" port {port} {{ relay-to "127.0.0.1" port {to}; sni "localhost" }}'
        for port, to in zip(ports, following))
    tried: list[str] = []
    real_matches = HostPattern.matches
    monkeypatch.setattr(HostPattern, "matches",
                        lambda self, host: tried.append(host) or real_matches(self, host))
    warnings = check(tmp_path, blocks, *ports)[1]
    first_line = 5 + count  # after the server line, the listens, cert, key and root
    assert loop_lines(warnings) == list(range(first_line, first_line + count)), warnings
    entering = [w for w in warnings if "goes round the loop of" in w]
    circling = [w for w in warnings if "comes back to this proxy block through" in w]
    assert (len(entering), len(circling)) == (count - loop, loop)
    # Each names a few blocks of its loop, not all (a loop of 1,200 blocks
    # gave 80 MB of warnings).
    assert all(w.count("the proxy block at") == 5 for w in entering + circling)
    assert all(" and 15 more: " in w for w in entering) and all(" and 14 more: " in w for w in circling)
    # Each block is tried once for each port (a walk per block tried every
    # block at every hop: some 40,000 matches here).
    assert len(tried) < 3 * count * count


@pytest.mark.parametrize("names, host, named", [
    # A name no host can match beside the one asked for: libtls passes over
    # it; the whole certificate was refused ("*.lan has too few host
    # components for wildcard usage").
    (("up", "*.lan", "localhost"), "localhost", True),
    (("up", "localhost", "*"), "localhost", True),
    (("up", "a.*.example", "localhost"), "localhost", True),
    (("up", "*.lan", "127.0.0.1"), "127.0.0.1", True),
    (("up", "*.lan"), "localhost", False),
    (("up", "*.lan"), "x.lan", False),
    (("up", "*.example.org", "localhost"), "a.example.org", True),
])
def test_a_name_no_host_can_match_does_not_hide_the_certificates_other_names(names, host, named):
    from cryptography import x509

    from gemfcgi.upstream import certificate_name_problem

    certificate = x509.load_pem_x509_certificate(make_self_signed(list(names))[0])
    problem = certificate_name_problem(certificate, host)
    assert (problem is None) == named, problem
    if not named:
        assert problem.startswith(f"the certificate is not for {host} (")


@pytest.mark.parametrize("common_name, alternatives, host, named", [
    # subjectAltNames none of which can match: libtls never falls back on
    # the common name then; the relay did, and went through.
    ("x.lan", ["*.lan"], "x.lan", False),
    ("a.b.example", ["a.*.example"], "a.b.example", False),
    # None at all: the common name is what names the host.
    ("x.lan", [], "x.lan", True),
    ("x.lan", [], "y.lan", False),
])
def test_the_common_name_counts_only_without_a_subjectaltname_for_a_host(common_name, alternatives, host, named):
    from gemfcgi.upstream import certificate_name_problem

    certificate = certificate_named_only_by(common_name, alternatives[0] if alternatives else None)
    problem = certificate_name_problem(certificate, host)
    assert (problem is None) == named, problem


class _Client:
    """What a relay asks of its Gemini client when it fails before the header."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.record = SimpleNamespace(client="127.0.0.1:5555", url="gemini://a.example/")
        self.header: Optional[tuple[int, str]] = None

    def send_header(self, code: int, meta: str) -> None:
        self.header = (code, meta)

    def finish(self) -> None:
        pass


def test_twisted_s_connect_timeout_is_said_in_the_relay_s_own_words():
    # Twisted's timer and the relay's both run the connect timeout and race:
    # the line said "User timeout caused connection failure" when Twisted's won.
    from twisted.internet import error
    from twisted.internet.testing import MemoryReactorClock
    from twisted.logger import capturedLogs, formatEvent
    from twisted.python.failure import Failure

    from gemfcgi.upstream import ProxyRelay, Upstream, UpstreamTimeouts

    client = _Client()
    relay = ProxyRelay(client, Upstream("192.0.2.1", 1965, None), b"gemini://a.example/\r\n",
                       UpstreamTimeouts(connect=5.0), MemoryReactorClock())
    with capturedLogs() as logs:
        relay._connect_failed(Failure(error.TimeoutError("User timeout caused connection failure.")))
    assert client.header == (43, "proxy error")
    assert [formatEvent(e) for e in logs] == [
        "127.0.0.1:5555 gemini://a.example/: proxy upstream 192.0.2.1:1965: cannot connect: "
        "not connected after 5 s"]


@pytest.mark.parametrize("ending", ["whole", "client leaves", "refused"])
def test_twisted_s_connection_holds_neither_the_relay_nor_its_client_once_it_is_over(ending):
    # Twisted's TCP client connection is a reference cycle (connector,
    # transport, the endpoint's factory and Deferred) that waits for a full
    # collection; the relay, the client's protocol and its TLS connection
    # hung from it: 800 relays left the process 46 MB larger until one came.
    from twisted.internet import error
    from twisted.internet.testing import MemoryReactorClock, StringTransport
    from twisted.python.failure import Failure

    from gemfcgi.config import model
    from gemfcgi.server import GeminiProtocol
    from gemfcgi.service import build_site
    from gemfcgi.upstream import ProxyRelay
    from tests.fakes import TLSStringTransport
    from tests.support import held_from

    config = model.Config(servers=[model.Server(name="localhost", proxies=[
        model.Proxy(relay_to=("192.0.2.1", 1965), use_tls=False)])])
    reactor = MemoryReactorClock()
    client = GeminiProtocol(build_site(config), reactor)
    client.makeConnection(TLSStringTransport())
    client.handshakeCompleted()
    client.dataReceived(b"gemini://localhost/\r\n")
    factory = reactor.tcpClients[-1][2]  # what Twisted's connection cycle holds
    if ending == "refused":
        assert any(isinstance(held, ProxyRelay) for held in held_from(factory))
        factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))
        assert client.transport.value().startswith(b"43 ")
        assert not [held for held in held_from(factory) if isinstance(held, (ProxyRelay, GeminiProtocol))]
        return
    upstream = factory.buildProtocol(None)
    upstream.makeConnection(StringTransport())
    assert any(isinstance(held, ProxyRelay) for held in held_from(factory, upstream))
    if ending == "whole":
        upstream.dataReceived(b"20 text/gemini\r\n# up\n")
        upstream.connectionLost(Failure(error.ConnectionDone()))
        assert client.transport.value().endswith(b"# up\n")
    else:
        client.connectionLost(Failure(error.ConnectionLost()))
        upstream.connectionLost(Failure(error.ConnectionLost()))
    assert not [held for held in held_from(factory, upstream)
                if isinstance(held, (ProxyRelay, GeminiProtocol))]


def test_a_certificate_whose_subjectaltnames_name_no_host_is_said_to_hold_them():
    # The log said "Certificate does not contain any `subjectAltName`s"
    # (service_identity's words) of a certificate that holds one.
    from gemfcgi.upstream import certificate_name_problem

    assert certificate_name_problem(certificate_named_only_by("localhost", "*.home"), "localhost") == (
        "the certificate is not for localhost (its subjectAltNames, DNS:*.home, can name no host, "
        "and its common name counts only without any)")
    # Names that can match, but not this host: said as names, not as service_identity's repr.
    assert certificate_name_problem(certificate_named_only_by("x", "a.example"), "b.example") == (
        "the certificate is not for b.example (its subjectAltNames: DNS:a.example)")


def test_under_log_off_what_the_upstream_sent_is_not_quoted():
    # A malformed header quoted in the fault's line may echo the path and
    # query that 'log off' keeps out of the log (a gmid upstream writes %p decoded).
    from twisted.internet import error
    from twisted.internet.testing import MemoryReactorClock, StringTransport
    from twisted.logger import capturedLogs, formatEvent
    from twisted.python.failure import Failure

    from gemfcgi.config import model
    from gemfcgi.server import GeminiProtocol
    from gemfcgi.service import build_site
    from tests.fakes import TLSStringTransport

    config = model.Config(servers=[model.Server(name="localhost", options=model.LocationOptions(log=False),
                                                proxies=[model.Proxy(relay_to=("192.0.2.1", 1965), use_tls=False)])])
    reactor = MemoryReactorClock()
    client = GeminiProtocol(build_site(config), reactor)
    client.makeConnection(TLSStringTransport())
    client.handshakeCompleted()
    with capturedLogs() as logs:
        client.dataReceived(b"gemini://localhost/draft-SECRET?SECRET\r\n")
        upstream = reactor.tcpClients[-1][2].buildProtocol(None)
        upstream.makeConnection(StringTransport())
        upstream.dataReceived(b"31 /moved/draft-SECRET?SECRET x\r\n")
        upstream.connectionLost(Failure(error.ConnectionDone()))
    assert client.transport.value() == b"43 protocol error\r\n"
    [line] = [formatEvent(e) for e in logs if "proxy upstream" in formatEvent(e)]
    assert line == ("127.0.0.1:40000 gemini://localhost/... (log off): proxy upstream 192.0.2.1:1965: "
                    "bad reply: what it sent is not shown (log off)")


def test_a_certificate_whose_subjectaltname_extension_cannot_be_read_is_refused_in_one_line():
    # An address of 5 bytes: cryptography raised as the names were read, and
    # the relay logged a traceback and "bad reply" for a handshake fault.
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtensionOID, NameOID

    from gemfcgi.upstream import certificate_name_problem

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upstream.test")])
    # SEQUENCE { [7] 01 02 03 04 05 }: an iPAddress of five bytes.
    odd = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, bytes.fromhex("3007" "8705" "0102030405"))
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(odd, critical=False).sign(key, hashes.SHA256()))
    problem = certificate_name_problem(certificate, "upstream.test")
    assert problem.startswith("the certificate is not for upstream.test (its subjectAltName extension "
                              "cannot be read: "), problem


def test_both_relays_are_push_producers_and_the_timeout_test_is_a_plain_function():
    # A helper written between the decorator and the class took the
    # declaration: the relays said they were no producer.
    from twisted.internet.interfaces import IPushProducer
    from zope.interface.verify import verifyClass

    from gemfcgi.fastcgi.client import Relay
    from gemfcgi.pacedrelay import twisted_connect_timeout
    from gemfcgi.upstream import ProxyRelay

    for relay in (Relay, ProxyRelay):
        assert verifyClass(IPushProducer, relay)
    assert not IPushProducer.implementedBy(twisted_connect_timeout)
