"""The parameters a FastCGI application receives for a request."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemfcgi._version import __version__
from gemfcgi.config.model import FastCGI, FastCGISocket
from gemfcgi.fastcgi.params import ClientCertificate, NoSuchScript, RequestFacts, request_params

FACTS = RequestFacts(
    path="/fcgi/params",
    query=None,
    host="example.org",
    port=None,
    url="gemini://example.org/fcgi/params",
    root=None,
    client_address="192.0.2.7",
    client_port=50123,
    server_address="198.51.100.1",
    tls_version="TLSv1.3",
    tls_cipher="TLS_AES_256_GCM_SHA384",
)

CERTIFICATE = ClientCertificate(
    subject="/CN=valid",
    issuer="/CN=testca",
    sha256="AB" * 32,
    not_before=datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    not_after=datetime(2034, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
    serial=0x0A1B2C,
)

BASE_NAMES = [
    "PATH_INFO",
    "SCRIPT_NAME",
    "GATEWAY_INTERFACE",
    "PATH_TRANSLATED",
    "QUERY_STRING",
    "REMOTE_ADDR",
    "REMOTE_HOST",
    "REQUEST_METHOD",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "SERVER_SOFTWARE",
    "GEMINI_URL_PATH",
    "AUTH_TYPE",
    "GEMINI_URL",
    "REMOTE_PORT",
    "SERVER_ADDR",
    "TLS_VERSION",
    "TLS_CIPHER",
]


def no_files(path: str) -> bool:
    return False


def params_for(settings_=None, is_file=no_files, **changes) -> dict[str, str]:
    params = request_params(replace(FACTS, **changes), settings_ or FastCGI(), is_file)
    names = [name for name, _ in params]
    assert len(names) == len(set(names)), names
    return dict(params)


def names_for(settings_=None, is_file=no_files, **changes) -> list[str]:
    facts = replace(FACTS, **changes)
    return [name for name, _ in request_params(facts, settings_ or FastCGI(), is_file)]


# The whole set ------------------------------------------------------------------


def test_request_without_certificate_gets_exactly_the_base_names_in_order():
    assert names_for() == BASE_NAMES


def test_request_without_certificate_gets_gmid_values():
    assert params_for() == {
        "PATH_INFO": "/fcgi/params",
        "SCRIPT_NAME": "",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "PATH_TRANSLATED": "",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "192.0.2.7",
        "REMOTE_HOST": "192.0.2.7",
        "REQUEST_METHOD": "GET",
        "SERVER_NAME": "example.org",
        "SERVER_PORT": "1965",
        "SERVER_PROTOCOL": "GEMINI",
        "SERVER_SOFTWARE": f"gemfcgi/{__version__}",
        "GEMINI_URL_PATH": "fcgi/params",
        "AUTH_TYPE": "",
        "GEMINI_URL": "gemini://example.org/fcgi/params",
        "REMOTE_PORT": "50123",
        "SERVER_ADDR": "198.51.100.1",
        "TLS_VERSION": "TLSv1.3",
        "TLS_CIPHER": "TLS_AES_256_GCM_SHA384",
    }


def test_a_root_adds_document_root_and_script_filename_after_the_url():
    names = names_for(root="/srv/capsule", is_file=lambda path: path == "/srv/capsule/fcgi")
    url = BASE_NAMES.index("GEMINI_URL") + 1
    assert names == [*BASE_NAMES[:url], "DOCUMENT_ROOT", "SCRIPT_FILENAME", *BASE_NAMES[url:]]


@pytest.mark.parametrize("root", [None, "/srv/capsule"], ids=["no root", "another root"])
def test_a_param_document_root_names_the_script_under_it_as_fcgiwrap_would(root):
    # A gmid configuration for fcgiwrap: gmid sends no SCRIPT_FILENAME, and
    # fcgiwrap joins DOCUMENT_ROOT and SCRIPT_NAME; one made from the
    # server's root (or an empty one) would name another file.
    settings_ = FastCGI(params=[("DOCUMENT_ROOT", "/usr/lib/cgi-bin/"),
                                ("SCRIPT_NAME", "/cgi-bin/hello")])
    params = params_for(settings_, root=root, path="/cgi-bin/hello/extra")
    assert (params["DOCUMENT_ROOT"], params["SCRIPT_NAME"], params["PATH_INFO"]) == (
        "/usr/lib/cgi-bin/", "/cgi-bin/hello", "/extra")
    assert params["SCRIPT_FILENAME"] == "/usr/lib/cgi-bin/cgi-bin/hello"


def test_without_a_root_the_script_is_found_under_a_param_document_root(tmp_path):
    (tmp_path / "cgi-bin").mkdir()
    (tmp_path / "cgi-bin" / "hello").write_text("#!/bin/sh\n")
    settings_ = FastCGI(params=[("DOCUMENT_ROOT", str(tmp_path))])
    params = params_for(settings_, is_file=os.path.isfile, path="/cgi-bin/hello/x")
    assert (params["SCRIPT_NAME"], params["PATH_INFO"], params["SCRIPT_FILENAME"]) == (
        "/cgi-bin/hello", "/x", f"{tmp_path}/cgi-bin/hello")


def test_a_param_script_filename_wins_over_any_document_root():
    settings_ = FastCGI(params=[("DOCUMENT_ROOT", "/a"), ("SCRIPT_FILENAME", "/b/app.sh")])
    assert params_for(settings_, root="/srv/capsule")["SCRIPT_FILENAME"] == "/b/app.sh"


def test_server_port_is_the_port_written_in_the_url():
    assert params_for(port=11965)["SERVER_PORT"] == "11965"


def test_gemini_url_path_of_the_root_is_empty():
    assert params_for(path="/")["GEMINI_URL_PATH"] == ""


def test_cipher_strength_is_sent_when_known():
    params = params_for(tls_cipher_strength=256)
    assert params["TLS_CIPHER_STRENGTH"] == "256"


def test_server_software_can_be_given():
    assert params_for(server_software="gemfcgi/9.9")["SERVER_SOFTWARE"] == "gemfcgi/9.9"


# Client certificates -------------------------------------------------------------


def test_certificate_params_use_gmid_formats():
    params = params_for(certificate=CERTIFICATE)
    assert params["AUTH_TYPE"] == "CERTIFICATE"
    assert params["REMOTE_USER"] == "/CN=valid"
    assert params["TLS_CLIENT_ISSUER"] == "/CN=testca"
    assert params["TLS_CLIENT_HASH"] == "SHA256:" + "ab" * 32
    assert params["TLS_CLIENT_NOT_BEFORE"] == "2024-01-02T03:04:05Z"
    assert params["TLS_CLIENT_NOT_AFTER"] == "2034-12-31T23:59:59Z"
    assert params["TLS_CLIENT_SERIAL"] == "0A1B2C"


def test_certificate_adds_exactly_the_certificate_names():
    added = set(names_for(certificate=CERTIFICATE)) - set(BASE_NAMES)
    assert added == {
        "REMOTE_USER",
        "TLS_CLIENT_ISSUER",
        "TLS_CLIENT_HASH",
        "TLS_CLIENT_NOT_BEFORE",
        "TLS_CLIENT_NOT_AFTER",
        "TLS_CLIENT_SERIAL",
    }


def test_certificate_times_in_another_zone_are_converted_to_utc():
    plus_two = timezone(timedelta(hours=2))
    certificate = replace(
        CERTIFICATE, not_before=datetime(2024, 1, 1, 1, 0, 0, tzinfo=plus_two)
    )
    params = params_for(certificate=certificate)
    assert params["TLS_CLIENT_NOT_BEFORE"] == "2023-12-31T23:00:00Z"


def test_naive_certificate_times_are_taken_as_utc():
    certificate = replace(CERTIFICATE, not_after=datetime(2030, 6, 1, 12, 0, 0))
    assert (
        params_for(certificate=certificate)["TLS_CLIENT_NOT_AFTER"]
        == "2030-06-01T12:00:00Z"
    )


@pytest.mark.parametrize(
    ("serial", "text"), [(0, "00"), (1, "01"), (255, "FF"), (256, "0100"), (-1, "-01")]
)
def test_certificate_serial_is_upper_case_hex_by_bytes(serial, text):
    certificate = replace(CERTIFICATE, serial=serial)
    assert params_for(certificate=certificate)["TLS_CLIENT_SERIAL"] == text


# Queries -------------------------------------------------------------------------


def test_query_string_is_sent_raw():
    params = params_for(query="a%20b+c")
    assert params["QUERY_STRING"] == "a%20b+c"


def test_search_string_is_decoded_with_plus_as_space():
    assert (
        params_for(query="hello%20world+x")["GEMINI_SEARCH_STRING"] == "hello world x"
    )


def test_search_string_follows_the_query_string():
    names = names_for(query="x")
    assert names[names.index("GEMINI_URL_PATH") + 1] == "GEMINI_SEARCH_STRING"


@pytest.mark.parametrize("query", [None, "", "a=b", "x=", "%3D=1"])
def test_no_search_string_for_missing_empty_or_key_value_queries(query):
    assert "GEMINI_SEARCH_STRING" not in params_for(query=query)


def test_encoded_equals_sign_still_gives_a_search_string():
    assert params_for(query="1%3D1")["GEMINI_SEARCH_STRING"] == "1=1"


def test_search_string_with_invalid_utf8_is_replaced_not_refused():
    assert params_for(query="%ff")["GEMINI_SEARCH_STRING"] == "\ufffd"


# SCRIPT_NAME and PATH_INFO (gmid.md 2.3) -------------------------------------------


def script_and_path_info(path, settings_=None, **changes):
    params = params_for(settings_, path=path, **changes)
    return params["SCRIPT_NAME"], params["PATH_INFO"]


def test_without_script_name_path_info_is_the_whole_path():
    assert script_and_path_info("/plain/params") == ("", "/plain/params")


def test_configured_script_name_is_split_off_the_path():
    settings_ = FastCGI(params=[("SCRIPT_NAME", "/fcgi")])
    assert script_and_path_info("/fcgi/sub/params", settings_) == (
        "/fcgi",
        "/sub/params",
    )


def test_configured_script_name_equal_to_the_path_leaves_empty_path_info():
    settings_ = FastCGI(params=[("SCRIPT_NAME", "/cgi-bin/hello")])
    assert script_and_path_info("/cgi-bin/hello", settings_) == ("/cgi-bin/hello", "")


def test_configured_script_name_with_trailing_slash_matches_without_it():
    settings_ = FastCGI(params=[("SCRIPT_NAME", "/cgi-bin/hello/")])
    assert script_and_path_info("/cgi-bin/hello/x", settings_) == (
        "/cgi-bin/hello",
        "/x",
    )


def test_configured_script_name_not_matching_keeps_path_info_leading_slash():
    # gmid sends "cgi-bin/hello2/params" here; we keep PATH_INFO a path.
    settings_ = FastCGI(params=[("SCRIPT_NAME", "/cgi-bin/hello/")])
    assert script_and_path_info("/cgi-bin/hello2/params", settings_) == (
        "/cgi-bin/hello/",
        "/cgi-bin/hello2/params",
    )


def test_configured_script_name_matches_only_whole_segments():
    settings_ = FastCGI(params=[("SCRIPT_NAME", "/app")])
    assert script_and_path_info("/application", settings_) == ("/app", "/application")


def test_configured_script_name_is_sent_once_in_its_built_in_position():
    settings_ = FastCGI(params=[("SCRIPT_NAME", "/fcgi")])
    assert names_for(settings_, path="/fcgi/x") == BASE_NAMES


def test_configured_script_name_wins_over_a_file_on_disk(tmp_path):
    (tmp_path / "cgi").mkdir()
    (tmp_path / "cgi" / "env.sh").write_text("#!/bin/sh\n")
    settings_ = FastCGI(params=[("SCRIPT_NAME", "/cgi")])
    params = params_for(
        settings_, os.path.isfile, path="/cgi/env.sh/x", root=str(tmp_path)
    )
    assert (params["SCRIPT_NAME"], params["PATH_INFO"]) == ("/cgi", "/env.sh/x")
    assert params["SCRIPT_FILENAME"] == f"{tmp_path}/cgi"


# fastcgi strip N ---------------------------------------------------------------------


def test_strip_1_removes_the_first_component():
    assert script_and_path_info("/strip/x/params", FastCGI(strip=1)) == (
        "",
        "/x/params",
    )


def test_strip_2_removes_two_components_unlike_gmid():
    assert script_and_path_info("/s2/a/b/c/params", FastCGI(strip=2)) == (
        "",
        "/b/c/params",
    )


def test_strip_more_than_the_path_has_leaves_the_root():
    assert script_and_path_info("/a/b", FastCGI(strip=5)) == ("", "/")


def test_strip_keeps_a_trailing_slash():
    assert script_and_path_info("/a/b/", FastCGI(strip=1)) == ("", "/b/")


@pytest.mark.parametrize("strip", [None, 0])
def test_no_strip_leaves_the_path(strip):
    assert script_and_path_info("/a/b", FastCGI(strip=strip)) == ("", "/a/b")


def test_strip_does_not_change_gemini_url_path():
    assert params_for(FastCGI(strip=1), path="/strip/x")["GEMINI_URL_PATH"] == "strip/x"


def test_strip_applies_before_the_configured_script_name():
    settings_ = FastCGI(strip=1, params=[("SCRIPT_NAME", "/app")])
    assert script_and_path_info("/prefix/app/x", settings_) == ("/app", "/x")


# The CGI convention: a file on disk names the script -------------------------------


@pytest.fixture
def capsule(tmp_path):
    (tmp_path / "cgi").mkdir()
    (tmp_path / "cgi" / "env.sh").write_text("#!/bin/sh\n")
    (tmp_path / "cgi" / "sub").mkdir()
    return tmp_path


def file_split(path, root, settings_=None, is_file=os.path.isfile):
    params = params_for(settings_, is_file, path=path, root=str(root))
    return {
        name: params[name]
        for name in ("SCRIPT_NAME", "PATH_INFO", "SCRIPT_FILENAME", "PATH_TRANSLATED")
        if name in params
    }


def test_file_under_the_root_becomes_script_name_and_the_rest_path_info(capsule):
    assert file_split("/cgi/env.sh/extra", capsule) == {
        "SCRIPT_NAME": "/cgi/env.sh",
        "PATH_INFO": "/extra",
        "SCRIPT_FILENAME": f"{capsule}/cgi/env.sh",
        "PATH_TRANSLATED": f"{capsule}/extra",
    }


def test_request_for_the_file_itself_has_empty_path_info(capsule):
    split = file_split("/cgi/env.sh", capsule)
    assert (split["SCRIPT_NAME"], split["PATH_INFO"]) == ("/cgi/env.sh", "")
    # Without PATH_INFO, none (RFC 3875): php-cgi with cgi.fix_pathinfo=0
    # took the root directory it named for the script.
    assert "PATH_TRANSLATED" not in split


def test_file_followed_by_a_slash_has_path_info_slash(capsule):
    split = file_split("/cgi/env.sh/", capsule)
    assert (split["SCRIPT_NAME"], split["PATH_INFO"]) == ("/cgi/env.sh", "/")


def test_directory_is_not_a_script(capsule):
    split = file_split("/cgi/sub/x", capsule)
    assert (split["SCRIPT_NAME"], split["PATH_INFO"]) == ("", "/cgi/sub/x")
    assert "SCRIPT_FILENAME" not in split


def test_missing_file_leaves_the_whole_path_as_path_info_and_names_no_file(capsule):
    # A SCRIPT_FILENAME or PATH_TRANSLATED of the whole path was one php-cgi
    # searched back from (cgi.fix_pathinfo) to the first file it found: one
    # this process could not see (another user's directory, a link that
    # dangles inside a chroot), or one made since it looked.
    split = file_split("/nothing/here", capsule)
    assert split == {"SCRIPT_NAME": "", "PATH_INFO": "/nothing/here"}


def test_root_with_trailing_slash_gives_single_slashes(capsule):
    split = file_split("/cgi/env.sh/x", f"{capsule}/")
    assert split["SCRIPT_FILENAME"] == f"{capsule}/cgi/env.sh"
    assert split["PATH_TRANSLATED"] == f"{capsule}/x"


def test_file_split_applies_after_strip(capsule):
    split = file_split("/mount/cgi/env.sh/x", capsule, FastCGI(strip=1))
    assert (split["SCRIPT_NAME"], split["PATH_INFO"]) == ("/cgi/env.sh", "/x")


def test_shortest_file_prefix_wins():
    files = {"/srv/a", "/srv/a/b"}
    split = file_split("/a/b/c", "/srv", is_file=files.__contains__)
    assert (split["SCRIPT_NAME"], split["PATH_INFO"]) == ("/a", "/b/c")


def test_symlink_to_a_file_outside_the_root_is_not_a_script(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.sh").write_text("#!/bin/sh\n")
    (root / "link.sh").symlink_to(tmp_path / "secret.sh")
    (root / "dir").symlink_to(tmp_path, target_is_directory=True)
    # Not split there, the path went whole to the application, whose
    # SCRIPT_FILENAME named the link: fcgiwrap followed it and ran the file.
    for path, name in (("/link.sh/x", "/link.sh"), ("/link.sh", "/link.sh"), ("/dir/secret.sh", "/dir/secret.sh")):
        with pytest.raises(NoSuchScript) as refused:
            file_split(path, root)
        assert str(refused.value) == f"{name} leads outside the root"


def test_symlink_to_a_file_inside_the_root_is_a_script(capsule):
    (capsule / "alias.sh").symlink_to(capsule / "cgi" / "env.sh")
    split = file_split("/alias.sh/x", capsule)
    assert (split["SCRIPT_NAME"], split["PATH_INFO"]) == ("/alias.sh", "/x")


def test_no_file_check_without_a_root():
    def is_file(path):
        raise AssertionError(f"looked at {path}")

    assert params_for(None, is_file, path="/cgi/env.sh/x")["SCRIPT_NAME"] == ""


def test_document_root_is_the_location_root(capsule):
    assert params_for(root=str(capsule))["DOCUMENT_ROOT"] == str(capsule)


# User params -------------------------------------------------------------------------


def test_user_param_replaces_a_built_in_in_its_position():
    settings_ = FastCGI(params=[("SERVER_NAME", "override")])
    params = request_params(FACTS, settings_, no_files)
    assert [name for name, _ in params] == BASE_NAMES
    assert dict(params)["SERVER_NAME"] == "override"


def test_other_user_params_are_appended_in_config_order():
    settings_ = FastCGI(params=[("ZED", "1"), ("ALPHA", "2"), ("REQUEST_METHOD", "X")])
    params = request_params(FACTS, settings_, no_files)
    assert params[-2:] == [("ZED", "1"), ("ALPHA", "2")]
    assert dict(params)["REQUEST_METHOD"] == "X"
    assert len(params) == len(BASE_NAMES) + 2


def test_user_param_given_twice_is_sent_once_with_the_last_value():
    settings_ = FastCGI(params=[("FOO", "1"), ("FOO", "2")])
    params = request_params(FACTS, settings_, no_files)
    assert [value for name, value in params if name == "FOO"] == ["2"]


def test_user_param_for_a_certificate_name_is_appended_without_a_certificate():
    settings_ = FastCGI(params=[("REMOTE_USER", "nobody")])
    assert request_params(FACTS, settings_, no_files)[-1] == ("REMOTE_USER", "nobody")


def test_user_param_replaces_a_certificate_param_when_there_is_one():
    settings_ = FastCGI(params=[("REMOTE_USER", "nobody")])
    params = request_params(
        replace(FACTS, certificate=CERTIFICATE), settings_, no_files
    )
    assert dict(params)["REMOTE_USER"] == "nobody"
    names = [name for name, _ in params]
    assert names.index("REMOTE_USER") < names.index("GEMINI_URL")


# Client input cannot forge parameters ----------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/a\r\nFOO=bar",
        "/a\nSCRIPT_NAME=/evil",
        "/x=y/QUERY_STRING=1",
        "/a\x00FOO=bar",
        "/%00FOO=bar",
    ],
)
def test_path_content_never_adds_or_changes_parameter_names(path):
    assert names_for(path=path) == BASE_NAMES
    params = params_for(path=path)
    assert params["PATH_INFO"] == path.replace("\x00", "\ufffd")
    assert params["REQUEST_METHOD"] == "GET"


def test_query_content_never_adds_parameter_names():
    names = names_for(query="%0D%0AFOO%3Dbar%00")
    assert names == [*BASE_NAMES[:13], "GEMINI_SEARCH_STRING", *BASE_NAMES[13:]]


def test_nul_decoded_from_the_query_is_replaced():
    assert params_for(query="a%00b")["GEMINI_SEARCH_STRING"] == "a\ufffdb"


def test_line_breaks_decoded_from_the_query_stay_in_the_value():
    assert params_for(query="a%0D%0AFOO")["GEMINI_SEARCH_STRING"] == "a\r\nFOO"


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=60).map(lambda text: "/" + text),
    st.one_of(st.none(), st.text(max_size=60)),
    st.booleans(),
)
def test_names_depend_only_on_query_shape_and_certificate(
    path, query, with_certificate
):
    certificate = CERTIFICATE if with_certificate else None
    params = request_params(
        replace(FACTS, path=path, query=query, certificate=certificate),
        FastCGI(),
        no_files,
    )
    names = [name for name, _ in params]
    expected = request_params(
        replace(
            FACTS,
            query="x" if query and "=" not in query else None,
            certificate=certificate,
        ),
        FastCGI(),
        no_files,
    )
    assert names == [name for name, _ in expected]
    assert all("\x00" not in value for _, value in params)


def test_inside_a_chroot_file_parameters_name_the_files_as_the_app_sees_them():
    def is_file(path):
        return path == "/capsule/cgi/env.sh"

    params = params_for(
        is_file=is_file, path="/cgi/env.sh/extra", root="/capsule", chroot="/var/gemini"
    )
    assert params["SCRIPT_NAME"] == "/cgi/env.sh"
    assert params["PATH_INFO"] == "/extra"
    assert params["SCRIPT_FILENAME"] == "/var/gemini/capsule/cgi/env.sh"
    assert params["DOCUMENT_ROOT"] == "/var/gemini/capsule"
    assert params["PATH_TRANSLATED"] == "/var/gemini/capsule/extra"


@pytest.mark.parametrize(
    "line, server_name",
    [
        ("gemini://Bücher.Example/x", "bücher.example"),
        ("gemini://xn--bcher-kva.example/x", "xn--bcher-kva.example"),
        ("gemini://♨/x", "♨"),
        # RFC 3875 4.1.14: an IPv6 literal keeps its brackets.
        ("gemini://[::1]:1965/x", "[::1]"),
        ("gemini://[2001:DB8::7]/x", "[2001:db8::7]"),
        ("gemini://192.0.2.7/x", "192.0.2.7"),
    ],
)
def test_server_name_is_the_url_host_as_written_decoded_and_lowercased(line, server_name):
    from types import SimpleNamespace

    from twisted.internet.address import IPv4Address

    from gemfcgi.gemini.request import parse_request_line
    from gemfcgi.handlers.fastcgi import request_facts
    from gemfcgi.routing import PathSettings

    client = SimpleNamespace(
        peer=IPv4Address("TCP", "127.0.0.1", 40000),
        transport=SimpleNamespace(getHost=lambda: IPv4Address("TCP", "127.0.0.1", 1965)),
        tls=None,
        site=SimpleNamespace(chroot=None),
    )
    facts = request_facts(client, parse_request_line(line.encode()), PathSettings(root="/srv"))
    assert dict(request_params(facts, FastCGI()))["SERVER_NAME"] == server_name


def test_path_translated_takes_the_root_of_the_fastcgi_location_as_gmid_does():
    # Another location set the root of this path: DOCUMENT_ROOT follows the
    # path's root, PATH_TRANSLATED gmid's (the fastcgi block's, else the server's).
    params = params_for(None, lambda path: path == "/srv/other/app", path="/app/x", root="/srv/other",
                        translated_root="/srv/server")
    assert params["PATH_TRANSLATED"] == "/srv/server/x"
    assert params["DOCUMENT_ROOT"] == "/srv/other"


def test_the_fastcgi_root_is_the_fastcgi_blocks_own_else_the_servers():
    from gemfcgi.config.model import Location, LocationOptions, Server
    from gemfcgi.routing import VirtualHost

    app = FastCGI(address=FastCGISocket("/run/app.sock"))
    server = Server(name="example.org", options=LocationOptions(root="/srv/server"), locations=[
        Location("/app/static/*", LocationOptions(root="/srv/other")),
        Location("/app/*", LocationOptions(fastcgi=app)),
        Location("/own/*", LocationOptions(fastcgi=app, root="/srv/own")),
    ])
    host = VirtualHost(server)
    settings = host.settings_for("/app/static/x")
    assert (settings.root, settings.fastcgi_root) == ("/srv/other", "/srv/server")
    assert host.settings_for("/own/x").fastcgi_root == "/srv/own"
    assert host.settings_for("/elsewhere").fastcgi_root is None


def test_a_link_that_changes_while_it_is_resolved_is_no_script(capsule, monkeypatch):
    # realpath raises EINVAL when a symlink it met is a directory by the
    # time it reads the link: the request failed with a traceback.
    import gemfcgi.fastcgi.params as params_module

    realpath = os.path.realpath

    def changed(path):
        if path.endswith("env.sh"):
            raise OSError(22, "Invalid argument", path)
        return realpath(path)

    monkeypatch.setattr(params_module.os.path, "realpath", changed)
    with pytest.raises(NoSuchScript):
        file_split("/cgi/env.sh/extra", capsule)


def test_an_ipv4_client_of_a_dual_stack_socket_sees_both_addresses_as_ipv4():
    # REMOTE_ADDR was 127.0.0.1 and SERVER_ADDR beside it ::ffff:127.0.0.1.
    from types import SimpleNamespace

    from twisted.internet.address import IPv4Address, IPv6Address

    from gemfcgi.gemini.request import parse_request_line
    from gemfcgi.handlers.fastcgi import request_facts
    from gemfcgi.routing import PathSettings

    client = SimpleNamespace(
        peer=IPv4Address("TCP", "127.0.0.1", 40000),
        transport=SimpleNamespace(getHost=lambda: IPv6Address("TCP", "::ffff:127.0.0.1", 1965)),
        tls=None,
        site=SimpleNamespace(chroot=None),
    )
    facts = request_facts(client, parse_request_line(b"gemini://localhost/x"), PathSettings(root="/srv"))
    params = dict(request_params(facts, FastCGI()))
    assert (params["REMOTE_ADDR"], params["SERVER_ADDR"]) == ("127.0.0.1", "127.0.0.1")


def test_a_path_through_a_file_that_is_no_script_of_the_application_names_nothing(capsule):
    # location "*.php": /static/photo.gif/x.php went to php-cgi whole, which
    # found photo.gif in SCRIPT_FILENAME (cgi.fix_pathinfo) and ran it.
    (capsule / "static").mkdir()
    (capsule / "static" / "photo.gif").write_bytes(b"GIF89a<?php echo 1; ?>")
    (capsule / "page.php").write_text("<?php echo 1; ?>")
    asked: list[str] = []

    def php_only(path: str) -> bool:
        asked.append(path)
        return path.endswith(".php")

    facts = replace(FACTS, root=str(capsule), path="/static/photo.gif/x.php")
    with pytest.raises(NoSuchScript) as refused:
        request_params(facts, FastCGI(), os.path.isfile, php_only)
    assert str(refused.value) == "/static/photo.gif is a file this application does not serve"
    split = dict(request_params(replace(facts, path="/page.php/more"), FastCGI(), os.path.isfile, php_only))
    assert (split["SCRIPT_NAME"], split["PATH_INFO"]) == ("/page.php", "/more")
    assert asked == ["/static/photo.gif", "/page.php"]


def test_whether_a_file_is_a_script_is_asked_of_its_path_before_fastcgi_strip(capsule):
    asked: list[str] = []
    facts = replace(FACTS, root=str(capsule), path="/app/cgi/env.sh/x")
    params = dict(request_params(facts, FastCGI(strip=1), os.path.isfile, lambda p: asked.append(p) or True))
    assert (params["SCRIPT_NAME"], params["PATH_INFO"]) == ("/cgi/env.sh", "/x")
    assert asked == ["/app/cgi/env.sh"]


def test_scripts_are_looked_for_under_the_document_root_a_param_gives(tmp_path, capsule):
    # With a root of its own as well, the split looked there, and fcgiwrap,
    # which looks under DOCUMENT_ROOT, was sent no SCRIPT_NAME.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings_ = FastCGI(params=[("DOCUMENT_ROOT", str(capsule))])
    params = params_for(settings_, os.path.isfile, root=str(elsewhere), path="/cgi/env.sh/extra")
    assert (params["SCRIPT_NAME"], params["PATH_INFO"]) == ("/cgi/env.sh", "/extra")
    assert params["SCRIPT_FILENAME"] == f"{capsule}/cgi/env.sh"
    assert params["DOCUMENT_ROOT"] == str(capsule)


def test_a_file_is_a_script_where_a_request_for_it_reaches_the_same_application_unhindered():
    from gemfcgi.config import model
    from gemfcgi.handlers.fastcgi import _reaches_the_same_application
    from gemfcgi.routing import VirtualHost

    def socket(path, **params):
        return model.FastCGI(address=model.FastCGISocket(path), params=list(params.items()))

    server = model.Server(name="localhost", locations=[
        model.Location("/secret.php", model.LocationOptions(block=model.BlockReturn(51, "blocked"))),
        model.Location("/admin.php", model.LocationOptions(require_client_ca="/etc/ca.pem")),
        model.Location("/wiki/index.php/*", model.LocationOptions(fastcgi=socket("/run/php.sock"))),
        model.Location("*.php", model.LocationOptions(fastcgi=socket("/run/php.sock"))),
        model.Location("/cgi/secret.sh", model.LocationOptions(block=model.BlockReturn(51, ""))),
        model.Location("/cgi/admin.sh", model.LocationOptions(require_client_ca="/etc/ca.pem")),
        model.Location("/cgi/special/*", model.LocationOptions(fastcgi=socket("/run//cgi.sock", A="1"))),
        model.Location("/cgi/*", model.LocationOptions(fastcgi=socket("/run/cgi.sock"))),
        model.Location("*.gmi", model.LocationOptions(root="/srv/uploads")),
        model.Location("/app/*", model.LocationOptions(fastcgi=socket("/run/app.sock"))),
    ])
    vhost = VirtualHost(server)
    php = vhost.settings_for("/x.php")
    cgi = vhost.settings_for("/cgi/x")
    assert _reaches_the_same_application(vhost, php, "/index.php")
    assert not _reaches_the_same_application(vhost, php, "/static/photo.gif")
    # Blocked, or behind a client CA, alone: not by way of a path under it.
    assert not _reaches_the_same_application(vhost, php, "/secret.php")
    assert not _reaches_the_same_application(vhost, php, "/admin.php")
    # A location that takes the paths under a front controller.
    assert _reaches_the_same_application(vhost, php, "/wiki/index.php")
    # One application, its socket written two ways, other parameters.
    assert _reaches_the_same_application(vhost, cgi, "/cgi/special/run.sh")
    assert not _reaches_the_same_application(vhost, cgi, "/static/run.sh")
    # Blocked or behind a client CA alone, though the paths under it reach it.
    assert not _reaches_the_same_application(vhost, cgi, "/cgi/secret.sh")
    assert not _reaches_the_same_application(vhost, cgi, "/cgi/admin.sh")
    # /app/evil.txt/x.gmi found evil.txt under the uploads' root, which no
    # request for /app/evil.txt looks in.
    app_under_uploads = vhost.settings_for("/app/evil.txt/x.gmi")
    assert app_under_uploads.root == "/srv/uploads"
    assert not _reaches_the_same_application(vhost, app_under_uploads, "/app/evil.txt")


def test_a_root_moved_to_a_new_release_still_has_its_scripts(tmp_path):
    # The root was resolved once: its scripts then lay "outside" it.
    for release in ("one", "two"):
        (tmp_path / release / "cgi").mkdir(parents=True)
        (tmp_path / release / "cgi" / "env.sh").write_text("#!/bin/sh\n")
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "one")
    assert file_split("/cgi/env.sh/x", current)["SCRIPT_NAME"] == "/cgi/env.sh"
    (tmp_path / "next").symlink_to(tmp_path / "two")
    os.replace(tmp_path / "next", current)
    assert file_split("/cgi/env.sh/x", current)["SCRIPT_NAME"] == "/cgi/env.sh"


def test_a_document_root_param_is_looked_in_from_inside_the_chroot():
    # It names the scripts as the application, outside, sees them.
    looked: list[str] = []

    def is_file(path: str) -> bool:
        looked.append(path)
        return path == "/www/cgi/env.sh"

    settings_ = FastCGI(params=[("DOCUMENT_ROOT", "/srv/jail/www")])
    params = params_for(settings_, is_file, root="/capsule", chroot="/srv/jail", path="/cgi/env.sh/x")
    assert (params["SCRIPT_NAME"], params["PATH_INFO"]) == ("/cgi/env.sh", "/x")
    assert looked == ["/www/cgi", "/www/cgi/env.sh"]
    # One outside the chroot cannot be looked in: nothing is named for the
    # application to search on its own.
    looked.clear()
    settings_ = FastCGI(params=[("DOCUMENT_ROOT", "/var/www")])
    params = params_for(settings_, is_file, root="/capsule", chroot="/srv/jail", path="/cgi/env.sh/x")
    assert looked == []
    assert (params["SCRIPT_NAME"], params["PATH_INFO"]) == ("", "/cgi/env.sh/x")
    assert "SCRIPT_FILENAME" not in params and "PATH_TRANSLATED" not in params


def test_a_file_whose_own_request_is_kept_from_the_application_is_no_script():
    # A catch-all fastcgi took the paths under it: /uploads/photo.gif/x.php
    # ran the image where "*.gif" said fastcgi off, or named another application.
    from gemfcgi.config import model
    from gemfcgi.handlers.fastcgi import _reaches_the_same_application
    from gemfcgi.routing import VirtualHost

    php = model.FastCGI(address=model.FastCGITCP("127.0.0.1", 9000))
    server = model.Server(name="localhost", options=model.LocationOptions(fastcgi=php), locations=[
        model.Location("*.gif", model.LocationOptions(fastcgi=model.FastCGI(off=True))),
        model.Location("/flup/*", model.LocationOptions(
            fastcgi=model.FastCGI(address=model.FastCGISocket("/run/flup.sock")))),
    ])
    vhost = VirtualHost(server)
    settings = vhost.settings_for("/uploads/photo.gif/x.php")
    assert settings.fastcgi is php
    assert not _reaches_the_same_application(vhost, settings, "/uploads/photo.gif")
    assert not _reaches_the_same_application(vhost, settings, "/flup/app.py")
    assert _reaches_the_same_application(vhost, settings, "/index.php")


@pytest.mark.parametrize("configured", ["/", ""])
def test_a_configured_script_name_that_names_no_script_names_no_file(capsule, configured):
    # SCRIPT_FILENAME was the root and the client's whole path, which
    # php-cgi searched back from to the image.
    params = params_for(FastCGI(params=[("SCRIPT_NAME", configured)]), os.path.isfile,
                        root=str(capsule), path="/cgi/env.sh/x.php")
    assert (params["SCRIPT_NAME"], params["PATH_INFO"]) == ("", "/cgi/env.sh/x.php")
    assert "SCRIPT_FILENAME" not in params and "PATH_TRANSLATED" not in params


def test_a_link_to_a_file_that_is_no_script_is_no_script(capsule):
    # cgi-bin/s.sh -> secret.sh, which a block keeps to itself.
    (capsule / "cgi" / "secret.sh").write_text("#!/bin/sh\n")
    (capsule / "cgi" / "s.sh").symlink_to("secret.sh")
    facts = replace(FACTS, root=str(capsule), path="/cgi/s.sh/x")
    with pytest.raises(NoSuchScript):
        request_params(facts, FastCGI(), os.path.isfile, lambda name: name != "/cgi/secret.sh")
    split = dict(request_params(facts, FastCGI(), os.path.isfile, lambda name: True))
    assert (split["SCRIPT_NAME"], split["SCRIPT_FILENAME"]) == ("/cgi/s.sh", f"{capsule}/cgi/secret.sh")


def test_a_file_is_a_script_only_where_its_own_request_would_run_it():
    # Fourth round: "*/" took /uploads/photo.gif/ to PHP; a download script
    # (param SCRIPT_NAME) and another fastcgi strip ran some other file
    # for the image's own request, yet the image counted as a script; and
    # a root written with a trailing slash was another root.
    from gemfcgi.config import model
    from gemfcgi.handlers.fastcgi import _reaches_the_same_application
    from gemfcgi.routing import VirtualHost

    php = model.FastCGITCP("127.0.0.1", 9000)
    server = model.Server(name="localhost", options=model.LocationOptions(root="/srv/www/"), locations=[
        model.Location("*/", model.LocationOptions(fastcgi=model.FastCGI(address=php))),
        model.Location("/uploads/*", model.LocationOptions(fastcgi=model.FastCGI(
            address=php, params=[("SCRIPT_NAME", "/download.php")]))),
        model.Location("/v1/*.php", model.LocationOptions(fastcgi=model.FastCGI(address=php, strip=1))),
        model.Location("/wiki/index.php/*", model.LocationOptions(
            root="/srv/www", fastcgi=model.FastCGI(address=php))),
        model.Location("*.php", model.LocationOptions(fastcgi=model.FastCGI(address=php))),
    ])
    vhost = VirtualHost(server)
    assert not _reaches_the_same_application(vhost, vhost.settings_for("/x.php"), "/notes.txt")
    assert not _reaches_the_same_application(vhost, vhost.settings_for("/x.php"), "/uploads/photo.gif")
    assert not _reaches_the_same_application(vhost, vhost.settings_for("/v1/x.php"), "/v1/photo.gif")
    assert _reaches_the_same_application(vhost, vhost.settings_for("/v1/x.php"), "/v1/app.php")
    wiki = vhost.settings_for("/wiki/index.php/Main")
    assert _reaches_the_same_application(vhost, wiki, "/wiki/index.php")


def test_a_file_is_looked_for_under_the_document_root_its_own_request_would_use():
    # Fifth round: /cgi-bin/foo.sh ran A's foo.sh, /cgi-bin/foo.sh/x B's.
    from gemfcgi.config import model
    from gemfcgi.handlers.fastcgi import _reaches_the_same_application
    from gemfcgi.routing import VirtualHost

    def wrap(document_root):
        return model.FastCGI(address=model.FastCGISocket("/run/fcgiwrap.sock"),
                             params=[("DOCUMENT_ROOT", document_root)])

    server = model.Server(name="localhost", options=model.LocationOptions(root="/srv/www"), locations=[
        model.Location("/cgi-bin/*.sh", model.LocationOptions(fastcgi=wrap("/srv/A"))),
        model.Location("/cgi-bin/*", model.LocationOptions(fastcgi=wrap("/srv/B"))),
    ])
    vhost = VirtualHost(server)
    assert not _reaches_the_same_application(vhost, vhost.settings_for("/cgi-bin/foo.sh/x"), "/cgi-bin/foo.sh")
    assert _reaches_the_same_application(vhost, vhost.settings_for("/cgi-bin/x.sh"), "/cgi-bin/foo.sh")


def test_a_configured_script_filename_is_run_whatever_files_the_path_names(capsule):
    # A front controller: the path was searched, and a file on it got 51.
    looked: list[str] = []

    def is_file(path: str) -> bool:
        looked.append(path)
        return True

    settings_ = FastCGI(params=[("SCRIPT_FILENAME", f"{capsule}/front/index.php")])
    params = params_for(settings_, is_file, root=str(capsule), path="/front/index.php/page")
    assert looked == []
    assert (params["SCRIPT_NAME"], params["PATH_INFO"]) == ("", "/front/index.php/page")
    assert params["SCRIPT_FILENAME"] == f"{capsule}/front/index.php"


def test_a_location_under_every_file_of_a_directory_makes_none_of_them_a_script():
    # Sixth round: "/apps/*/*" ran /apps/readme.txt/x as PHP, where a
    # request for /apps/readme.txt served it as text.
    from gemfcgi.config import model
    from gemfcgi.handlers.fastcgi import _reaches_the_same_application
    from gemfcgi.routing import VirtualHost

    php = model.FastCGI(address=model.FastCGITCP("127.0.0.1", 9000))
    server = model.Server(name="localhost", options=model.LocationOptions(root="/srv/www"), locations=[
        model.Location("/apps/*/*", model.LocationOptions(fastcgi=php)),
        model.Location("/uploads/*/?*", model.LocationOptions(fastcgi=php)),
        model.Location("/files/[a-z]*/*", model.LocationOptions(fastcgi=php)),
        model.Location("/[a-z][a-z]/*", model.LocationOptions(fastcgi=php)),
        model.Location("/notes/????/*", model.LocationOptions(fastcgi=php)),
        model.Location("/wiki/index.php/*", model.LocationOptions(fastcgi=php)),
    ])
    vhost = VirtualHost(server)
    # Seventh round: classes and "?" took the paths under any file of their shape.
    assert not _reaches_the_same_application(vhost, vhost.settings_for("/en/x"), "/en")
    assert not _reaches_the_same_application(vhost, vhost.settings_for("/notes/todo/x"), "/notes/todo")
    assert not _reaches_the_same_application(vhost, vhost.settings_for("/files/readme.txt/x"), "/files/readme.txt")
    assert not _reaches_the_same_application(vhost, vhost.settings_for("/apps/readme.txt/x"), "/apps/readme.txt")
    assert not _reaches_the_same_application(vhost, vhost.settings_for("/uploads/a.gif/x"), "/uploads/a.gif")
    assert _reaches_the_same_application(vhost, vhost.settings_for("/apps/blog/index.php/x"), "/apps/blog/index.php")
    assert _reaches_the_same_application(vhost, vhost.settings_for("/wiki/index.php/Main"), "/wiki/index.php")


def test_paths_are_mapped_across_a_chroot_normalised():
    # "/srv/jail/../outside" was taken for a place inside the jail, and a
    # root of "/../x" became "/srv/jail/../x" for the application, outside it.
    looked: list[str] = []

    def is_file(path: str) -> bool:
        looked.append(path)
        return os.path.normpath(path) == "/www/app.php"

    escaping = FastCGI(params=[("DOCUMENT_ROOT", "/srv/jail/../outside")])
    params = params_for(escaping, is_file, root="/www", chroot="/srv/jail", path="/app.php/x")
    assert looked == [] and "SCRIPT_FILENAME" not in params
    spelt_twice = FastCGI(params=[("DOCUMENT_ROOT", "/srv//jail/./www")])
    params = params_for(spelt_twice, is_file, root="/www", chroot="/srv/jail", path="/app.php/x")
    assert params["SCRIPT_FILENAME"] == "/srv/jail/www/app.php"
    params = params_for(None, is_file, root="/../../www", chroot="/srv/jail", path="/app.php/x")
    assert params["DOCUMENT_ROOT"] == "/srv/jail/www"
    assert params["PATH_TRANSLATED"] == "/srv/jail/www/x"


def test_a_chroot_of_slash_sees_every_path_as_it_is():
    from gemfcgi.fastcgi.params import seen_from_here

    assert seen_from_here("/srv/www/../cgi", "/") == "/srv/cgi"
    assert seen_from_here("/srv/www", None) == "/srv/www"
    assert seen_from_here("", "/srv/jail") is None
