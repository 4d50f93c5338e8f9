"""``include "file"``: where it is allowed, how paths resolve, loops and errors."""

from __future__ import annotations

import os

import pytest

from gemfcgi.config import ConfigError, load_config, parse_config

SERVER = 'server "a" {\n\tlisten on *\n\tcert "/c"\n\tkey "/k"\n}\n'


def write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def error_strings(path: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(d) for d in caught.value.diagnostics]


def test_include_at_top_level_reads_its_directives(tmp_path):
    write(tmp_path / "servers.conf", SERVER)
    main = write(tmp_path / "gmid.conf", 'prefork 2\ninclude "servers.conf"\nuser "gmid"\n')
    config, _ = load_config(main)
    assert [s.name for s in config.servers] == ["a"]
    assert (config.prefork, config.user) == (2, "gmid")


def test_origins_in_an_included_file_name_that_file(tmp_path):
    included = write(tmp_path / "servers.conf", "\n" + SERVER)
    config, _ = load_config(write(tmp_path / "gmid.conf", 'include "servers.conf"\n'))
    assert str(config.servers[0].origin) == f"{included}:2"


def test_relative_include_resolves_from_the_including_files_directory(tmp_path):
    write(tmp_path / "conf.d" / "sub" / "server.conf", SERVER)
    write(tmp_path / "conf.d" / "all.conf", 'include "sub/server.conf"\n')
    config, _ = load_config(write(tmp_path / "gmid.conf", 'include "conf.d/all.conf"\n'))
    assert [s.name for s in config.servers] == ["a"]


def test_absolute_include_is_used_as_written(tmp_path):
    absolute = write(tmp_path / "elsewhere" / "server.conf", SERVER)
    config, _ = parse_config(f'include "{absolute}"\n', "gmid.conf", base_dir="/nonexistent")
    assert [s.name for s in config.servers] == ["a"]


def test_parse_config_resolves_relative_includes_against_base_dir(tmp_path):
    write(tmp_path / "server.conf", SERVER)
    config, _ = parse_config('include "server.conf"\n', "gmid.conf", base_dir=str(tmp_path))
    assert [s.name for s in config.servers] == ["a"]


def test_parse_config_without_base_dir_uses_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path / "server.conf", SERVER)
    monkeypatch.chdir(tmp_path)
    config, _ = parse_config('include "server.conf"\n')
    assert [s.name for s in config.servers] == ["a"]


def test_include_inside_types_adds_media_types(tmp_path):
    write(tmp_path / "mime.types", "# comment\ntext/markdown md markdown\nimage/png png\n")
    text = 'types {\n\tinclude "mime.types"\n\ttext/x-mandoc 1\n}\n'
    config, _ = parse_config(text, "gmid.conf", base_dir=str(tmp_path))
    assert config.types == {
        "gmi": "text/gemini", "gemini": "text/gemini",
        "md": "text/markdown", "markdown": "text/markdown", "png": "image/png",
        "1": "text/x-mandoc",
    }


def test_include_and_closing_brace_on_one_line(tmp_path):
    write(tmp_path / "mime.types", "image/png png")
    config, _ = parse_config(
        'types { include "mime.types" }\n', "gmid.conf", base_dir=str(tmp_path)
    )
    assert config.types["png"] == "image/png"


def test_errors_in_an_included_file_name_that_file_and_line(tmp_path):
    included = write(tmp_path / "servers.conf", 'server "a" {\n\tcert "/c"\n\tkey "/k"\n\tbogus\n}\n')
    main = write(tmp_path / "gmid.conf", 'prefork 2\ninclude "servers.conf"\nprefork 99\n')
    assert error_strings(main) == [
        f"{included}:4: unknown directive 'bogus'",
        f"{main}:3: invalid prefork number 99 (use 1 to 15)",
    ]


def test_errors_in_a_nested_include_name_the_innermost_file(tmp_path):
    inner = write(tmp_path / "inner.conf", "\n\nprefork 0\n")
    write(tmp_path / "outer.conf", 'include "inner.conf"\n')
    main = write(tmp_path / "gmid.conf", 'include "outer.conf"\n')
    assert error_strings(main) == [f"{inner}:3: invalid prefork number 0 (use 1 to 15)"]


def test_include_loop_is_an_error_naming_the_file_and_line(tmp_path):
    a = write(tmp_path / "a.conf", 'prefork 2\ninclude "b.conf"\n')
    b = write(tmp_path / "b.conf", '\n\ninclude "a.conf"\n')
    assert error_strings(a) == [f'{b}:3: include loop: "a.conf" is already being read']


def test_a_file_including_itself_is_a_loop(tmp_path):
    main = write(tmp_path / "gmid.conf", 'include "gmid.conf"\n')
    assert error_strings(main) == [f'{main}:1: include loop: "gmid.conf" is already being read']


def test_the_same_file_may_be_included_twice(tmp_path):
    write(tmp_path / "user.conf", 'user "gmid"\n')
    main = write(tmp_path / "gmid.conf", 'include "user.conf"\ninclude "user.conf"\n')
    assert load_config(main)[0].user == "gmid"


def test_missing_include_is_an_error_at_the_include_line(tmp_path):
    main = write(tmp_path / "gmid.conf", 'prefork 2\ninclude "nope.conf"\n')
    missing = os.path.join(str(tmp_path), "nope.conf")
    assert error_strings(main) == [
        f'{main}:2: cannot read included file "{missing}": No such file or directory'
    ]


def test_include_inside_a_server_is_an_error(errors_of):
    text = 'server "a" {\n\tcert "/c"; key "/k"\n\tinclude "x.conf"\n}\n'
    assert errors_of(text) == [
        "gmid.conf:3: 'include' is only allowed at top level and inside types { }"
    ]


def test_an_included_file_ends_its_last_statement(tmp_path):
    write(tmp_path / "user.conf", 'user "gmid"')  # no final newline
    config, _ = parse_config(
        'include "user.conf"\nprefork 2\n', "gmid.conf", base_dir=str(tmp_path)
    )
    assert (config.user, config.prefork) == ("gmid", 2)


def test_load_config_sets_source_to_the_path(tmp_path):
    main = write(tmp_path / "gmid.conf", SERVER)
    assert load_config(main)[0].source == main


def test_load_config_of_a_missing_file_is_a_config_error(tmp_path):
    missing = str(tmp_path / "gmid.conf")
    assert error_strings(missing) == [
        f"{missing}:1: cannot read the configuration file: No such file or directory"
    ]


def test_load_config_passes_defines(tmp_path):
    main = write(tmp_path / "gmid.conf", "user $u\n")
    assert load_config(main, defines={"u": "gmid"})[0].user == "gmid"


def test_a_relative_include_found_only_in_the_current_directory_is_read_as_gmid_reads_it(
    tmp_path, monkeypatch
):
    # gmid reads a relative include from its current directory: a gmid.conf
    # started from there keeps working, with a warning naming the file read.
    write(tmp_path / "conf.d" / "server.conf", SERVER)
    main = write(tmp_path / "etc" / "gmid.conf", 'include "conf.d/server.conf"\n')
    monkeypatch.chdir(tmp_path)
    config, warnings = load_config(main)
    assert [s.name for s in config.servers] == ["a"]
    read = os.path.join(str(tmp_path), "conf.d", "server.conf")
    assert [str(w) for w in warnings] == [
        f'{main}:1: "conf.d/server.conf" is not beside this file, so it is read from the current'
        f' directory ("{read}"), as gmid reads it: give its absolute path to read it from'
        " wherever the server starts"
    ]


def test_a_relative_include_found_only_where_the_server_started_is_read_from_there_after_it_moved(
    tmp_path, monkeypatch
):
    # A reload after twistd's --rundir looked in the new directory: the
    # file was gone, or another one of the same name was read.
    write(tmp_path / "start" / "conf.d" / "server.conf", SERVER)
    write(tmp_path / "run" / "conf.d" / "server.conf", SERVER.replace('"a"', '"elsewhere"'))
    main = write(tmp_path / "etc" / "gmid.conf", 'include "conf.d/server.conf"\n')
    monkeypatch.chdir(tmp_path / "run")
    config, warnings = load_config(main, start_dir=str(tmp_path / "start"))
    assert [s.name for s in config.servers] == ["a"]
    assert f'("{tmp_path}/start/conf.d/server.conf")' in str(warnings[0])


def test_a_relative_include_found_in_both_places_is_read_beside_the_file_with_a_warning(
    tmp_path, monkeypatch
):
    write(tmp_path / "server.conf", SERVER.replace('"a"', '"cwd"'))
    beside = write(tmp_path / "etc" / "server.conf", SERVER)
    main = write(tmp_path / "etc" / "gmid.conf", 'include "server.conf"\n')
    monkeypatch.chdir(tmp_path)
    config, warnings = load_config(main)
    assert [s.name for s in config.servers] == ["a"]
    gmids = os.path.join(str(tmp_path), "server.conf")
    assert [str(w) for w in warnings] == [
        f'{main}:1: "server.conf" is read from beside this file ("{beside}"); gmid would read'
        f' "{gmids}", from the current directory: give an absolute path'
    ]


def test_a_relative_include_started_from_its_own_directory_warns_of_nothing(tmp_path, monkeypatch):
    write(tmp_path / "server.conf", SERVER)
    main = write(tmp_path / "gmid.conf", 'include "server.conf"\n')
    monkeypatch.chdir(tmp_path)
    config, warnings = load_config(main)
    assert ([s.name for s in config.servers], warnings) == (["a"], [])


def test_a_missing_include_names_the_file_looked_for_beside_the_including_one(tmp_path, monkeypatch):
    main = write(tmp_path / "etc" / "gmid.conf", 'include "nope.conf"\n')
    monkeypatch.chdir(tmp_path)
    missing = os.path.join(str(tmp_path), "etc", "nope.conf")
    assert error_strings(main) == [
        f'{main}:1: cannot read included file "{missing}": No such file or directory'
    ]


@pytest.mark.parametrize("ending", ["\n", ""], ids=["newline", "no-newline"])
def test_an_include_on_the_last_line_of_an_included_file_is_still_seen_as_a_loop(tmp_path, ending):
    # Without a newline after it, the file was closed before its include
    # was read: the loop went unseen and the parser ran for ever.
    looping = write(tmp_path / "self.conf", f'include "self.conf"{ending}')
    main = write(tmp_path / "gmid.conf", 'include "self.conf"\n' + SERVER)
    assert error_strings(main) == [f'{looping}:1: include loop: "self.conf" is already being read']


def test_two_files_that_end_including_each_other_are_a_loop(tmp_path):
    write(tmp_path / "a.conf", 'include "b.conf"')
    b = write(tmp_path / "b.conf", 'prefork 2\ninclude "a.conf"')
    main = write(tmp_path / "gmid.conf", 'include "a.conf"\n')
    assert error_strings(main) == [f'{b}:2: include loop: "a.conf" is already being read']


def test_a_file_ending_in_an_include_is_read_whole_before_what_follows_it(tmp_path):
    write(tmp_path / "user.conf", 'user "gmid"')
    write(tmp_path / "middle.conf", 'prefork 3\ninclude "user.conf"')
    main = write(tmp_path / "gmid.conf", 'include "middle.conf"\ninclude "user.conf"\nchroot "/srv"\n')
    config, _ = load_config(main)
    assert (config.prefork, config.user, config.chroot) == (3, "gmid", "/srv")


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_configuration_or_include_that_is_no_regular_file_is_refused(tmp_path, kind):
    # A FIFO blocked the read for ever, /dev/zero read until memory ran out.
    if kind == "fifo":
        special = tmp_path / "special"
        os.mkfifo(special)
        reason = "not a regular file (a FIFO)"
    elif kind == "device":
        special, reason = "/dev/zero", "not a regular file (a character device)"
    else:
        special, reason = tmp_path, "Is a directory"
    main = write(tmp_path / "gmid.conf", f'prefork 2\ninclude "{special}"\n')
    assert error_strings(main) == [f'{main}:2: cannot read included file "{special}": {reason}']
    assert error_strings(str(special)) == [f"{special}:1: cannot read the configuration file: {reason}"]


def test_dev_null_is_an_empty_include(tmp_path):
    # A placeholder configurations use; the devices that never end are refused.
    main = write(tmp_path / "gmid.conf", 'include "/dev/null"\nprefork 2\n')
    assert load_config(main)[0].prefork == 2


def test_a_deep_chain_of_includes_is_read_and_a_loop_at_its_end_is_found(tmp_path, monkeypatch):
    # Each include looked through every file being read for a loop: 16,000
    # nested files took 11.6 s. Whether a file is open is now one lookup,
    # kept right as files end: "done.conf", read to its end inside the
    # chain, is no loop when the deepest file includes it again.
    import gemfcgi.config.lexer as lexer

    looked: list[int] = []
    real_isinstance = isinstance
    monkeypatch.setattr(lexer, "isinstance",
                        lambda obj, kind: looked.append(1) or real_isinstance(obj, kind), raising=False)
    depth = 400
    write(tmp_path / "done.conf", "prefork 2\n")
    for level in range(depth):
        following = f'include "f{level + 1}.conf"' if level + 1 < depth else 'include "done.conf"'
        first = 'include "done.conf"\n' if level == 0 else ""
        write(tmp_path / f"f{level}.conf", first + following)
    config, _ = load_config(str(tmp_path / "f0.conf"))
    assert config.prefork == 2
    assert len(looked) < 20 * depth
    write(tmp_path / f"f{depth - 1}.conf", 'include "f7.conf"')
    assert error_strings(str(tmp_path / "f0.conf")) == [
        f'{tmp_path}/f{depth - 1}.conf:1: include loop: "f7.conf" is already being read']


def test_a_removed_current_directory_is_said_so_and_includes_are_read_beside_their_file(
    tmp_path, monkeypatch
):
    # --check gave a traceback (getcwd), and a reload of a file with a
    # relative include failed with "No such file or directory" and no line.
    from gemfcgi.check import load_and_check

    write(tmp_path / "conf" / "part.conf", "prefork 3\n")
    main = write(tmp_path / "conf" / "gmid.conf", 'include "part.conf"\n')
    (tmp_path / "gone").mkdir()
    monkeypatch.chdir(tmp_path / "gone")
    (tmp_path / "gone").rmdir()
    config, _ = load_config(main)
    assert config.prefork == 3
    with pytest.raises(ConfigError) as caught:
        load_and_check(main)
    assert [str(d) for d in caught.value.diagnostics] == [
        f"{main}: the current directory no longer exists (it was removed): relative paths cannot be "
        "read from it; start from a directory that exists, or write absolute paths"]
