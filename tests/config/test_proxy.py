"""``proxy [proto P] [for-host H [port N]] { ... }`` (gmid.md §1.6), as parsed."""

from __future__ import annotations


from gemfcgi.config.model import Origin, Proxy


def proxies_of(parse, server_with, body: str) -> list[Proxy]:
    return parse(server_with(body)).servers[0].proxies


def test_minimal_proxy(parse, server_with):
    assert proxies_of(parse, server_with, 'proxy { relay-to "10.0.0.6" }') == [
        Proxy(relay_to=("10.0.0.6", 1965), origin=Origin("gmid.conf", 5))
    ]


def test_proxy_with_every_option(parse, server_with):
    body = (
        'proxy proto "titan" for-host "*.example.com" port 1966 {\n'
        '\t\trelay-to "backend" port "gemini"\n'
        '\t\tcert "/etc/ssl/client.pem"\n\t\tkey "/etc/ssl/client.key"\n'
        '\t\tsni "backend.example.com"\n\t\tuse-tls off\n\t\tverifyname off\n'
        '\t\tprotocols "tlsv1.3"\n\t\tproxy-v1\n\t\trequire client ca "/etc/ssl/ca.pem"\n\t}'
    )
    assert proxies_of(parse, server_with, body) == [
        Proxy(
            proto="titan",
            for_host="*.example.com",
            for_port=1966,
            relay_to=("backend", "gemini"),
            cert="/etc/ssl/client.pem",
            key="/etc/ssl/client.key",
            sni="backend.example.com",
            use_tls=False,
            verifyname=False,
            protocols="tlsv1.3",
            proxy_v1=True,
            require_client_ca="/etc/ssl/ca.pem",
            origin=Origin("gmid.conf", 5),
        )
    ]


def test_for_host_without_port_matches_port_1965(parse, server_with):
    proxy = proxies_of(parse, server_with, 'proxy for-host "a" { relay-to "b" }')[0]
    assert (proxy.for_host, proxy.for_port) == ("a", 1965)


def test_several_proxy_blocks_keep_their_order(parse, server_with):
    body = 'proxy proto "titan" { relay-to "t" }\n\tproxy { relay-to "g" }'
    assert [p.relay_to[0] for p in proxies_of(parse, server_with, body)] == ["t", "g"]


def test_proxy_without_relay_to_is_an_error(errors_of, server_with):
    assert errors_of(server_with('proxy {\n\t\tsni "x"\n\t}')) == [
        'gmid.conf:5: proxy without relay-to (add: relay-to "host" port 1965)'
    ]


def test_proxy_cert_without_key_is_an_error(errors_of, server_with):
    assert errors_of(server_with('proxy { relay-to "h"; cert "/c" }')) == [
        "gmid.conf:5: proxy needs both cert and key for a client certificate, or neither"
    ]


def test_proxy_paths_must_be_absolute(errors_of, server_with):
    assert errors_of(server_with('proxy {\n\t\trelay-to "h"\n\t\tcert "c"; key "/k"\n\t}')) == [
        'gmid.conf:7: cert "c": not an absolute path (cert is read before chroot; '
        "write the full path, starting with '/')"
    ]


def test_unknown_proxy_option_is_an_error(errors_of, server_with):
    assert errors_of(server_with('proxy {\n\t\trelay-to "h"\n\t\troot "/x"\n\t}')) == [
        "gmid.conf:7: unknown proxy option keyword 'root' (use relay-to, cert, key, sni, use-tls, "
        "verifyname, protocols, proxy-v1 or require client ca)"
    ]


def test_gmid_1_8_host_port_spelling_is_a_warning(warnings_of, server_with):
    assert warnings_of(server_with('proxy for-host "a.org:1966" { relay-to "b.org:1965" }')) == [
        'gmid.conf:5: for-host "a.org:1966": gmid 2.x reads \':1966\' as part of the host name; '
        'write for-host "a.org" port 1966',
        'gmid.conf:5: relay-to "b.org:1965": gmid 2.x reads \':1965\' as part of the host name; '
        'write relay-to "b.org" port 1965',
    ]


def test_ipv6_relay_to_is_not_mistaken_for_host_port(warnings_of, server_with):
    assert warnings_of(server_with('proxy { relay-to "::1" }')) == []
