"""Routing tables hold their patterns compiled, however many a configuration has."""

from __future__ import annotations

import re

from gemfcgi import glob
from gemfcgi.config import parse_config
from gemfcgi.routing import Routes

# More globs than the cache of compiled patterns keeps.
MANY = glob.compile_glob.cache_info().maxsize + 100


def test_a_request_compiles_no_pattern_however_many_globs_the_configuration_has(monkeypatch):
    # Past the cache's size, each request compiled every pattern again:
    # 5,000 proxy blocks or locations made a request cost 140 ms.
    locations = "".join(f'\tlocation "/l{n}/*.gmi" {{ lang "en" }}\n' for n in range(MANY))
    proxies = "".join(f'\tproxy for-host "*.h{n}.test" {{ relay-to "192.0.2.1" }}\n' for n in range(MANY))
    text = (f'server "localhost" {{\n\talias "*.test"\n\tlisten on * port 1965\n\tcert "/c.pem"\n'
            f'\tkey "/k.pem"\n\troot "/srv"\n{locations}{proxies}}}\n')
    config, _ = parse_config(text, "gmid.conf")
    routes = Routes(config)
    compiled: list[str] = []
    real_compile = re.compile
    monkeypatch.setattr(glob.re, "compile",
                        lambda pattern, *args: compiled.append(pattern) or real_compile(pattern, *args))
    vhost = routes.select("a.test")
    assert vhost is not None
    assert vhost.proxy_for("x.h7.test", 1965).proxy.for_host == "*.h7.test"
    assert vhost.proxy_for("a.test", 1965) is None
    assert vhost.settings_for("/l3/page.gmi").lang == "en"
    assert vhost.settings_for("/elsewhere/page.gmi").lang is None
    assert compiled == []


def test_a_host_no_server_names_is_looked_up_without_trying_each_server(monkeypatch):
    # A new host in each request (anyone can send one) tried every
    # server's names in turn: 6 ms a request with 4,000 servers.
    from gemfcgi.gemini.hosts import HostPattern

    blocks = "".join(
        f'server "h{n}.test" {{\n\talias "*.h{n}.test"\n\tlisten on * port 1965\n\tcert "/c.pem"\n'
        f'\tkey "/k.pem"\n\troot "/srv"\n}}\n'
        for n in range(1000)
    )
    config, _ = parse_config(blocks, "gmid.conf")
    routes = Routes(config)
    tried: list[str] = []
    real_matches = HostPattern.matches
    monkeypatch.setattr(HostPattern, "matches",
                        lambda self, host: tried.append(host) or real_matches(self, host))
    assert routes.select("nowhere.example") is None
    assert routes.select("www.h998.test").name == "h998.test"
    assert routes.select("h999.test").name == "h999.test"
    assert tried == []
