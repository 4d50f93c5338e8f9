"""A configuration built in Python is held to what the parser lets through."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

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
        (replace(config, types={"gmi": 5}), "config.types['gmi'] must be str, not int (5)"),
        (replace(config, servers=[replace(server, aliases="www.example.com")]),
         "config.servers[0].aliases must be list, not str ('www.example.com')"),
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
        f"/etc/gmid.conf:{app.origin.line}: config.servers[0].locations[0].options.strip: invalid strip "
        "number 0 (use 1 or more; leave strip out to strip nothing)"]
    built = model.Config(servers=[model.Server("localhost", proxies=[model.Proxy(relay_to=("up", 70000))],
                                               options=model.LocationOptions(default_type="text/\x1b[31m"))])
    assert messages(built) == [
        "<config>: config.servers[0].options.default_type: default type 'text/\\x1b[31m' contains the "
        "control character '\\x1b': no reply may hold it",
        "<config>: config.servers[0].proxies[0].relay_to: invalid port number 70000 (use 0 to 65535, or a "
        "service name in quotes)",
    ]


def test_what_the_parser_refuses_beyond_ranges_is_refused_too():
    # Each was served: a proxy without its key relayed with no client
    # certificate, LOG_LOCAL3 logged to daemon, an index leaving the root
    # answered every directory with 51, and a proxy without relay_to
    # stopped the start with a bare AssertionError.
    def server(**fields):
        return model.Server("localhost", **fields)

    for config, message in [
        (model.Config(servers=[server(proxies=[model.Proxy(cert="/c.pem", relay_to=("up", 1965))])]),
         "config.servers[0].proxies[0]: a proxy needs both cert and key for a client certificate, or neither"),
        (model.Config(servers=[server(proxies=[model.Proxy()])]),
         "config.servers[0].proxies[0].relay_to: a proxy needs the host and port to relay to"),
        (model.Config(log=model.LogSettings(facility="LOG_LOCAL3"), servers=[server()]),
         "config.log.facility: 'LOG_LOCAL3' is no syslog facility name (write 'local3')"),
        (model.Config(log=model.LogSettings(facility="kernel"), servers=[server()]),
         "config.log.facility: 'kernel' is no syslog facility name (use daemon, ftp, user or local0 to local7)"),
        (model.Config(servers=[server(options=model.LocationOptions(index="../secret.txt"))]),
         "config.servers[0].options.index: index '../secret.txt' must name a file inside the directory "
         "(no '..' and no leading '/')"),
        (model.Config(types={"zzz": "text/plain\r\n20 evil"}, servers=[server()]),
         "config.types['zzz']: media type 'text/plain\\r\\n20 evil' contains the control character "
         "'\\r': no reply may hold it"),
        (model.Config(servers=[server(options=model.LocationOptions(lang="en\udcff"))]),
         "config.servers[0].options.lang holds '\\udcff', which UTF-8 cannot encode"),
        # Each failed deep in the check (ValueError, UnicodeEncodeError), or
        # at every request (a block's META, an index).
        (model.Config(servers=[server(options=model.LocationOptions(root="/srv\x00x"))]),
         "config.servers[0].options.root holds a NUL character ('/srv\\x00x')"),
        (model.Config(servers=[server(options=model.LocationOptions(block=model.BlockReturn(40, "\ud800")))]),
         "config.servers[0].options.block.meta holds '\\ud800', which UTF-8 cannot encode"),
        (model.Config(servers=[server(listens=[model.Listen("127.0.0.1", "gem\x00ini")])]),
         "config.servers[0].listens[0].port holds a NUL character ('gem\\x00ini')"),
        (model.Config(servers=[server(listens=[model.Listen("127.0.0.1", "9" * 5000)])]),
         "config.servers[0].listens[0].port: invalid port number 999999999999... (5000 digits) (use 0 to "
         "65535, or a service name in quotes)"),
    ]:
        assert messages(config) == [f"<config>: {message}"], message


def test_values_that_serve_as_the_declared_type_are_taken():
    # Each served before the check: a path object for a file, a tuple for
    # a list, any mapping for a dict, 1 for True, a str enum for a style.
    import enum
    import pathlib

    class Style(str, enum.Enum):
        COMBINED = "combined"

    server = model.Server(
        "localhost", aliases=("127.0.0.1",), cert=pathlib.Path("/c.pem"), key=pathlib.Path("/k.pem"),
        options=model.LocationOptions(root=pathlib.Path("/srv"), auto_index=1),
        proxies=[model.Proxy(relay_to=["up", 1965])])
    config = model.Config(servers=[server], types=MappingProxyType({"gmi": "text/gemini"}),
                          log=model.LogSettings(style=Style.COMBINED, access=pathlib.Path("/var/log/a")))
    assert messages(config) == []
    # A file's name may hold bytes that are no UTF-8, as Python escapes them.
    assert messages(model.Config(servers=[model.Server("localhost", options=model.LocationOptions(
        root="/srv/caf\udce9"), aliases={"127.0.0.1"}, cert=b"/c.pem", key=b"/k.pem")])) == []
    # A long extension is no media type: the parser takes it.
    assert messages(model.Config(types={"z" * 1100: "text/plain"})) == []


def test_a_file_named_by_a_path_object_is_read_and_taken(tmp_path):
    import pytest

    from gemfcgi.config import ConfigError, load_config

    conf = tmp_path / "gmid.conf"
    pair = '  cert "/c.pem"\n  key "/k.pem"\n'
    conf.write_text(f'server "localhost" {{\n  listen on 127.0.0.1 port "{"9" * 5000}"\n{pair}}}\n')
    with pytest.raises(ConfigError) as raised:
        load_config(conf)
    # Quoted, more digits than int() reads: a traceback before.
    assert str(raised.value) == (f"{conf}:2: invalid port number 999999999999... (5000 digits) (use 0 to "
                                 "65535, or a service name in quotes)")
    conf.write_text(f'server "localhost" {{\n  listen on 127.0.0.1 port "01965"\n{pair}}}\n')
    config, _ = load_config(conf)
    # The file's name is kept as text: a path object in it was refused by makeService.
    assert config.source == str(conf) and config.servers[0].listens[0].origin.file == str(conf)
    assert config.servers[0].listens[0].port == 1965
    assert messages(config) == []


def test_values_taken_are_served_in_the_types_the_server_reads():
    # A Path root failed every FastCGI request (40: the parameters join it
    # as text); log=0 logged every request (the server asks "is False"); a
    # str enum lang went out as "lang=L.EN".
    import enum
    import pathlib

    from gemfcgi.config.built import as_served

    class Language(str, enum.Enum):
        EN = "en"

    options = model.LocationOptions(root=pathlib.Path("/srv"), log=0, lang=Language.EN, auto_index=1)
    origin = model.Origin(pathlib.Path("/etc/gmid.conf"), 3)
    server = model.Server("localhost", aliases=("a", "b"), cert=b"/c.pem", key=pathlib.Path("/k.pem"),
                          options=options, origin=origin)
    config = model.Config(servers=(server,), types=MappingProxyType({"gmi": "text/gemini"}))
    assert messages(config) == []
    served = as_served(config)
    assert served is config and config.servers == [server]
    assert (options.root, options.log, options.lang, options.auto_index) == ("/srv", False, "en", True)
    assert type(options.lang) is str and options.log is False and options.auto_index is True
    assert (server.aliases, server.cert, server.key) == (["a", "b"], "/c.pem", "/k.pem")
    assert server.origin == model.Origin("/etc/gmid.conf", 3) and type(config.types) is dict


def test_a_port_of_many_leading_zeros_or_other_digits_is_read_without_a_traceback():
    # "0" * 5000 + "1965" passed the range check, then int() refused it
    # (a traceback from the parser and the check); "²" is a digit to
    # str.isdigit, and no number to int().
    import pytest

    from gemfcgi.config.values import port_number

    config, _ = parse_config(f'server "localhost" {{\n  listen on 127.0.0.1 port "{"0" * 5000}1965"\n'
                             '  cert "/c.pem"\n  key "/k.pem"\n}\n')
    assert config.servers[0].listens[0].port == 1965
    assert port_number("0" * 5000 + "1965") == 1965
    for written in ("²", "١٩٦٥"):
        with pytest.raises(OSError):
            port_number(written)
