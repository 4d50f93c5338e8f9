"""
Realistic gmid.conf files under ``data/`` and the whole model each must give.

The files follow the gmid manual's examples and the sample of gmid.md §1.10;
each test compares the complete ``Config`` (dataclass equality) and the
complete list of warnings.
"""

from __future__ import annotations

from pathlib import Path

from gemfcgi.config import load_config
from gemfcgi.config.model import (
    BlockReturn,
    Config,
    FastCGI,
    FastCGIEndpoint,
    FastCGISocket,
    FastCGISpawn,
    FastCGITCP,
    Listen,
    Location,
    LocationOptions,
    LogSettings,
    Origin,
    Proxy,
    Server,
)

DATA = Path(__file__).parent / "data"


def data(name: str) -> str:
    return str(DATA / name)


def loaded(name: str) -> tuple[Config, list[str]]:
    config, warnings = load_config(data(name))
    return config, [str(w) for w in warnings]


def test_the_gmid_md_sample():
    f = data("sample.conf")

    def at(line: int) -> Origin:
        return Origin(f, line)

    config, warnings = loaded("sample.conf")
    assert config == Config(
        servers=[
            Server(
                name="*",
                listens=[Listen("*", 1965, False, at(25))],
                cert="/etc/ssl/default.pem",
                key="/etc/ssl/private/default.key",
                options=LocationOptions(block=BlockReturn(53, "unknown host")),
                origin=at(24),
            ),
            Server(
                name="example.com",
                aliases=["www.example.com"],
                listens=[Listen("*", 1965, False, at(32))],
                cert="/etc/ssl/example.com.pem",
                key="/etc/ssl/private/example.com.key",
                options=LocationOptions(root="/example.com", lang="en"),
                locations=[
                    Location(
                        "/files/*",
                        LocationOptions(auto_index=True, default_type="text/plain"),
                        at(39),
                    ),
                    Location(
                        "/old/*",
                        LocationOptions(strip=1, block=BlockReturn(31, "/new%p")),
                        at(43),
                    ),
                    Location(
                        "/cgi-bin/hello*",
                        LocationOptions(
                            fastcgi=FastCGI(
                                address=FastCGISocket("/run/slowcgi.sock"),
                                params=[("SCRIPT_NAME", "/cgi-bin/hello")],
                                origin=at(49),
                            )
                        ),
                        at(47),
                    ),
                    Location(
                        "/app/*",
                        LocationOptions(
                            fastcgi=FastCGI(
                                address=FastCGITCP("127.0.0.1", 9000),
                                params=[("APP_ENV", "production")],
                                strip=1,
                                origin=at(55),
                            )
                        ),
                        at(53),
                    ),
                    Location(
                        "/private/*",
                        LocationOptions(require_client_ca="/etc/ssl/members-ca.pem"),
                        at(60),
                    ),
                ],
                origin=at(31),
            ),
            Server(
                name="mirror.example.com",
                listens=[Listen("*", 1966, True, at(66))],
                cert="/etc/ssl/mirror.pem",
                key="/etc/ssl/private/mirror.key",
                proxies=[
                    Proxy(
                        relay_to=("10.0.0.6", 1965),
                        sni="mirror.example.com",
                        proxy_v1=True,
                        origin=at(69),
                    )
                ],
                origin=at(65),
            ),
        ],
        prefork=4,
        user="_gmid",
        chroot="/var/gemini",
        protocols="tlsv1.2,tlsv1.3",
        log=LogSettings(access="/logs/access.log", style="combined", syslog=False),
        types={
            "gmi": "text/gemini", "gemini": "text/gemini",
            "pdf": "application/pdf",
            "jpeg": "image/jpeg", "jpg": "image/jpeg", "jpe": "image/jpeg",
            "png": "image/png",
            "md": "text/markdown", "markdown": "text/markdown",
            "txt": "text/plain", "text": "text/plain", "conf": "text/plain", "log": "text/plain",
        },
        source=f,
    )
    assert warnings == [
        f'{f}:31: server "example.com" is shadowed by server "*" at {f}:24 '
        "(gemfcgi uses the first matching block)",
        f'{f}:65: server "mirror.example.com" is shadowed by server "*" at {f}:24 '
        "(gemfcgi uses the first matching block)",
    ]


def test_virtual_hosts_with_macros_and_deprecated_globals():
    f = data("vhosts.conf")

    def at(line: int) -> Origin:
        return Origin(f, line)

    defaults = dict(lang="en", index="index.gmi", auto_index=False)
    config, warnings = loaded("vhosts.conf")
    assert config == Config(
        servers=[
            Server(
                name="example.com",
                aliases=["www.example.com", "gemini.example.com"],
                listens=[Listen("0.0.0.0", 11965, False, at(10))],
                cert="/etc/gmid/example.com.crt",
                key="/etc/gmid/example.com.key",
                ocsp="/etc/gmid/example.com.ocsp",
                options=LocationOptions(root="/var/gemini/example.com", **defaults),
                locations=[
                    Location("/pub/*", LocationOptions(auto_index=True), at(19)),
                    Location("/secret/*", LocationOptions(block=BlockReturn()), at(22)),
                    Location(
                        "/moved/*",
                        LocationOptions(block=BlockReturn(31, "gemini://example.org%p")),
                        at(25),
                    ),
                    Location(
                        "*.gmi", LocationOptions(default_type="text/gemini", log=False), at(28)
                    ),
                ],
                origin=at(10),
            ),
            Server(
                name="example.org",
                listens=[Listen("127.0.0.1", 1965, False, at(35)), Listen("::1", 1965, False, at(36))],
                cert="/etc/gmid/example.org.crt",
                key="/etc/gmid/example.org.key",
                options=LocationOptions(root="/var/gemini/example.org", **defaults),
                locations=[Location("/~*", LocationOptions(strip=1, root="/home"), at(41))],
                origin=at(34),
            ),
        ],
        source=f,
    )
    assert warnings == [
        f"{f}:3: 'ipv6' is deprecated; in each server block write 'listen on 0.0.0.0' and its "
        "port instead (listen on 0.0.0.0 port N)",
        f"{f}:4: 'port' is deprecated; write 'listen on 0.0.0.0 port 11965' in each server block instead",
        f"{f}:10: server \"example.com\" has no 'listen on'; listening on 0.0.0.0 port 11965 "
        "(add: listen on 0.0.0.0 port 11965)",
    ]


def test_fastcgi_in_every_form():
    f = data("fastcgi.conf")

    def at(line: int) -> Origin:
        return Origin(f, line)

    def location(pattern: str, line: int, fastcgi: FastCGI) -> Location:
        return Location(pattern, LocationOptions(fastcgi=fastcgi), at(line))

    config, warnings = loaded("fastcgi.conf")
    assert config == Config(
        servers=[
            Server(
                name="apps.example.com",
                listens=[Listen("*", 1965, False, at(5))],
                cert="/etc/ssl/apps.pem",
                key="/etc/ssl/apps.key",
                options=LocationOptions(
                    root="/apps",
                    fastcgi=FastCGI(
                        address=FastCGISocket("/run/app.sock"),
                        params=[("GLOBAL_PARAM", "old style")],
                        origin=at(10),
                    ),
                ),
                locations=[
                    location("/unix/*", 12, FastCGI(FastCGISocket("/run/unix.sock"), origin=at(13))),
                    location("/tcp/*", 15, FastCGI(FastCGITCP("localhost", 9000), origin=at(16))),
                    location("/tcp-port/*", 18, FastCGI(FastCGITCP("10.0.0.2", 9001), origin=at(19))),
                    location(
                        "/tcp-service/*", 21, FastCGI(FastCGITCP("backend", "fcgi"), origin=at(22))
                    ),
                    location(
                        "/block/*",
                        24,
                        FastCGI(
                            FastCGISocket("/run/block.sock"),
                            params=[("SCRIPT_NAME", "/block"), ("DOCUMENT_ROOT", "/apps/block")],
                            strip=1,
                            origin=at(26),
                        ),
                    ),
                    location(
                        "/oneline/*",
                        32,
                        FastCGI(FastCGITCP("127.0.0.1", 9002), [("A", "1")], strip=2, origin=at(33)),
                    ),
                    location(
                        "/single/*",
                        35,
                        FastCGI(
                            FastCGISocket("/run/single.sock"),
                            params=[("SCRIPT_FILENAME", "/apps/single.py")],
                            strip=1,
                            origin=at(38),
                        ),
                    ),
                    location("/static/*", 40, FastCGI(off=True, origin=at(41))),
                    location("/old/*", 43, FastCGI(FastCGISocket("/run/old.sock"), origin=at(44))),
                    location(
                        "/spawn/*",
                        46,
                        FastCGI(FastCGISpawn("/usr/local/bin/app --fcgi"), origin=at(47)),
                    ),
                    location(
                        "/endpoint/*",
                        49,
                        FastCGI(
                            FastCGIEndpoint("tcp:host=127.0.0.1:port=9003"),
                            params=[("MODE", "endpoint")],
                            origin=at(51),
                        ),
                    ),
                ],
                origin=at(4),
            )
        ],
        source=f,
    )
    assert warnings == [
        f"{f}:9: 'param' at server level is deprecated; write 'fastcgi param GLOBAL_PARAM = \"...\"'",
        f"{f}:44: 'fastcgi \"/run/old.sock\"' is deprecated; write 'fastcgi socket \"/run/old.sock\"'",
    ]


def test_global_options_log_forms_and_types_from_an_include():
    f = data("logging.conf")

    def at(line: int) -> Origin:
        return Origin(f, line)

    config, warnings = loaded("logging.conf")
    assert config == Config(
        servers=[
            Server(
                name="localhost",
                listens=[Listen("localhost", 1965, False, at(17))],
                cert="/etc/ssl/localhost.pem",
                key="/etc/ssl/localhost.key",
                options=LocationOptions(root="/srv/gemini", log=True),
                locations=[
                    Location(
                        "/health",
                        LocationOptions(log=False, block=BlockReturn(44, "try later")),
                        at(22),
                    )
                ],
                origin=at(16),
            )
        ],
        prefork=2,
        user="gemini",
        protocols="tlsv1.3",
        log=LogSettings("/var/log/gmid/access.log", "common", True, "local4"),
        types={
            "gmi": "text/gemini", "gemini": "text/gemini",
            "pdf": "application/pdf",
            "jpeg": "image/jpeg", "jpg": "image/jpeg", "jpe": "image/jpeg",
            "png": "image/png",
            "md": "text/markdown", "markdown": "text/markdown",
            "txt": "text/plain", "text": "text/plain", "conf": "text/plain", "log": "text/plain",
            "1": "text/x-mandoc", "2": "text/x-mandoc", "3": "text/x-mandoc",
        },
        source=f,
    )
    assert warnings == []


def test_reverse_proxies():
    f = data("proxy.conf")

    def at(line: int) -> Origin:
        return Origin(f, line)

    config, warnings = loaded("proxy.conf")
    assert config == Config(
        servers=[
            Server(
                name="example.com",
                listens=[Listen("*", 1965, False, at(3))],
                cert="/etc/ssl/example.com.pem",
                key="/etc/ssl/private/example.com.key",
                proxies=[
                    Proxy(
                        proto="titan",
                        relay_to=("titan.internal", 1966),
                        use_tls=False,
                        origin=at(7),
                    ),
                    Proxy(
                        for_host="example.com",
                        for_port=1965,
                        relay_to=("10.0.0.7", 1965),
                        sni="example.com",
                        cert="/etc/ssl/proxy-client.pem",
                        key="/etc/ssl/private/proxy-client.key",
                        verifyname=False,
                        protocols="tlsv1.3",
                        require_client_ca="/etc/ssl/ca.pem",
                        origin=at(11),
                    ),
                    Proxy(relay_to=("10.0.0.8", "gemini"), proxy_v1=True, origin=at(20)),
                ],
                origin=at(2),
            )
        ],
        source=f,
    )
    assert warnings == []


def test_a_main_file_made_of_includes():
    f = data("split.conf")
    capsule = data("split.d/capsule.conf")
    config, warnings = loaded("split.conf")
    assert config == Config(
        servers=[
            Server(
                name="capsule.example",
                listens=[Listen("*", 1965, False, Origin(capsule, 2))],
                cert="/etc/ssl/capsule.pem",
                key="/etc/ssl/capsule.key",
                options=LocationOptions(root="/srv/capsule"),
                origin=Origin(capsule, 1),
            )
        ],
        prefork=3,
        source=f,
    )
    assert warnings == []
