"""gemfcgi uses the FIRST matching server block; ``shadow_warnings`` says where that differs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gemfcgi.config import shadow_warnings
from gemfcgi.config.model import Config, Server


def servers(*blocks: str) -> str:
    out = []
    for block in blocks:
        name, _, aliases = block.partition("|")
        alias_lines = "".join(f'\talias "{a}"\n' for a in aliases.split(",") if a)
        out.append(f'server "{name}" {{\n\tlisten on *\n{alias_lines}\tcert "/c"\n\tkey "/k"\n}}\n')
    return "".join(out)


def test_catch_all_first_shadows_a_later_server(warnings_of):
    assert warnings_of(servers("*", "example.com")) == [
        'gmid.conf:6: server "example.com" is shadowed by server "*" at gmid.conf:1 '
        "(gemfcgi uses the first matching block)"
    ]


def test_catch_all_last_shadows_nothing(warnings_of):
    assert warnings_of(servers("example.com", "*")) == []


def test_a_server_with_one_unmatched_alias_is_warned_of_for_the_name_it_loses(warnings_of):
    # Not hidden, but requests for www.example.com go to the glob (in gmid,
    # where the last match wins, to the block of that name).
    assert warnings_of(servers("*.example.com", "www.example.com|example.com")) == [
        'gmid.conf:6: server "www.example.com": requests for its name go to server '
        '"*.example.com" at gmid.conf:1 (gemfcgi uses the first matching block)'
    ]
    assert warnings_of(servers("a*", "d.test|a.test")) == [
        'gmid.conf:6: server "d.test": requests for its alias "a.test" go to server '
        '"a*" at gmid.conf:1 (gemfcgi uses the first matching block)'
    ]


def test_a_server_whose_name_and_aliases_are_all_matched_is_shadowed(warnings_of):
    assert warnings_of(servers("*.example.com|example.com", "www.example.com|example.com")) == [
        'gmid.conf:7: server "www.example.com" is shadowed by server "*.example.com" at '
        "gmid.conf:1 (gemfcgi uses the first matching block)"
    ]


def test_a_glob_with_question_marks_or_classes_shadows_no_wider_glob(warnings_of):
    # "?.test" matched the text "*.test", not every host that alias takes.
    assert warnings_of(servers("?.test", "new.example|*.test")) == []
    assert warnings_of(servers("www[0-9].example", "w.example|www*.example")) == []


def test_a_glob_written_in_decomposed_unicode_is_compared_as_hosts_come(warnings_of):
    assert warnings_of(servers("*.bücher.example", "*.bu\u0308cher.example|third.example")) == [
        'gmid.conf:6: server "*.bu\u0308cher.example": requests for its name go to server '
        '"*.bücher.example" at gmid.conf:1 (gemfcgi uses the first matching block)'
    ]


def test_a_glob_in_punycode_and_the_same_glob_in_unicode_shadow_each_other():
    # Both take the same hosts; neither spelling was said to hide the other.
    from gemfcgi.config import parse_config

    for first, second in [("*.bücher.example", "*.xn--bcher-kva.example"),
                          ("*.xn--bcher-kva.example", "*.bücher.example")]:
        config, _ = parse_config(servers(first, second), "gmid.conf")
        assert [str(w) for w in shadow_warnings(config)] == [
            f'gmid.conf:6: server "{second}" is shadowed by server "{first}" at gmid.conf:1 '
            "(gemfcgi uses the first matching block)"
        ]


def test_matching_is_case_insensitive(warnings_of):
    assert len(warnings_of(servers("EXAMPLE.com", "example.COM"))) == 1


def test_an_alias_of_an_earlier_block_shadows(warnings_of):
    assert warnings_of(servers("a.org|b.org", "b.org")) == [
        'gmid.conf:7: server "b.org" is shadowed by server "a.org" at gmid.conf:1 '
        "(gemfcgi uses the first matching block)"
    ]


def test_a_server_split_across_two_earlier_blocks_names_both(warnings_of):
    assert warnings_of(servers("a.org", "b.org", "a.org|b.org")) == [
        'gmid.conf:11: server "a.org" is shadowed by server "a.org" at gmid.conf:1 and '
        'server "b.org" at gmid.conf:6 (gemfcgi uses the first matching block)'
    ]


def test_shadow_warnings_work_on_a_config_built_without_origins():
    config = Config(servers=[Server("*"), Server("a")], source="quick")
    assert [str(w) for w in shadow_warnings(config)] == [
        'quick: server "a" is shadowed by server "*" at quick (gemfcgi uses the first matching block)'
    ]


def test_a_name_is_compared_as_requests_bring_it(warnings_of):
    # "second.test." is "second.test" to every request, and bücher.example
    # its punycode: the later blocks were never used, and nothing said so.
    assert len(warnings_of(servers("first.test|second.test", "second.test."))) == 1
    said = warnings_of(servers("bücher.example", "xn--bcher-kva.example"))
    assert [line for line in said if "is shadowed by" in line] == [
        'gmid.conf:6: server "xn--bcher-kva.example" is shadowed by server "bücher.example" at '
        "gmid.conf:1 (gemfcgi uses the first matching block)"
    ]


def test_a_class_of_capitals_in_a_server_name_is_warned_of(warnings_of):
    # Hosts are compared lowercased: it matches no letter of one.
    assert warnings_of(servers("c[[:upper:]].test")) == [
        'gmid.conf:1: "c[[:upper:]].test": host names are compared in lower case, so [:upper:] '
        "matches no letter of one: write [:lower:] or [:alpha:]"
    ]


def test_the_first_block_taking_a_name_is_named_whether_it_takes_it_by_glob_or_by_name(warnings_of):
    # Earlier names are looked up by host and globs tried in order: the
    # glob comes first here, the same name written out second.
    said = warnings_of(servers("*.test", "a.test", "a.test|other.example"))
    assert said[-1] == (
        'gmid.conf:11: server "a.test": requests for its name go to server "*.test" at gmid.conf:1 '
        "(gemfcgi uses the first matching block)"
    )
    said = warnings_of(servers("a.test", "*.test|x.example", "a.test|other.example"))
    assert said[-1] == (
        'gmid.conf:12: server "a.test": requests for its name go to server "a.test" at gmid.conf:1 '
        "(gemfcgi uses the first matching block)"
    )


def test_an_ipv6_address_in_brackets_is_the_host_an_earlier_block_takes(warnings_of):
    # "[::1]" is the address as URLs write it, not a bracket class: the
    # block named "::1" takes its requests.
    assert warnings_of(servers("::1", "localhost|[::1]")) == [
        'gmid.conf:6: server "localhost": requests for its alias "[::1]" go to server "::1" at '
        "gmid.conf:1 (gemfcgi uses the first matching block)"
    ]


def test_globs_that_are_no_star_dot_name_are_compared_only_with_those_they_can_match(monkeypatch, warnings_of):
    # Each name was matched against every earlier glob not of the form
    # "*.name": 1,000 servers with 10 aliases like "a0.h1.*" took 28 s.
    from gemfcgi import serverindex
    from gemfcgi.gemini.hosts import HostPattern
    from gemfcgi.glob import compile_glob

    tried: list[str] = []

    class CountedRegex:
        def __init__(self, text: str) -> None:
            self.regex = compile_glob(text)

        def fullmatch(self, text: str):
            tried.append(text)
            return self.regex.fullmatch(text)

    real_matches = HostPattern.matches
    monkeypatch.setattr(serverindex, "compile_glob", CountedRegex)
    monkeypatch.setattr(HostPattern, "matches", lambda self, host: tried.append(host) or real_matches(self, host))
    count = 200
    blocks = [f"h{n}.test|" + ",".join(f"a{k}.h{n}.*" for k in range(10)) for n in range(count)]
    warnings = warnings_of(servers(*blocks, "late.test|a3.h7.*,a3.h7.x,a3.h*"))
    assert warnings == [
        f'gmid.conf:{15 * count + 1}: server "late.test": requests for its alias "{alias}" go to server '
        '"h7.test" at gmid.conf:106 (gemfcgi uses the first matching block)' for alias in ("a3.h7.*", "a3.h7.x")]
    assert len(tried) <= 3


def _first_by_trying_each(servers: list[Server], name: str):
    """What the index must answer: every earlier block tried in order, each name matched whole."""
    from gemfcgi.gemini.hosts import HostPattern, glob_spellings, literal_host, normal_glob
    from gemfcgi.glob import glob_matches

    host = literal_host(name)[1]
    for server in servers:
        patterns = [server.name, *server.aliases]
        if host is not None and any(HostPattern(p).matches(host) for p in patterns):
            return server
        # A glob in either spelling: "*.xn--bcher-kva.test" is "*.bücher.test".
        if host is None and any(glob_matches(text, normal_glob(p)) for p in patterns
                                for text in glob_spellings(normal_glob(name))
                                if "?" not in p and "[" not in p):
            return server
    return None


_NAMES = ["a.test", "b.a.test", "*.a.test", "*.test", "*", "?.test", "[ab].test", "b*", "*.b.a.test",
          "x.b.a.test", "A.Test", "*.A.TEST", "bücher.test", "*.bücher.test", "*.xn--bcher-kva.test",
          "w.xn--bcher-kva.test", "b\\*.test", "[::1]", "::1", ".a.test", "*a.test", "a*", "b.a.*", "*b",
          "a.*.test", "*.a.*", "x*.test", "bü*", "*cher.test", "[ab]*", "*[ab]"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3), min_size=1, max_size=8),
       st.sampled_from(_NAMES))
def test_the_first_block_taking_a_name_is_the_first_that_matches_it(blocks, name):
    from gemfcgi.serverindex import ServersByName

    servers = [Server(name=names[0], aliases=names[1:]) for names in blocks]
    index = ServersByName()
    for server in servers:
        index.add(server)
    assert index.first_taking(name) is _first_by_trying_each(servers, name)
