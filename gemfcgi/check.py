"""
Loading a configuration file for serving: the grammar, then the world.

The parser knows gmid's language; this module checks what only the running
server can: that certificates and keys load and belong together, that roots
are directories, that CA files parse. Every problem becomes a ``FILE:LINE``
diagnostic, so ``--check``, start-up and a reload all report the same way.
"""

from __future__ import annotations

import datetime
import errno
import functools
import ipaddress
import os
import pwd
import re
import shlex
import socket
import stat
import tempfile
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from types import SimpleNamespace
from typing import Callable, Mapping, Optional

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from gemfcgi.accesslog import UNIX_SOCKET_LOG
from gemfcgi.certificates import (
    CertificateError,
    load_key_pair,
    named,
    ocsp_mismatch,
    read_key_file,
    same_name,
    self_issued,
    signed_by,
    validity_problem,
)
from gemfcgi.config import ConfigError, Diagnostic, load_config, model
from gemfcgi.config.errors import in_file_order
from gemfcgi.serverindex import ServersByName
from gemfcgi.config.paths import DIRECTORY_GONE, anchor_paths, current_directory
from gemfcgi.config.values import old_host_port, port_number
from gemfcgi.fastcgi.params import seen_from_here
from gemfcgi.fastcgi.spawn import find_program
from gemfcgi.gemini.hosts import HostPattern, canonical_host, is_address, literal_host
from gemfcgi.glob import glob_matches, is_glob, is_well_formed, literal_start
from gemfcgi.handlers.clientca import Authorities, authority_problem, judge, load_authorities
from gemfcgi.handlers.proxy import build_upstream_tls
from gemfcgi.privileges import (
    Identity,
    PrivilegeError,
    host_path,
    identity_for,
    may_execute,
    may_read,
    may_read_directory,
)
from gemfcgi.proxyv1 import split_proxied
from gemfcgi.routing import VirtualHost, port_matches, port_pattern
from gemfcgi.regularfile import irregular_kind
from gemfcgi.service import (
    ListenError,
    addresses_of,
    as_written,
    endpoint_fields,
    listen_descriptions,
    listens_on,
    proxy_v1_disagreements,
)
from gemfcgi.tls import ProtocolsError, protocol_range
from gemfcgi.upstream import certificate_name_problem


def _where(origin: Optional[model.Origin], config: model.Config) -> tuple[str, int]:
    if origin is None:
        return config.source or "<config>", 0
    return origin.file, origin.line


def _has_account(user: Optional[str]) -> bool:
    try:
        pwd.getpwnam(user or "")
    except KeyError:
        return False
    return True


def _in_chroot(chroot: Optional[str], path: str) -> str:
    """
    gmid resolves roots (not certificates) inside the chroot, a relative
    one from its ``/``, and symlinks in them as a process inside it does.
    """
    if not chroot:
        return path
    return host_path(chroot, path)


def spawn_problem(command: str) -> Optional[str]:
    """
    What keeps a ``fastcgi spawn`` command from starting, looked up as the
    server will start it (this process's PATH; spawned programs run outside
    any chroot); ``None`` if nothing does.
    """
    try:
        argv = shlex.split(command)
    except ValueError as problem:
        return f"cannot split {command!r} into words: {problem}"
    if not argv:
        return "empty command"
    problem = _unrunnable(argv[0], os.environ, "")
    if problem is not None:
        return problem
    if os.path.basename(argv[0]) == "setsid":
        return _SETSID  # whatever follows, even what cannot be read
    # And what each wrapper runs (``env PHP_FCGI_CHILDREN=4 php-cgi``),
    # with the PATH it gives.
    spawned = spawned_command(command, os.environ)
    if spawned is None or not spawned.wrappers:
        return None
    if spawned.refused is not None:
        return f"{spawned.refused}: the wrapper would exit at every start"
    if any(os.path.basename(word) == "setsid" for word, _, _ in spawned.wrappers):
        return _SETSID
    if spawned.directory is not None:
        return None  # relative names and PATH entries lead from env -C's directory
    for word, environment, run_by in spawned.wrappers[1:]:
        problem = _unrunnable(word, environment, f" (run by {os.path.basename(run_by)})")
        if problem is not None:
            return problem
    last = os.path.basename(spawned.wrappers[-1][0])
    if not spawned.words:
        return (f"{last} runs no program here"
                + (": it prints the server's environment, into the log" if last == "env" else ""))
    return _unrunnable(spawned.words[0], spawned.environment, f" (run by {last})")


# gemfcgi starts the program as the leader of a session of its own: setsid
# then forks, and its program runs on outside the spawn's watch (which sees
# a run that ended at once), or with -w outside its stop.
_SETSID = ("setsid: the program is already started as a session leader, so setsid forks "
           "and leaves it running outside gemfcgi's watch: leave setsid out")


def _unrunnable(program: str, env: Mapping[str, str], run_by: str) -> Optional[str]:
    found = find_program(program, env)
    if found is None:
        where = "" if "/" in program else " in PATH"
        return f"program {program!r}{run_by} not found{where} (or not executable)"
    kind = irregular_kind(found)
    if kind is not None:
        return f"program {found!r}{run_by} is not a regular file ({kind}): it cannot be run"
    return None


def spawn_unrunnable_by(command: str, identity: Optional[Identity]) -> Optional[str]:
    """
    A warning for a ``fastcgi spawn`` program the workers' ``user`` may not
    run (it is started as that user, and would fail every start): the
    program must be executable by it, and readable too if it is a script,
    and a script named after an interpreter (``python3 /srv/app.py``)
    readable. ``None`` if it may, or if the program keeps the server's
    identity.
    """
    if identity is None:
        return None
    spawned = spawned_command(command, os.environ)
    if spawned is None or not spawned.words:
        return None
    program = find_program(spawned.words[0], spawned.environment)
    if program is None:
        return None
    if not may_execute(program, identity, script=_is_script(program)):
        return (f"fastcgi spawn: user {identity.name} may not run {program} (by its mode bits or "
                "those of a directory above it): every start would fail")
    for word in spawned.words[1:]:
        if os.path.isabs(word) and os.path.isfile(word) and not may_read(word, identity):
            return (f"fastcgi spawn: user {identity.name} may not read {word} (by its mode bits or "
                    "those of a directory above it), which the program is given")
    return None


def _is_script(path: str) -> bool:
    """Whether ``path`` starts with ``#!``: the kernel then needs it readable too."""
    if irregular_kind(path) is not None:
        return False  # a FIFO would hold the check until something wrote to it
    try:
        with open(path, "rb") as program:
            return program.read(2) == b"#!"
    except OSError:
        return False


# php-cgi's own variable for the processes it runs (0 or unset: itself alone).
PHP_CHILDREN = "PHP_FCGI_CHILDREN"
# A count as C's atoi reads it, as both programs do: C's white space, a
# sign, then ASCII digits up to the first other character (str.isdigit and
# str.strip take '²' and a no-break space; atoi reads 0).
_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def _atoi(text: str) -> int:
    """glibc's ``atoi``: ``(int) strtol(text)``, held to a long's range, then cut to an int's 32 bits."""
    number = _ATOI.match(text)
    if number is None:
        return 0
    long = max(-2**63, min(2**63 - 1, int(number.group(1))))
    return (long + 2**31) % 2**32 - 2**31


@dataclass
class SpawnedCommand:
    """
    What a ``fastcgi spawn`` command runs, read past the wrappers that
    only set its environment, directory or priority (``env NAME=VALUE``,
    ``env -i``, ``nice``): the program's words (none: the wrappers run
    nothing of their own, and ``env`` then prints the environment), the
    environment it gets, and the directory ``env -C`` moves it to.
    """

    words: list[str]
    environment: dict[str, str]
    directory: Optional[str] = None
    # What a wrapper refuses of its own options (``env -u A=B``).
    refused: Optional[str] = None
    # Each wrapper word, the PATH environment it is looked up with (its
    # runner's) and the wrapper that runs it (none for the first).
    wrappers: list[tuple[str, dict[str, str], str]] = dataclass_field(default_factory=list)
    # The command's words, the wrappers' and the program's.
    argv: list[str] = dataclass_field(default_factory=list)

    @property
    def wrapping(self) -> list[str]:
        """The wrappers' words, their options and assignments: what comes before the program."""
        return self.argv[:len(self.argv) - len(self.words)]


@dataclass(frozen=True)
class _Wrapper:
    """A wrapper's options, as its getopt reads them (``+``: up to the first other word)."""

    short: str  # the letters, each followed by ':' if it takes a value
    long: Mapping[str, str]  # name: '' (no value), ':' (a value), '::' (an optional '=value')
    assignments: bool = False  # NAME=VALUE words follow the options (env)


_WRAPPERS = {
    "env": _Wrapper("0iu:C:S:v", {
        "ignore-environment": "", "null": "", "unset": ":", "chdir": ":", "split-string": ":",
        "block-signal": "::", "default-signal": "::", "ignore-signal": "::",
        "list-signal-handling": "", "debug": "", "help": "", "version": ""}, assignments=True),
    "nice": _Wrapper("n:", {"adjustment": ":", "help": "", "version": ""}),
    "nohup": _Wrapper("", {"help": "", "version": ""}),
    "setsid": _Wrapper("cfwhV", {"ctty": "", "fork": "", "wait": "", "help": "", "version": ""}),
}
# What makes a wrapper run no program, or one that cannot be told from here.
_NO_TELLING = {"S", "split-string", "help", "version", "h", "V", "list-signal-handling"}
_NICE_ADJUSTMENT = re.compile(r"-[+-]?[0-9]+")
_ADJUSTMENT = re.compile(r"[+-]?[0-9]+")


class _CannotTell(Exception):
    pass


def _wrapper_options(name: str, argv: list[str], index: int) -> tuple[int, list[tuple[str, str]]]:
    """The options of the wrapper ``name`` from ``argv[index]`` on, and the index after them."""
    wrapper = _WRAPPERS[name]
    options: list[tuple[str, str]] = []
    while index < len(argv):
        word = argv[index]
        index += 1
        if word == "--":
            break
        if name == "env" and word == "-":
            options.append(("i", ""))  # the old spelling of -i
        elif name == "nice" and _NICE_ADJUSTMENT.fullmatch(word):
            options.append(("n", word[1:]))  # the old spelling of -n N
        elif word.startswith("--"):
            given, equals, value = word[2:].partition("=")
            # getopt_long takes any unambiguous beginning of a name.
            matches = [known for known in wrapper.long if known == given] or \
                [known for known in wrapper.long if known.startswith(given)]
            if len(matches) != 1:
                raise _CannotTell
            kind = wrapper.long[matches[0]]
            if kind == ":" and not equals:
                if index >= len(argv):
                    raise _CannotTell
                value, index = argv[index], index + 1
            elif kind == "" and equals:
                raise _CannotTell
            options.append((matches[0], value))
        elif word.startswith("-") and len(word) > 1:
            letters = word[1:]
            while letters:
                letter, letters = letters[0], letters[1:]
                at = wrapper.short.find(letter)
                if at < 0 or letter == ":":
                    raise _CannotTell
                if wrapper.short[at + 1:at + 2] != ":":
                    options.append((letter, ""))
                    continue
                if not letters:
                    if index >= len(argv):
                        raise _CannotTell
                    letters, index = argv[index], index + 1
                options.append((letter, letters))
                break
        else:
            index -= 1  # the first word that is no option
            break
    return index, options


def spawned_command(command: str, env: Mapping[str, str]) -> Optional[SpawnedCommand]:
    """The program a spawn command runs; ``None`` if it cannot be told (no words, ``env -S``)."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if not argv:
        return None
    environment = dict(env)
    directory: Optional[str] = None
    wrappers: list[tuple[str, dict[str, str], str]] = []
    refused: Optional[str] = None
    index = 0
    while index < len(argv) and os.path.basename(argv[index]) in _WRAPPERS:
        name = os.path.basename(argv[index])
        wrappers.append((argv[index], dict(environment), wrappers[-1][0] if wrappers else ""))
        try:
            index, options = _wrapper_options(name, argv, index + 1)
        except _CannotTell:
            return None
        for option, value in options:
            if option in _NO_TELLING:
                return None
            if option in ("i", "ignore-environment"):
                environment.clear()
            elif option in ("u", "unset"):
                if not value or "=" in value:
                    refused = refused or f"env cannot unset {value!r}"
                environment.pop(value, None)
            elif option in ("C", "chdir"):
                directory = value
            elif option in ("0", "null"):
                refused = refused or "env -0 (--null) runs no program"
            elif name == "nice" and option in ("n", "adjustment") and not _ADJUSTMENT.fullmatch(value):
                refused = refused or f"nice: invalid adjustment {value!r}"
        if _WRAPPERS[name].assignments:
            while index < len(argv) and "=" in argv[index]:
                variable, _, value = argv[index].partition("=")
                environment[variable] = value
                index += 1
    return SpawnedCommand(argv[index:], environment, directory, refused, wrappers, argv)


def one_php_at_a_time(command: str, env: Mapping[str, str]) -> Optional[str]:
    """
    A warning for a ``fastcgi spawn`` of php-cgi that will serve one request
    at a time: without ``PHP_FCGI_CHILDREN`` (or with 0, 1 or empty) it is a
    single process, and a client reading a large reply slowly holds up every
    other PHP request. The variable counts as the program will see it: this
    process's environment, which spawned programs inherit, as ``env`` in the
    command changes it. ``None`` if the command runs no php-cgi (by its name
    or the name a link leads to) or sets it.
    """
    spawned = spawned_command(command, env)
    if spawned is None or not spawned.words or not _runs(spawned, env, "php-cgi"):
        return None
    program = os.path.basename(spawned.words[0])
    children = spawned.environment.get(PHP_CHILDREN)
    count = _atoi(children) if children is not None else 0
    if count > 1:
        return None
    if children is None:
        setting = f"without {PHP_CHILDREN}"
    elif children.isascii() and children.isdigit() and int(children) == count:
        setting = f"with {PHP_CHILDREN}={children}"
    else:
        setting = f"with {PHP_CHILDREN}={children!r} (read as {count})"
    advice = f'(spawn "{_with_php_children(spawned)}")'
    if count < 0:
        return f"fastcgi spawn: {program} {setting} exits at every start (not valid) {advice}"
    return (f"fastcgi spawn: {program} {setting} serves one request at a time, "
            f"so one client reading a reply slowly holds up every other {advice}")


def _with_php_children(spawned: SpawnedCommand) -> str:
    """
    The command with ``PHP_FCGI_CHILDREN=4`` set just before its program,
    the wrappers before it kept: an ``env`` last among them gets it as its
    own last assignment (one of the same name it has is dropped), any
    other wrapper is followed by an ``env`` of its own.
    """
    wrapping = spawned.wrapping
    if spawned.wrappers and os.path.basename(spawned.wrappers[-1][0]) == "env":
        assignments = len(wrapping)
        while assignments > 1 and "=" in wrapping[assignments - 1] and \
                not wrapping[assignments - 1].startswith("-"):
            assignments -= 1
        wrapping = wrapping[:assignments] + [
            word for word in wrapping[assignments:] if not word.startswith(f"{PHP_CHILDREN}=")]
    else:
        wrapping.append("env")
    return shlex.join([*wrapping, f"{PHP_CHILDREN}=4", *spawned.words])


def one_fcgiwrap_at_a_time(command: str, env: Mapping[str, str]) -> Optional[str]:
    """
    A warning for a ``fastcgi spawn`` of fcgiwrap without ``-c N`` (N > 1):
    it is then one process that runs one script at a time, so one slow or
    hung script holds up every other, past the backend timeout (a script
    given up on runs on). ``None`` for other programs, or with ``-c``.

    Options that leave it serving no request are said first: those its
    getopt refuses, and ``-s``, which makes it listen on a socket of its
    own in place of the one it is given (its standard input), or exit
    where it cannot: only the kind of address is read here.
    """
    spawned = spawned_command(command, env)
    if spawned is None or not spawned.words or not _runs(spawned, env, "fcgiwrap"):
        return None
    options = _getopt(spawned.words[1:], _FCGIWRAP_OPTIONS,
                      permutes="POSIXLY_CORRECT" not in spawned.environment)
    program = os.path.basename(spawned.words[0])
    if options.refused is not None:
        return f"fastcgi spawn: {program} exits at every start: {options.refused}"
    own_socket = options.values.get("s")
    if own_socket is not None:
        if not own_socket.startswith(_FCGIWRAP_SOCKET_KINDS):
            return (f"fastcgi spawn: {program} exits at every start: -s {own_socket!r} is no socket "
                    "URL (unix:PATH, tcp:ADDRESS:PORT or tcp6:[ADDRESS]:PORT)")
        return (f"fastcgi spawn: {program} -s {own_socket} serves no request: it listens on a socket "
                "of its own in place of the one it is given, where each request waits for the backend "
                "timeout, or exits where it cannot (an address it cannot read or bind, the socket "
                "file its last run left) (leave -s out: a spawned program is given its socket)")
    children = options.values.get("c")
    if children is not None and _atoi(children) > 1:
        return None
    # -c 4 where getopt still reads options: before a "--", or before the
    # first other word when it does not permute them.
    argv = spawned.argv
    end = len(spawned.wrapping) + 1 + options.end
    advice = shlex.join([*argv[:end], "-c", "4", *argv[end:]]) if end < len(argv) else f"{command.strip()} -c 4"
    return (f"fastcgi spawn: {program} without -c N runs one script at a "
            f'time, so one slow or hung script holds up every other (spawn "{advice}")')


# fcgiwrap's getopt string: -c N, -h, -f, -s SOCKET, -p PATH.
_FCGIWRAP_OPTIONS = "c:hfs:p:"
# The socket URLs fcgiwrap's -s takes; it exits at any other.
_FCGIWRAP_SOCKET_KINDS = ("unix:", "tcp:", "tcp6:")


@dataclass
class _Options:
    """One-letter options as getopt(3) read them: each one's last value, a refusal, where they end."""

    values: dict[str, str]
    refused: Optional[str]
    end: int  # the index of "--", or of the first other word getopt stops at; the length if none


def _getopt(words: list[str], optstring: str, permutes: bool = True) -> _Options:
    """
    ``words`` as glibc's getopt(3) reads them with ``optstring``: flags run
    together (``-fc4``), a value in the same word or the next, the last one
    given wins, and words that are no option are passed over (it permutes
    them to the end) up to ``--``; with ``POSIXLY_CORRECT`` in the
    program's environment it stops at the first. ``-h`` prints a help and
    exits, as an unknown option or a missing value does.
    """
    values: dict[str, str] = {}
    end = len(words)
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            end = index
            break
        index += 1
        if not word.startswith("-") or word == "-":
            if not permutes:
                end = index - 1
                break
            continue
        for place, letter in enumerate(word[1:], start=1):
            at = optstring.find(letter)
            if at < 0 or letter == ":":
                return _Options(values, f"invalid option -{letter}", end)
            if letter == "h":
                return _Options(values, "-h prints its help and exits", end)
            if optstring[at + 1:at + 2] != ":":
                values[letter] = ""
                continue
            given = word[place + 1:]
            if not given:
                if index >= len(words):
                    return _Options(values, f"option -{letter} requires a value", end)
                given = words[index]
                index += 1
            values[letter] = given
            break
    return _Options(values, None, end)


def _runs(spawned: SpawnedCommand, env: Mapping[str, str], name: str) -> bool:
    """Whether the spawned program is ``name``, by its own name or the one a link leads to."""
    program = spawned.words[0]
    found = find_program(program, spawned.environment) or find_program(program, env)
    names = [os.path.basename(program)] + ([os.path.basename(os.path.realpath(found))] if found else [])
    return any(each.startswith(name) for each in names)


def access_log_problem(path: str) -> Optional[str]:
    """
    What keeps the access log at ``path`` from being opened for appending;
    ``None`` if nothing. Asked with the effective IDs, the ones ``open``
    is decided by.
    """
    if os.path.islink(path) and not os.path.exists(path):
        # A link to nothing yet: open() makes its target, in the target's
        # directory; a loop of links is an error there.
        try:
            os.stat(path)
        except OSError as problem:
            if problem.errno != errno.ENOENT:
                return problem.strerror
        target = os.path.realpath(path)
        directory = os.path.dirname(target)
        if not os.path.isdir(directory):
            return f"a link to {target}, in no directory"
        if not os.access(directory, os.W_OK | os.X_OK, effective_ids=True):
            return f"a link to {target}, which cannot be made in {directory}"
        return None
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        return f"no directory {directory}"
    if os.path.isdir(path):
        return "is a directory"
    if os.path.exists(path):
        if not os.access(path, os.W_OK, effective_ids=True):
            return "not writable"
        if stat.S_ISSOCK(os.stat(path).st_mode):
            return UNIX_SOCKET_LOG
    elif not os.access(directory, os.W_OK | os.X_OK, effective_ids=True):
        return f"cannot create a file in {directory}"
    return None


def _top_of_chain(certificate: x509.Certificate, authorities: list[x509.Certificate]) -> x509.Certificate:
    """The last certificate reached going up from ``certificate`` through the issuers of ``authorities``."""
    seen = [certificate]
    while not self_issued(seen[-1]):
        issuer = next((other for other in authorities
                       if all(other is not each for each in seen) and _issued_by(seen[-1], other)), None)
        if issuer is None:
            break
        seen.append(issuer)
    return seen[-1]


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """
    Whether ``issuer`` signed ``certificate``: by its signature, not only
    its name (another root of the same name signs nothing of this one's).
    """
    return same_name(certificate, "issuer", issuer, "subject") and signed_by(certificate, issuer)


def _may_sign(certificate: x509.Certificate) -> bool:
    """Whether the certificate's key usage, if it has one, allows the signatures of a handshake."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return True
    return usage.digital_signature


def _same_authority(one: x509.Certificate, other: x509.Certificate) -> bool:
    """Two copies of one CA: the same name and the same key (a renewal of it)."""
    if one is other or not same_name(one, "subject", other, "subject"):
        return False
    try:
        return one.public_key() == other.public_key()
    except (ValueError, UnsupportedAlgorithm):  # a key that cannot be read (a damaged copy)
        return False


def _key_pair_directive(problem: CertificateError, server: model.Server) -> str:
    """Which of cert, key and ocsp a key pair's problem is about."""
    for directive, path in (("ocsp", server.ocsp), ("key", server.key), ("cert", server.cert)):
        if path and problem.path == path:
            return directive
    return "cert"


def check_config(config: model.Config) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """Errors and warnings about what ``config`` refers to on disk."""
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []

    def error(origin: Optional[model.Origin], message: str) -> None:
        errors.append(Diagnostic(*_where(origin, config), message))

    def warning(origin: Optional[model.Origin], message: str) -> None:
        warnings.append(Diagnostic(*_where(origin, config), message, "warning"))

    if not config.servers:
        error(None, 'no server block: nothing to serve (add server "name" { ... })')
    identity = None
    # Roots are looked at inside the chroot: not at all when it is unusable.
    roots_checked = True
    try:
        identity = identity_for(config)
    except PrivilegeError as problem:
        error(config.origins.get(problem.directive), str(problem))
        if config.chroot:
            roots_checked = os.path.isdir(config.chroot)
        else:
            # An unknown user has no home to be chrooted into: roots are
            # looked at as written. A known one's home is no directory.
            roots_checked = not _has_account(config.user)
    # A user without a chroot is chrooted into its home, as in gmid.
    chroot = identity.chroot if identity is not None else config.chroot
    try:
        protocol_range(config.protocols)
    except ProtocolsError as problem:
        error(config.origins.get("protocols"), f"protocols: {problem}")
    access = config.log.access
    if access is not None:
        # Opened at start-up (and on SIGUSR1), inside the chroot.
        problem = access_log_problem(_in_chroot(chroot, access) if chroot else os.path.abspath(access))
        if problem is not None:
            error(config.log.access_origin, f"log access {access!r}: {problem}")
    checked_cas: set[str] = set()

    def check_root(root: str, where: Optional[model.Origin]) -> None:
        opened = _in_chroot(chroot, root)
        seen_as = "" if opened == root else f" (inside the chroot: {opened})"
        if not os.path.isdir(opened):
            error(where, f"root {root} is not a directory{seen_as}")
        elif identity is not None and not may_read_directory(opened, identity):
            warning(where, f"root {root}{seen_as}: user {identity.name} may not read it (by its "
                    "mode bits, or those of a directory above it): every request under it would "
                    "get 51")

    def check_ca(ca: str, where: Optional[model.Origin]) -> None:
        if ca in checked_cas:
            return
        checked_cas.add(ca)
        try:
            loaded = load_authorities([ca])[ca]
        except CertificateError as problem:
            error(where, f"require client ca: {problem}")
            return
        # With those whose names cryptography cannot read (a T61String
        # beyond ASCII), which OpenSSL trusts all the same; a version 2
        # certificate it cannot load at all is OpenSSL's alone.
        authorities = list(loaded.certificates)
        for certificate in loaded.openssl_only:
            try:
                authorities.append(certificate.to_cryptography())
            except (ValueError, x509.InvalidVersion):
                pass
        now = datetime.datetime.now(datetime.timezone.utc)
        usable = [authority for authority in authorities if authority_problem(authority, now) is None]
        for authority in authorities:
            unusable = authority_problem(authority, now)
            if unusable is not None and any(_same_authority(authority, other) for other in usable):
                # An old copy of a CA renewed with the same name and key,
                # left in the bundle: the current copy vouches for the same.
                continue
            if unusable is not None:
                # A leaf pinned in the file (not self-signed) is refused too,
                # unless its own issuer is in the file: then it is let in as
                # any client that issuer vouches for.
                issuer = next((other for other in usable if _issued_by(authority, other)), None)
                if not unusable.startswith("not a CA"):
                    refused = "no client certificate it issued is accepted"
                elif issuer is not None:
                    refused = (f"it vouches for no client; a client presenting it is let in through its "
                               f"issuer {named(issuer)}, which the file holds")
                else:
                    refused = "neither it nor any client certificate it issued is accepted"
                warning(where, f"require client ca {ca}: {named(authority)}: {unusable}; {refused}")
        for authority in usable:
            top = _top_of_chain(authority, authorities)
            if not self_issued(top):
                # OpenSSL trusts a chain only up to a root in the file.
                warning(where, f"require client ca {ca}: {named(authority)}: an intermediate CA whose "
                        f"chain in the file reaches no root (none signed by {named(top, 'issuer')}) "
                        "vouches for nobody: add the root it chains to")

    if roots_checked:
        for where, key, root in keys_under_roots(config, chroot):
            warning(where, f"key {key} is under the root {root}, where anyone may ask for the "
                    "private key (keep keys outside every root)")
    for listen, earlier, description in proxy_v1_disagreements(config):
        # One socket, or one and the wildcard that takes its connections:
        # opened once, it cannot be both.
        where = f"at {earlier.origin}" if earlier.origin is not None else "on an earlier listen"
        here = ("a PROXY header (proxy-v1 or proxy-v2) is read here but not" if listen.proxy_v1
                else "no PROXY header (proxy-v1 or proxy-v2) is read here but one is")
        error(listen.origin, f"listen on {listen.address} port {listen.port}: {here} {where} "
              f"({earlier.address}), and {as_written(split_proxied(description)[1])} would take the connections "
              "of both: every listen on the same address and port must agree")
    relays = OwnRelays(config)
    # Where spawned programs' sockets are made, looked at once for them all
    # (under a chroot, inside it).
    spawn_too_long = None if chroot else spawn_socket_too_long()
    spawn_open_to_others = spawn_directory_open_to_others(chroot)
    for server in config.servers:
        origin = server.origin
        for listen in server.listens:
            try:
                listen_descriptions(listen)
            except ListenError as problem:
                error(listen.origin or origin, f"listen on {listen.address}: {problem}")
        if server.cert is None or server.key is None:
            error(origin, f"server {server.name!r} needs both cert and key")
        else:
            try:
                pair = load_key_pair(server.cert, server.key, server.ocsp)
            except CertificateError as problem:
                where = server.origins.get(_key_pair_directive(problem, server), origin)
                error(where, f"server {server.name!r}: {problem}")
            else:
                unstapled = ocsp_mismatch(pair)
                if unstapled:
                    warning(server.origins.get("ocsp", origin),
                            f"server {server.name!r}: {server.ocsp}: {unstapled}")
                invalid = validity_problem(pair.chain[0], datetime.datetime.now(datetime.timezone.utc))
                if invalid:
                    warning(server.origins.get("cert", origin), f"server {server.name!r}: "
                            f"{server.cert}: {invalid}: clients will refuse it, or warn")
                if not _may_sign(pair.chain[0]):
                    # OpenSSL takes it, and TLS 1.3 clients that do not look;
                    # a TLS 1.2 handshake (ECDHE, signed) fails.
                    warning(server.origins.get("cert", origin), f"server {server.name!r}: "
                            f"{server.cert}: its key usage lacks digitalSignature: TLS 1.2 "
                            "handshakes fail (reissue it with digitalSignature)")
                try:
                    mode = os.stat(server.key).st_mode
                except OSError as problem:  # gone since it was read
                    error(server.origins.get("key", origin), f"key {server.key}: {problem.strerror}")
                    mode = 0
                if mode & 0o077:
                    warning(
                        server.origins.get("key", origin),
                        f"key {server.key} is readable by group or others "
                        f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it",
                    )
        for options, block in [(server.options, origin)] + [
            (location.options, location.origin or origin) for location in server.locations
        ]:
            if options.root is not None and roots_checked:
                check_root(options.root, options.origins.get("root", block))
            fastcgi = options.fastcgi
            unused = _unused_beside_fastcgi(options, server)
            if unused is not None:
                warning(fastcgi.origin if fastcgi is not None and fastcgi.origin else block, unused)
            if fastcgi is not None:
                problem = fastcgi_problem(fastcgi.address)
                if problem is not None:
                    error(fastcgi.origin or block, problem)
                elif isinstance(fastcgi.address, model.FastCGISpawn):
                    for single in (one_php_at_a_time(fastcgi.address.command, os.environ),
                                   one_fcgiwrap_at_a_time(fastcgi.address.command, os.environ)):
                        if single is not None:
                            warning(fastcgi.origin or block, single)
                    unrunnable = spawn_unrunnable_by(fastcgi.address.command, identity)
                    if unrunnable is not None:
                        warning(fastcgi.origin or block, unrunnable)
                    if spawn_too_long is not None:
                        error(fastcgi.origin or block, spawn_too_long)
                    if spawn_open_to_others is not None:
                        warning(fastcgi.origin or block, spawn_open_to_others)
                unseen = unseen_document_root(fastcgi, chroot)
                if unseen is not None:
                    warning(fastcgi.origin or block, unseen)
            if options.require_client_ca is not None:
                check_ca(options.require_client_ca, options.origins.get("require client ca", block))
        for where, message in indexes_an_application_runs(server):
            warning(where or origin, message)
        patterns = [(f"server {server.name!r}", server.name, origin)]
        patterns += [(f"alias {alias!r}", alias, server.origins.get(f"alias {alias}", origin))
                     for alias in server.aliases]
        patterns += [(f'location "{location.pattern}"', location.pattern, location.origin or origin)
                     for location in server.locations]
        patterns += [(f'proxy for-host "{proxy.for_host}"', proxy.for_host, proxy.origin or origin)
                     for proxy in server.proxies]
        for what, name in [("server", server.name), *(("alias", alias) for alias in server.aliases)]:
            unmatched = no_host_matches(name)
            if unmatched is not None:
                warning(server.origins.get(f"{what} {name}", origin),
                        f'{what} "{name}": no request can reach this server by it: {unmatched}')
        for what, pattern, where in patterns:
            if not is_well_formed(pattern):
                warning(where, f"{what}: a malformed bracket expression, which gmid's fnmatch(3) "
                        "reads only as far as each name needs: gemfcgi may match it differently "
                        "(close it with ], and use only characters, ranges, [:class:], [.x.] and [=x=])")
        listen_ports = _listen_ports(server)
        catch_all = catch_all_proxy(server)
        if catch_all is not None:
            file, line = _where(catch_all.origin, config)
            taken = f"the proxy block at {file}:{line} relays every request of its server first"
            for proxy in server.proxies[server.proxies.index(catch_all) + 1:]:
                warning(proxy.origin or origin, f"this proxy block is never used: {taken}")
            for location in server.locations:
                warning(location.origin or origin, f'location "{location.pattern}" is never used: {taken}')
        for proxy in server.proxies:
            for directive, problem in proxy_problems(proxy):
                error(proxy.origins.get(directive, proxy.origin or origin), problem)
            if not glob_matches("gemini", proxy.proto.lower()):
                warning(proxy.origin or origin, f'proxy proto "{proxy.proto}" matches no request: '
                        "gemfcgi answers gemini:// requests only")
            unmatched = no_host_matches(proxy.for_host)
            if unmatched is not None:
                if old_host_port(proxy.for_host) is None:  # that one is said as it is read
                    warning(proxy.origin or origin, f'proxy for-host "{proxy.for_host}": no request '
                            f"reaches this block: {unmatched}")
            elif not _reachable(server, proxy):
                warning(proxy.origin or origin, f'proxy for-host "{proxy.for_host}": no request '
                        f"reaches this block: its host would have to choose server {server.name!r}, "
                        f'whose names it does not match (add alias "{proxy.for_host}" to the server)')
            wanted = port_pattern(proxy.for_port)
            if isinstance(wanted, int) and listen_ports and wanted not in listen_ports:
                warning(proxy.origin or origin, f"proxy for-host \"{proxy.for_host}\" port {wanted}: "
                        f"server {server.name!r} listens on no port {wanted}, and a URL must name its "
                        "listener's port: this block relays nothing (write port \"*\" to take any)")
            if server.options.require_client_ca is not None and proxy.require_client_ca is None:
                warning(proxy.origin or origin, f"the require client ca of server {server.name!r} "
                        "does not apply to the requests this proxy block relays (as in gmid): "
                        "write require client ca inside the block to ask for one")
            if proxy.require_client_ca is not None:
                check_ca(proxy.require_client_ca, proxy.origins.get("require client ca", proxy.origin or origin))
            host, port = proxy.relay_to or ("", 0)
            if relays.to_itself(server, proxy):
                warning(proxy.origin or origin, f'relay-to "{host}" port {port} is a listener of '
                        "this configuration, where the relayed request comes back to this proxy "
                        "block: each request would be relayed again without end")
            elif through := relays.circle(server, proxy):
                blocks = _blocks_named(through, origin, config)
                warning(proxy.origin or origin, f'relay-to "{host}" port {port} is a listener of '
                        f"this configuration, where the relayed request comes back to this proxy "
                        f"block through {blocks}: each request would be relayed again without end")
            elif loop := relays.loop_entered(server, proxy):
                blocks = _blocks_named(loop, origin, config)
                warning(proxy.origin or origin, f'relay-to "{host}" port {port} is a listener of '
                        f"this configuration, where the relayed request goes round the loop of "
                        f"{blocks}: each request would be relayed again without end")
    return errors, warnings


# The blocks of a loop a warning names; a loop of a thousand made each of
# its thousand warnings a list of all of them (80 MB of output).
BLOCKS_NAMED = 5


def _blocks_named(blocks: list[model.Proxy], origin: Optional[model.Origin], config: model.Config) -> str:
    named = ["the proxy block at {}:{}".format(*_where(block.origin or origin, config))
             for block in blocks[:BLOCKS_NAMED]]
    if len(blocks) > BLOCKS_NAMED:
        named.append(f"{len(blocks) - BLOCKS_NAMED} more")
    return " and ".join(named) if len(named) <= 2 else ", ".join(named[:-1]) + " and " + named[-1]


def keys_under_roots(config: model.Config, chroot: Optional[str]) -> list[tuple[Optional[model.Origin], str, str]]:
    """
    The private keys (of servers and of proxy blocks' client pairs) that
    lie under a root some location serves files from: anyone may ask for one.
    Each as where it is written, the key, and the root.
    """
    roots: dict[str, str] = {}
    for server in config.servers:
        for options in [server.options, *(location.options for location in server.locations)]:
            # A root whose requests go to an application, or are all
            # refused, serves no file.
            relayed = options.fastcgi is not None and not options.fastcgi.off
            if options.root is not None and not relayed and options.block is None:
                roots.setdefault(os.path.realpath(_in_chroot(chroot, options.root)), options.root)
    keys = [(server.origins.get("key", server.origin), server.key) for server in config.servers]
    keys += [(proxy.origins.get("key", proxy.origin), proxy.key)
             for server in config.servers for proxy in server.proxies]
    found: list[tuple[Optional[model.Origin], str, str]] = []
    seen: set[str] = set()
    for where, key in keys:
        if key is None or key in seen:
            continue
        seen.add(key)
        above = os.path.realpath(key)
        while True:
            parent = os.path.dirname(above)
            if parent in roots:
                found.append((where, key, roots[parent]))
                break
            if parent == above:
                break
            above = parent
    return found


def _unused_beside_fastcgi(
    options: model.LocationOptions, server: model.Server
) -> Optional[str]:
    """
    What a block says beside FastCGI that no request will use, as in gmid, if
    anything. Only a location's ``strip`` beside its own application is
    judged: a server's is used by the locations that turn ``fastcgi off``,
    one beside an inherited application by another location of the same
    paths that does, and any beside ``block`` by its ``%p``.
    """
    fastcgi = options.fastcgi
    if fastcgi is not None and not fastcgi.off and fastcgi.address is None:
        if fastcgi.params or fastcgi.strip is not None:
            return ("fastcgi param and strip go with the application of their own block, and this "
                    "one names none (no socket, spawn or endpoint): they are not used, as in gmid")
        return None
    if options.strip is None or options is server.options or options.block is not None:
        return None
    if fastcgi is not None and not fastcgi.off and fastcgi.address is not None:
        return (f"strip {options.strip} does not apply to the requests this block sends to FastCGI, "
                f"as in gmid: write fastcgi strip {options.strip}")
    return None


def catch_all_proxy(server: model.Server) -> Optional[model.Proxy]:
    """The first proxy block that relays every request of ``server`` (no ``for-host``), if any."""
    return next((proxy for proxy in server.proxies if proxy.for_port is None
                 and glob_matches("gemini", proxy.proto.lower())), None)


def _directory_of(pattern: str) -> tuple[str, str]:
    """
    A directory whose paths a location's ``pattern`` may take, its glob
    characters made letters, and as the pattern writes it (``/*/``).
    """
    head = pattern.removeprefix("/")
    head = head[: head.rfind("/") + 1]
    sample = _BRACKET.sub(lambda found: _member_of(found.group(0)), head)
    return "/" + sample.replace("*", "x").replace("?", "x"), "/" + head


# A bracket expression of a glob, classes ([:digit:]) inside it included.
_BRACKET = re.compile(r"\[[!^]?\]?(?:\[:[a-z]+:\]|[^]])*\]")


def _member_of(bracket: str) -> str:
    """A character ``bracket`` takes: one written in it, or a few common ones (``x`` if none)."""
    return next((c for c in bracket[1:-1] + "ax0z1AZ_-. " if glob_matches(c, bracket)), "x")


def _listen_ports(server: model.Server) -> set[int]:
    """The ports ``server`` listens on (a service that cannot be looked up is said elsewhere)."""
    ports = set()
    for listen in server.listens:
        try:
            ports.add(port_number(listen.port))
        except OSError:
            pass
    return ports


def _relays_every_request(server: model.Server) -> bool:
    """Whether a proxy block takes every request of ``server``: any host, on every port it listens on."""
    ports = _listen_ports(server)
    for proxy in server.proxies:
        if not glob_matches("gemini", proxy.proto.lower()) or proxy.for_host != "*":
            continue
        wanted = port_pattern(proxy.for_port)
        if wanted is None or (ports and all(port_matches(port, wanted) for port in ports)):
            return True
    return False


def indexes_an_application_runs(server: model.Server) -> list[tuple[Optional[model.Origin], str]]:
    """
    Index files that a request for their directory gets as files, while a
    ``fastcgi`` location takes their own paths: ``index "index.php"`` beside
    ``location "*.php" { fastcgi ... }`` sent ``/``'s script as its source
    (gmid too: a directory's index is served by the directory's settings).
    The directories looked at are ``/``, those the locations begin with,
    and one of those each location's pattern takes (``/x/`` for
    ``/*/index.php``).
    """
    if _relays_every_request(server):
        return []  # no file is served
    host = VirtualHost(server)
    directories = {"/": "/"}  # as asked for: as said
    for location in server.locations:
        start = literal_start(location.pattern.removeprefix("/"))
        literal = "/" + start[: start.rfind("/") + 1]
        directories[literal] = literal
        sample, written = _directory_of(location.pattern)
        directories.setdefault(sample, written)
    found: list[tuple[Optional[model.Origin], str]] = []
    said: set[tuple[str, int]] = set()
    for directory, shown in sorted(directories.items()):
        settings = host.settings_for(directory)
        if settings.fastcgi is not None or settings.block is not None or settings.root is None:
            continue
        application = host.settings_for(directory + settings.index).fastcgi
        if application is None or (settings.index, id(application)) in said:
            continue
        said.add((settings.index, id(application)))
        found.append((application.origin, (
            f'index "{settings.index}": a request for {shown} gets {shown}{settings.index} '
            f"as a file, its source, where this application answers a request for it, as in gmid "
            f"(index another file; or send {shown} to the application with a location of its "
            "own, whose param SCRIPT_FILENAME names the script: php-cgi is sent none for a "
            "directory)")))
    return found


# What no host holds; a glob's own characters (*?[]\\) are not among them.
_NEVER_IN_A_HOST = set(' /@#%"<>{}|^`')


def no_host_matches(name: str) -> Optional[str]:
    """Why no request's host can match the server name or alias glob ``name``, if none can."""
    old = old_host_port(name)
    if old is not None:
        return f'a port is no part of a host name: write "{old[0]}" and listen on the port'
    if "://" in name:
        return "a URL is no host name: write the host alone"
    literal, host = literal_host(name)
    if literal:
        return None if host is not None else "it is no host name"
    # Inside a bracket expression, "^" negates (as "!" does). No bracket
    # closes after the last "]", so the text after it is kept as it is: the
    # regular expression would read on to the end from each "[" there.
    closed = name.rfind("]") + 1
    odd = sorted(set(re.sub(r"\[[!^]?\]?[^]]*\]", "", name[:closed]) + name[closed:]) & _NEVER_IN_A_HOST)
    if odd:
        return f"no host holds {''.join(odd)!r}"
    return None


def _reachable(server: model.Server, proxy: model.Proxy) -> bool:
    """
    Whether a request can reach ``proxy``: its host must first choose
    ``server``, by one of its names (a glob name may take any host).
    """
    takes = HostPattern(proxy.for_host)
    return any(is_glob(name) or takes.matches(canonical_host(name) or name)
               for name in [server.name, *server.aliases])


class OwnRelays:
    """
    The relays of a configuration's proxy blocks to its own sockets, to
    find loops. Each ``listen on`` address is looked up once per check, and
    each relay's socket found once: a file of a thousand servers took 30 s,
    looking every address up again for each block's relay.
    """

    def __init__(self, config: model.Config) -> None:
        self.config = config
        self.servers = ServersByName()
        for server in config.servers:
            self.servers.add(server)
        self._addresses_of = functools.cache(addresses_of)
        self._sockets: dict[tuple[str, int], list[tuple[int, model.Listen]]] = {}
        self._certificates: dict[str, Optional[x509.Certificate]] = {}
        self._authorities: dict[str, Optional[Authorities]] = {}
        self._now = datetime.datetime.now(datetime.timezone.utc)
        # Asked of each block by ``to_itself``, ``circle`` and every hop.
        self._relays: dict[int, Optional[tuple[Optional[str], int]]] = {}
        self._followed: dict[int, tuple[list[model.Proxy], list[model.Proxy]]] = {}
        # A relayed request's next block depends only on its host and the
        # port relayed to, so each is found once; and a walk stops where an
        # earlier one, from the same block with the same host, was served
        # or relayed elsewhere: a chain of N blocks costs N steps, not N
        # squared (a chain of 250 blocks took 10 s, each hop trying every
        # block).
        self._taking: dict[tuple[str, int], Optional[model.Proxy]] = {}
        self._hosts: dict[int, VirtualHost] = {}
        self._no_loop_from: set[tuple[str, int]] = set()
        self._patterns: dict[str, HostPattern] = {}

    def relay(self, proxy: model.Proxy) -> Optional[tuple[Optional[str], int]]:
        if id(proxy) not in self._relays:
            self._relays[id(proxy)] = self._relay(proxy)
        return self._relays[id(proxy)]

    def _relay(self, proxy: model.Proxy) -> Optional[tuple[Optional[str], int]]:
        """
        Where ``proxy`` relays when it relays to one of the configuration's
        own sockets (named by an address or as localhost), and its
        handshake there would succeed: the name it sends as SNI (``None``
        for none) and the port. ``None`` when it relays elsewhere, to a
        name not worth a lookup here, or when the handshake would fail
        (plain TCP, no TLS version in common, a PROXY header one side
        alone has, a certificate that does not name what ``verifyname``
        checks): that is a ``43``, not a loop.
        """
        if proxy.relay_to is None or not proxy.use_tls:
            return None  # plaintext to a TLS listener fails at once
        host, port = proxy.relay_to
        try:
            number = port_number(port)
            low, high = protocol_range(proxy.protocols)
            served_low, served_high = protocol_range(self.config.protocols)
        except (OSError, ProtocolsError):
            return None  # said elsewhere
        if high < served_low or served_high < low:
            return None  # no TLS version in common with the listeners
        name = canonical_host(host)
        if name is None:
            return None
        written = _connected_to(host.strip("[]"))
        if written is not None:
            addresses = {written}
        elif name == "localhost" or name.endswith(".localhost"):
            addresses = self._addresses_of(host)  # as the relay looks it up, a final dot too
        else:
            return None
        sni = proxy.sni or (None if is_address(name) else name)
        sent = canonical_host(sni) if sni is not None else None
        if sni is not None and sent is None:
            return None
        for address in sorted(addresses):
            listens = self._socket(address, number)
            if not listens:
                continue
            if any(listen.proxy_v1 != proxy.proxy_v1 for _, listen in listens):
                continue  # a PROXY header where none is read, or none where one is
            taking = [index for index, _ in listens]
            if proxy.verifyname:
                # The certificate of the server the SNI names, else the socket's first.
                chosen = (self.servers.first_for_host(sent) if sent is not None else None) \
                    or self.config.servers[taking[0]]
                presented = self._certificate(chosen.cert)
                checked = canonical_host(proxy.sni or host) or name
                if presented is None or certificate_name_problem(presented, checked) is not None:
                    continue
            return sent, number
        return None

    def _socket(self, address: str, port: int) -> list[tuple[int, model.Listen]]:
        """The ``listen on`` lines (and their servers) that name the socket ``address`` and ``port``."""
        if (address, port) not in self._sockets:
            self._sockets[address, port] = listens_on(
                self.config, SimpleNamespace(host=address, port=port), self._addresses_of)
        return self._sockets[address, port]

    def _pattern(self, glob: str) -> HostPattern:
        if glob not in self._patterns:
            self._patterns[glob] = HostPattern(glob)
        return self._patterns[glob]

    def _block_taking(self, host: str, port: int) -> Optional[model.Proxy]:
        """
        The proxy block a request for ``host`` on ``port`` reaches, chosen
        as the server chooses it (``VirtualHost.proxy_for``); ``None`` when
        it is served.
        """
        if (host, port) not in self._taking:
            chosen = self.servers.first_taking(host)
            taking = None
            if chosen is not None:
                if id(chosen) not in self._hosts:
                    self._hosts[id(chosen)] = VirtualHost(chosen)
                settings = self._hosts[id(chosen)].proxy_for(host, port)
                taking = None if settings is None else settings.proxy
            self._taking[host, port] = taking
        return self._taking[host, port]

    def _certificate(self, path: Optional[str]) -> Optional[x509.Certificate]:
        if path not in self._certificates:
            try:
                self._certificates[path] = x509.load_pem_x509_certificate(read_key_file(path or ""))
            except (OSError, ValueError):
                self._certificates[path] = None  # said where the server's pair is checked
        return self._certificates[path]

    def _lets_through(self, taking: model.Proxy, relaying: model.Proxy) -> bool:
        """
        Whether ``taking`` relays the request that ``relaying`` relayed to
        it: it asks for no client certificate, or its CA accepts the one
        ``relaying`` presents (else the answer is 60 or 61, no loop).
        """
        ca = taking.require_client_ca
        if ca is None:
            return True
        if relaying.cert is None:
            return False
        if ca not in self._authorities:
            try:
                self._authorities[ca] = load_authorities([ca])[ca]
            except CertificateError:
                self._authorities[ca] = None  # said where the block's CA file is checked
        presented, authorities = self._certificate(relaying.cert), self._authorities[ca]
        return presented is not None and authorities is not None and \
            judge(presented, authorities, self._now) is None

    def to_itself(self, server: model.Server, proxy: model.Proxy) -> bool:
        """
        Whether ``proxy`` (a block of ``server``) relays to one of the
        configuration's own sockets, where the relayed request, with the
        same URL host, an accepted SNI and the relay's port, is taken by
        the same block again.
        """
        if not _reachable(server, proxy):
            return False  # it never relays
        relay = self.relay(proxy)
        if relay is None:
            return False
        sent, number = relay
        if not port_matches(number, port_pattern(proxy.for_port)):
            return False
        if sent is None:
            return True  # the URL's host picks the server it picked before: this one
        if not self._pattern(proxy.for_host).matches(sent):
            return False  # the URL's host must be the SNI name, and this block must take it
        # The server the relayed request's host (the SNI name) picks, first
        # match: another one (gmid's regress proxy, relaying from server
        # "localhost.local" to localhost) answers the request itself.
        return self.servers.first_taking(sent) is server

    def circle(self, server: model.Server, proxy: model.Proxy) -> list[model.Proxy]:
        """
        The other proxy blocks through which a request that ``proxy`` (a
        block of ``server``) relays comes back to it, each relaying to one
        of the configuration's own sockets (port A relaying to port B,
        which relays back to A); empty when there are none.
        """
        return self._follow(server, proxy)[0]

    def loop_entered(self, server: model.Server, proxy: model.Proxy) -> list[model.Proxy]:
        """
        The blocks of a loop that a request ``proxy`` relays goes round
        without coming back to ``proxy`` (port C relaying to A, where A and
        B relay to each other): it gets 43 once it comes back to one of
        them. Empty when there is none, or when it comes back to ``proxy``.
        """
        return self._follow(server, proxy)[1]

    def _follow(self, server: model.Server, proxy: model.Proxy) -> tuple[list[model.Proxy], list[model.Proxy]]:
        """
        Where the relays from ``proxy`` lead: the blocks through which a
        request comes back to it, else the blocks of a loop it enters
        elsewhere. Followed for a host the configuration names (an SNI, or
        one its ``for-host`` and server names take, a glob's made up), as
        the relay sends it: the same URL host, the relay's port, and a
        server chosen by that host. A request that comes back to a block it
        went through gets 43 there before any certificate is asked for.
        """
        if id(proxy) in self._followed:
            return self._followed[id(proxy)]
        entered: list[model.Proxy] = []
        relay = self.relay(proxy)
        if relay is None:
            hosts = []
        elif relay[0] is not None:
            hosts = [relay[0]]
        else:
            # The host is the client's, which the relay keeps: one of the
            # names written, or one that a glob written would take.
            written = [proxy.for_host, server.name, *server.aliases]
            hosts = [host for host in map(_a_host_taken, written) if host is not None]
        for host in hosts:
            if self.servers.first_taking(host) is not server or not self._pattern(proxy.for_host).matches(host):
                continue  # a request for it never reaches this block
            through: list[model.Proxy] = []
            # Where each block of ``through`` stands: a loop of N blocks is
            # found in N steps, not N looks through the list each.
            places: dict[int, int] = {}
            relaying = proxy
            while True:
                if (host, id(relaying)) in self._no_loop_from:
                    ends = True  # as a walk before this one found
                    break
                ends = False
                relay = self.relay(relaying)
                if relay is None or relay[0] is not None and relay[0] != host:
                    ends = True  # relayed elsewhere, or a URL host other than the SNI name: 53
                    break
                taking = self._block_taking(host, relay[1])
                if taking is None:
                    ends = True  # served here
                    break
                if taking is proxy:
                    if through:
                        self._followed[id(proxy)] = (through, [])
                        return through, []
                    break  # one block's own loop: to_itself says it
                if id(taking) in places:
                    if not entered:
                        entered = through[places[id(taking)]:]
                    break
                if not self._lets_through(taking, relaying):
                    # 60 or 61 there; but from a walk that went through
                    # ``taking``, 43 before: no end for other walks to reuse.
                    break
                places[id(taking)] = len(through)
                through.append(taking)
                relaying = taking
            if ends:
                self._no_loop_from.update((host, id(block)) for block in (proxy, *through))
        self._followed[id(proxy)] = ([], entered)
        return [], entered


def _a_host_taken(name: str) -> Optional[str]:
    """
    A host the server name or glob ``name`` may take: itself, or one made
    up by putting a letter for each ``*`` and ``?``, and a bracket
    expression's first member for it (none for other globs). Whoever uses
    it checks that it is taken.
    """
    literal, host = literal_host(name)
    if literal:
        return host
    made = re.sub(r"\[([^]!^\[\\])[^]]*\]", r"\1", name)
    if "[" in made or "\\" in made:
        return None
    return canonical_host(re.sub(r"[*?]+", "x", made))


# What inet_aton reads as an IPv4 address: parts in decimal, octal or hex.
# (It would also take one followed by a space and anything, which no lookup does.)
_INET_ATON_FORM = re.compile(r"[0-9a-fA-FxX.]+\Z")


def _connected_to(written: str) -> Optional[str]:
    """
    The address a relay to the address ``written`` reaches, as a listener
    here sees it: ::ffff:127.0.0.1 (or ::ffff:7f00:1) is 127.0.0.1, and an
    unspecified address (0.0.0.0, ::) is this machine's own loopback.
    A short or numeric IPv4 form (127.1, 2130706433, 0x7f.1, 0177.0.0.1)
    is no address to the relay, which looks it up as a name; the C
    library's lookup reads it as one (``inet_aton``), and so does this.
    ``None`` for what is no address, which is looked up.
    """
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        address = ipaddress.ip_address(written)
    except ValueError:
        if not _INET_ATON_FORM.match(written):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(written))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "::1"
    return str(address)


def proxy_problems(proxy: model.Proxy) -> list[tuple[str, str]]:
    """
    What keeps a ``proxy`` block from relaying: its names, ports,
    protocols, client certificate; each with the option it is about
    (a key of ``proxy.origins``), for the line to name.
    """
    problems: list[tuple[str, str]] = []
    assert proxy.relay_to is not None
    host, port = proxy.relay_to
    for what, name in (("relay-to", host), ("sni", proxy.sni)):
        problem = None if name is None else host_name_problem(name)
        if problem is not None:
            problems.append((what, f'{what} "{name}": {problem}'))
    tls_buildable = not problems
    unknown = "unknown service (not a port number, nor a name in /etc/services)"
    try:
        if port_number(port) == 0:
            problems.append(("relay-to", f'relay-to "{host}" port 0: no server listens on port 0'))
    except OSError:
        problems.append(("relay-to", f'relay-to port "{port}": {unknown}'))
    for_port = port_pattern(proxy.for_port)
    if isinstance(for_port, str) and not is_glob(for_port):
        problems.append(("for-host", f'for-host port "{for_port}": {unknown}'))
    try:
        protocol_range(proxy.protocols)
    except ProtocolsError as problem:
        problems.append(("protocols", f"proxy protocols: {problem}"))
        tls_buildable = False
    if proxy.use_tls and tls_buildable:
        try:
            build_upstream_tls(proxy)
        except CertificateError as problem:
            problems.append(("cert", f"proxy client certificate: {problem}"))
        except Exception as problem:  # OpenSSL's refusal of a key pair or setting
            problems.append(("cert", f"proxy client certificate {proxy.cert}: {problem}"))
    return problems


def host_name_problem(name: str) -> Optional[str]:
    """Why ``name`` cannot be looked up, sent as SNI or checked in a certificate; ``None`` if it can."""
    canonical = canonical_host(name)
    if canonical is None:
        if any(not label for label in name.removesuffix(".").split(".")):
            return "a host name with an empty label"
        return "not a host name"
    if name.startswith("["):
        # As URLs write it; looked up as a name, and no name has brackets.
        return f'an IPv6 address is written here without brackets: write "{canonical}"'
    if is_address(canonical):
        return None
    labels = canonical.split(".")
    if any(len(label) > 63 for label in labels) or len(canonical) > 253:
        return "a host name longer than DNS allows (63 bytes a label, 253 in all)"
    return None


def not_applied_in_one_process(config: model.Config) -> list[Diagnostic]:
    """
    Warnings for what only ``twistd gemfcgi`` applies, with its worker
    processes: ``prefork``, and the ``user`` and ``chroot`` they take on.
    A program that serves a configuration itself (``gemfcgi.makeService``)
    keeps its own process and privileges.
    """
    ignored = [
        (directive, f"{directive} {value!r} is not applied in this program: it keeps its own "
                    "privileges (twistd's --uid and --gid set them; to serve from a chroot, use "
                    "chroot with twistd gemfcgi)")
        for directive, value in (("user", config.user), ("chroot", config.chroot))
        if value is not None
    ]
    if config.prefork > 1:
        ignored.append(("prefork", f"prefork {config.prefork} is not applied in this program: "
                                   "one process serves"))
    return [
        Diagnostic(*_where(config.origins.get(directive), config), message, "warning")
        for directive, message in ignored
    ]


def needs_a_restart(config: model.Config, workers_fixed: bool = False) -> list[Diagnostic]:
    """
    Errors for a reload of a server that runs in one process: ``prefork``,
    ``user`` and ``chroot`` take a parent and workers, which only a start
    sets up. Applying the rest would leave an operator believing privileges
    were dropped. ``workers_fixed``: ``--workers`` decides the processes.
    """
    refused = [
        (directive, f"{directive} {value!r}: privileges are dropped at a start only, and this "
                    "server started in one process without: restart it to apply this")
        for directive, value in (("user", config.user), ("chroot", config.chroot))
        if value is not None
    ]
    if config.prefork > 1 and not workers_fixed:
        refused.append(("prefork", f"prefork {config.prefork}: this server started in one "
                                   "process, and a reload cannot start workers: restart it to "
                                   "apply this"))
    # In the file's order, as the check says its errors.
    return in_file_order([Diagnostic(*_where(config.origins.get(directive), config), message)
                          for directive, message in refused], config.source)


def endpoint_problem(description: str) -> Optional[str]:
    """Why ``description`` is not a Twisted client endpoint string; ``None`` if it is one."""
    from twisted.internet import endpoints
    from twisted.internet.testing import MemoryReactor

    if not description:
        return "empty"
    unreadable = _irregular_file_named(description)
    if unreadable is not None:
        return unreadable
    try:
        # Only parsed: a reactor that connects nothing is enough. Parsers
        # read the files they name (ssl:certKey=), and may fail any way.
        endpoint = endpoints.clientFromString(MemoryReactor(), description)
    except Exception as problem:
        if isinstance(problem, ValueError) and str(problem).startswith("Unknown endpoint type"):
            return f"unknown endpoint type {description.split(':', 1)[0]!r}"
        # A file it names, missing (trustRoots=/missing raises a bare
        # UnlistableError over the FileNotFoundError).
        for error in (problem, problem.__context__):
            if isinstance(error, OSError) and error.strerror:
                return error.strerror + (f": {error.filename}" if error.filename else "")
        return f"not a client endpoint string ({str(problem) or repr(problem)})"
    # What Twisted takes and no connect can use.
    if isinstance(endpoint, endpoints.UNIXClientEndpoint) and not getattr(endpoint, "_path", "x"):
        return "no socket path"
    size = _too_long_for_a_socket(endpoint._path) if isinstance(endpoint, endpoints.UNIXClientEndpoint) else None
    if size is not None:
        return f"a socket path of {size} bytes, over the {UNIX_PATH_MAX} a unix socket's address holds"
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 < port < 65536:
        return f"port {port} is not 1 to 65535"
    return None


# Options of Twisted's ssl: and tls: client strings naming files its parser
# reads there and then; the directories ones are read for their *.pem files.
_FILES_READ = ("certKey", "privateKey", "certificate", "extraCertChain", "dhParameters")
_DIRECTORIES_READ = ("caCertsDir", "trustRoots")


def _irregular_file_named(description: str) -> Optional[str]:
    """
    A file an endpoint string's parser would read that is no regular file:
    a FIFO blocked the check, the start and a reload for good, and
    ``/dev/zero`` took all the memory there was.
    """
    for field in endpoint_fields(description)[1:]:
        name, equals, value = field.partition("=")
        if not equals or not value:
            continue
        if name in _FILES_READ:
            kind = irregular_kind(value)
            if kind is not None:
                return f"{name}={value}: not a regular file ({kind})"
            continue
        if name not in _DIRECTORIES_READ or not os.path.isdir(value):
            continue
        try:
            paths = [os.path.join(value, entry) for entry in sorted(os.listdir(value))
                     if entry.lower().endswith(".pem")]
        except OSError:
            continue  # said by the parser
        for path in paths:
            kind = irregular_kind(path)
            if kind is not None:
                return f"{name}={value}: {path} is not a regular file ({kind})"
    return None


def unseen_document_root(fastcgi: model.FastCGI, chroot: Optional[str]) -> Optional[str]:
    """
    Why a ``param DOCUMENT_ROOT`` outside the chroot names no script: the
    server cannot look in it, so its requests name no SCRIPT_FILENAME.
    """
    params = dict(fastcgi.params)
    document_root = params.get("DOCUMENT_ROOT")
    if not chroot or not document_root or "SCRIPT_NAME" in params or "SCRIPT_FILENAME" in params:
        return None
    if seen_from_here(document_root, chroot) is not None:
        return None
    return (f"param DOCUMENT_ROOT {document_root} is outside the chroot {chroot}: scripts cannot be "
            "looked for there, so no request names one (write param SCRIPT_NAME)")


def fastcgi_problem(address: Optional[model.FastCGIAddress]) -> Optional[str]:
    """What keeps a backend from ever being reached, as a diagnostic; ``None`` if nothing."""
    if isinstance(address, model.FastCGISpawn):
        problem = spawn_problem(address.command)
        return None if problem is None else f"fastcgi spawn: {problem}"
    if isinstance(address, model.FastCGIEndpoint):
        problem = endpoint_problem(address.description)
        return None if problem is None else f"fastcgi endpoint {address.description!r}: {problem}"
    if isinstance(address, model.FastCGITCP):
        written = f'fastcgi socket tcp "{address.host}"'
        if isinstance(address.port, str):
            try:
                socket.getservbyname(address.port, "tcp")
            except OSError:
                return (f'{written} port "{address.port}": unknown service '
                        "(not a port number, nor a name in /etc/services)")
        elif address.port == 0:
            return f"{written} port 0: no application listens on port 0"
        # Each connect failed at once: "invalid hostname" (42 for every request).
        unusable = "an empty host name" if not address.host else host_name_problem(address.host)
        if unusable is not None:
            return f"{written}: {unusable}"
    if isinstance(address, model.FastCGISocket):
        size = _too_long_for_a_socket(address.path)
        if size is not None:
            # Every connect failed, logged as "An error occurred while connecting: None".
            return (f'fastcgi socket "{address.path}": {size} bytes long, over the {UNIX_PATH_MAX} '
                    "a unix socket's address holds")
        if os.path.isdir(address.path):
            # "" became the directory of the file: every connect was refused.
            return f'fastcgi socket "{address.path}": a directory, not a socket'
    return None


# The longest path a unix socket's address holds (Linux's sun_path, less its NUL).
UNIX_PATH_MAX = 107


def _too_long_for_a_socket(path: str) -> Optional[int]:
    """The length of ``path`` in bytes, where it is longer than a socket's address holds."""
    size = len(os.fsencode(path))
    return size if size > UNIX_PATH_MAX else None


def spawn_directory_open_to_others(chroot: Optional[str]) -> Optional[str]:
    """
    A warning for a chroot whose top, where spawned programs' sockets are
    made, others may write to: once something removes a socket's
    directory, another user can put one of theirs at its path, and the
    workers, which connect by that path, send it every request.
    """
    if not chroot:
        return None
    try:
        mode = os.stat(chroot).st_mode
    except OSError:
        return None
    if not mode & stat.S_IWOTH:
        return None
    return (f"fastcgi spawn: its socket is made at the top of the chroot {chroot}, which any user may "
            "write to: should its directory be removed, another user could put a socket of their own "
            "at its path, where the workers send requests (let only root write there)")


def spawn_socket_too_long() -> Optional[str]:
    """
    Why a spawned program's socket, in a directory made in the temporary
    directory, cannot be: its path too long for a socket's address. The
    program was started again and again ("AF_UNIX path too long"), every
    request a 42.
    """
    from gemfcgi.fastcgi.socketdir import PREFIX, SOCKET_NAME

    parent = tempfile.gettempdir()
    size = _too_long_for_a_socket(os.path.join(parent, f"{PREFIX}XXXXXXXX", SOCKET_NAME))
    if size is None:
        return None
    return (f"fastcgi spawn: its socket would be {size} bytes long in the temporary directory "
            f"{parent}, over the {UNIX_PATH_MAX} a unix socket's address holds (set TMPDIR to a shorter one)")


def load_and_check(
    path: str,
    defines: Optional[dict[str, str]] = None,
    base: Optional[str] = None,
    refuse: Optional[Callable[[model.Config], list[Diagnostic]]] = None,
) -> tuple[model.Config, list[Diagnostic]]:
    """
    The configuration in ``path``, ready to serve, its relative paths
    joined to ``base`` (the current directory if not given); raises
    ``ConfigError``. ``refuse`` gives errors for what a running server
    cannot take (a reload's), said before any other: a ``user`` changes
    how every path of the file is read.
    """
    if base is None:
        base = current_directory()
        if base is None:
            raise ConfigError([Diagnostic(path, 0, DIRECTORY_GONE)])
    config, warnings = load_config(path, defines, base)
    refused = refuse(config) if refuse is not None else []
    if refused:
        raise ConfigError(refused, warnings)
    anchor_paths(config, base)
    errors, more_warnings = check_config(config)
    warnings = warnings + more_warnings
    if errors:
        raise ConfigError(errors, warnings)
    return config, warnings
