"""A configuration built in Python is held to what the parser lets through."""

from __future__ import annotations

from dataclasses import replace

from gemfcgi.config import model, parse_config
from gemfcgi.config.built import built_problems

FULL = """
prefork 2
protocols "tlsv1.3"
log { access "access.log" style combined syslog facility local3 }
types { text/gemini gmi  "text/plain; charset=utf-8" txt }
server "example.com" {
  alias "www.example.com"
  listen on 127.0.0.1 port 1965
  listen on ::1 port "1966" proxy-v1
  cert "/c.pem"
  key "/k.pem"
  root "/srv/gemini"
  lang "en"
  default type "text/plain"
  auto index on
  block return 31 "/moved"
  location "/app/*" {
    fastcgi socket tcp "127.0.0.1" port 9001
    fastcgi strip 1
    fastcgi param SCRIPT_FILENAME = "/srv/app.py"
    strip 1
  }
  location "/sock/*" { fastcgi socket "/run/app.sock" }
  location "/spawned/*" { fastcgi spawn "fcgiwrap -c 4" }
  location "/off/*" { fastcgi off }
  proxy for-host "up.example.com" port 1965 {
    relay-to "10.0.0.1" port 1966
    protocols "tlsv1.3"
    verifyname off
  }
}
"""


def written() -> model.Config:
    config, warnings = parse_config(FULL, "/etc/gmid.conf")
    return config


def messages(config: model.Config) -> list[str]:
    return [str(problem) for problem in built_problems(config)]


def test_what_the_parser_builds_has_no_problem():
    assert messages(written()) == []


def test_a_field_of_the_wrong_type_is_named_by_its_place():
    config = written()
    server = config.servers[0]
    for changed, message in [
        (replace(config, log=replace(config.log, style="fancy")),
         "config.log.style must be one of 'legacy', 'common', 'combined', 'condensed', not 'fancy'"),
        (replace(config, types={"text/gemini": 5}), "config.types['text/gemini'] must be str, not int (5)"),
        (replace(config, servers=(server,)), "config.servers must be list, not tuple"),
        (replace(config, servers=[replace(server, proxies=[replace(server.proxies[0], relay_to=("10.0.0.1",))])]),
         "config.servers[0].proxies[0].relay_to must be a pair, not ('10.0.0.1',)"),
        (replace(config, servers=[replace(server, options=replace(
            server.options, fastcgi=model.FastCGI(address="127.0.0.1:9000")))]),
         "config.servers[0].options.fastcgi.address must be FastCGISocket or FastCGITCP or FastCGISpawn or "
         "FastCGIEndpoint or None, not str ('127.0.0.1:9000')"),
        (replace(config, servers=[replace(server, listens=[model.Listen("127.0.0.1", True)])]),
         "config.servers[0].listens[0].port must be int or str, not bool (True)"),
    ]:
        [problem] = messages(changed)
        assert problem.startswith(f"/etc/gmid.conf: {message}"), problem


def test_a_value_out_of_range_is_said_where_it_was_written_if_it_was():
    config = written()
    server = config.servers[0]
    app = server.locations[0]
    changed = replace(config, servers=[replace(server, locations=[
        replace(app, options=replace(app.options, strip=0)), *server.locations[1:]])])
    assert messages(changed) == [
        f"/etc/gmid.conf:{app.origin.line}: invalid strip number 0 (use 1 or more; "
        "leave strip out to strip nothing)"]
    built = model.Config(servers=[model.Server("localhost", proxies=[model.Proxy(relay_to=("up", 70000))],
                                               options=model.LocationOptions(default_type="text/\x1b[31m"))])
    assert messages(built) == [
        "<config>: default type 'text/\\x1b[31m' contains the control character '\\x1b': no reply may hold it",
        "<config>: invalid port number 70000 (use 0 to 65535, or a service name in quotes)",
    ]
