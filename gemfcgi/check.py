"""
Loading a configuration file for serving: the grammar, then the world.

The parser knows gmid's language; this module checks what only the running
server can: that certificates and keys load and belong together, that roots
are directories, that CA files parse. Every problem becomes a ``FILE:LINE``
diagnostic, so ``--check``, start-up and a reload all report the same way.
"""

from __future__ import annotations

import os
import shlex
import stat
from typing import Optional

from gemfcgi.certificates import CertificateError, load_key_pair, ocsp_mismatch
from gemfcgi.config import ConfigError, Diagnostic, load_config, validate_supported
from gemfcgi.config import model
from gemfcgi.fastcgi.spawn import find_program
from gemfcgi.handlers.clientca import load_authorities
from gemfcgi.privileges import PrivilegeError, identity_for
from gemfcgi.tls import ProtocolsError, protocol_range


def _where(origin: Optional[model.Origin], config: model.Config) -> tuple[str, int]:
    if origin is None:
        return config.source or "<config>", 1
    return origin.file, origin.line


def _in_chroot(config: model.Config, path: str) -> str:
    """gmid resolves roots (not certificates) inside the chroot."""
    if config.chroot and os.path.isabs(path):
        return os.path.join(config.chroot, path.lstrip("/"))
    return path


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
    if find_program(argv[0], os.environ) is None:
        where = "" if "/" in argv[0] else " in PATH"
        return f"program {argv[0]!r} not found{where} (or not executable)"
    return None


def check_config(config: model.Config) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """Errors and warnings about what ``config`` refers to on disk."""
    errors: list[Diagnostic] = list(validate_supported(config))
    warnings: list[Diagnostic] = []

    def error(origin: Optional[model.Origin], message: str) -> None:
        errors.append(Diagnostic(*_where(origin, config), message))

    def warning(origin: Optional[model.Origin], message: str) -> None:
        warnings.append(Diagnostic(*_where(origin, config), message, "warning"))

    try:
        identity_for(config)
    except PrivilegeError as problem:
        error(None, str(problem))
    try:
        protocol_range(config.protocols)
    except ProtocolsError as problem:
        error(None, f"protocols: {problem}")
    access = config.log.access
    if access is not None:
        # Opened at start-up (and on SIGUSR1): its directory must be there.
        directory = os.path.dirname(_in_chroot(config, os.path.abspath(access))) or "."
        if not os.path.isdir(directory):
            error(config.log.access_origin, f"log access {access!r}: no directory {directory}")
    checked_cas: set[str] = set()
    for server in config.servers:
        origin = server.origin
        if server.cert is None or server.key is None:
            error(origin, f"server {server.name!r} needs both cert and key")
        else:
            try:
                pair = load_key_pair(server.cert, server.key, server.ocsp)
            except CertificateError as problem:
                error(origin, f"server {server.name!r}: {problem}")
            else:
                unstapled = ocsp_mismatch(pair)
                if unstapled:
                    warning(origin, f"server {server.name!r}: {server.ocsp}: {unstapled}")
                mode = os.stat(server.key).st_mode
                if mode & 0o077:
                    warning(
                        origin,
                        f"key {server.key} is readable by group or others "
                        f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it",
                    )
        for options, where in [(server.options, origin)] + [
            (location.options, location.origin or origin) for location in server.locations
        ]:
            if options.root is not None and not os.path.isdir(_in_chroot(config, options.root)):
                error(where, f"root {options.root} is not a directory")
            fastcgi = options.fastcgi
            if fastcgi is not None and isinstance(fastcgi.address, model.FastCGISpawn):
                problem = spawn_problem(fastcgi.address.command)
                if problem is not None:
                    error(fastcgi.origin or where, f"fastcgi spawn: {problem}")
            ca = options.require_client_ca
            if ca is not None and ca not in checked_cas:
                checked_cas.add(ca)
                try:
                    load_authorities([ca])
                except CertificateError as problem:
                    error(where, f"require client ca: {problem}")
    return errors, warnings


def load_and_check(
    path: str, defines: Optional[dict[str, str]] = None
) -> tuple[model.Config, list[Diagnostic]]:
    """The configuration in ``path``, ready to serve; raises ``ConfigError``."""
    config, warnings = load_config(path, defines)
    errors, more_warnings = check_config(config)
    warnings = warnings + more_warnings
    if errors:
        raise ConfigError(errors, warnings)
    return config, warnings
