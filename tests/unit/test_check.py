"""What the configuration check says of a ``fastcgi spawn`` command before anything is started."""

from __future__ import annotations

from gemfcgi.check import spawn_problem


def test_a_command_the_server_can_start_has_no_problem():
    assert spawn_problem("sh -c 'exit 0'") is None


def test_a_program_nowhere_in_path_or_at_its_path_is_named():
    assert spawn_problem("no-such-program-here -x") == (
        "program 'no-such-program-here' not found in PATH (or not executable)"
    )
    assert spawn_problem("/no/such/program") == "program '/no/such/program' not found (or not executable)"


def test_a_command_that_cannot_be_split_or_is_empty_is_said_so():
    assert spawn_problem("sh -c 'unclosed").startswith("cannot split \"sh -c 'unclosed\" into words: ")
    assert spawn_problem("   ") == "empty command"
