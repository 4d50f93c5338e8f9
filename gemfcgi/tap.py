"""
``twistd gemfcgi``: command-line options in, a service out.

Three ways to run (and two commands, ``--check`` and ``--gencert``):
- no options: the embedded default, a demo capsule on localhost:1965 with a
  self-signed certificate made on first run and kept in the state directory;
- quick mode, ``--root DIR --hostname NAME``: one capsule without a config;
- ``-c FILE``: a gmid.conf (``--check`` only checks it).
"""

from __future__ import annotations

import datetime
import math
import os
import shlex
import sys
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from cryptography import x509
from twisted.application.service import MultiService, Service
from twisted.logger import Logger
from twisted.python import usage

from gemfcgi import textlog
from gemfcgi._version import __version__
from gemfcgi.certificates import (
    CertificateError,
    ensure_self_signed,
    make_self_signed,
    self_signed_paths,
    validity_problem,
)
from gemfcgi.check import load_and_check, needs_a_restart
from gemfcgi.config import ConfigError, model
from gemfcgi.config.errors import in_file_order
from gemfcgi.config.values import PREFORK_MAX, PREFORK_MIN
from gemfcgi.gemini.hosts import canonical_host
from gemfcgi.prefork import WorkerPool
from gemfcgi.privileges import PrivilegeError
from gemfcgi.reload import ConfigReloader, Reloader
from gemfcgi.server import Timeouts
from gemfcgi.service import (
    GemfcgiService,
    ListenError,
    StartError,
    answer_repeated_stops,
    server_endpoint,
    with_backlog,
)
from gemfcgi.proxyv1 import split_proxied
from gemfcgi.regularfile import read_regular_file

log = Logger()

DEMO_ROOT = Path(__file__).parent / "demo" / "capsule"
LOOPBACK_LISTENERS = ["tcp:1965:interface=127.0.0.1", "tcp6:1965:interface=\\:\\:1"]
ALL_ADDRESSES_LISTENER = "tcp6:1965:interface=\\:\\:"
LOCAL_NAMES = ["localhost", "127.0.0.1", "::1"]
# What a reload without a configuration file reads again, as its log lines say.
COMMAND_LINE = "the command line (certificate and key files read again)"
# What twistd's waiting parent reads of a daemon's failed start after its "1 ".
STATUS_PIPE_ROOM = 98


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        # The XDG spec: a relative value is ignored (it would name a place
        # in whatever directory the server started in).
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "gemfcgi"


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve Gemini over TLS. Without options, serves a demo capsule on "
        "localhost port 1965 with a self-signed certificate."
    )
    optParameters = [
        ["root", "r", None, "Serve this directory (quick mode, no config file)."],
        ["hostname", "H", None, "The host name served in quick mode (default: localhost)."],
        ["cert", None, None, "PEM certificate (chain) for quick mode."],
        ["key", None, None, "PEM private key for quick mode."],
        ["state-dir", None, None, "Where the self-signed certificate is kept "
         "(default $XDG_STATE_HOME/gemfcgi or ~/.local/state/gemfcgi)."],
        ["request-timeout", None, 10.0, "Seconds for the request line to arrive.", float],
        ["handshake-timeout", None, 10.0, "Seconds for the TLS handshake.", float],
        ["idle-timeout", None, 60.0, "Seconds a client may read nothing of a reply "
         "before it is closed.", float],
        ["drain-timeout", None, 30.0, "Seconds a stop waits for requests in flight.", float],
        ["backend-timeout", None, 60.0, "Seconds a FastCGI application or proxied server may "
         "take to begin its reply, or pause in its body.", float],
        ["max-connections", None, None, "Connections served at once; beyond it clients "
         "get 41 (default: from the descriptor limit).", int],
        ["workers", None, None, "Worker processes sharing the listeners (default: the "
         "config's prefork, else 1).", int],
    ]
    optFlags = [
        ["check", None, "With --config: check the configuration (certificates, keys and "
         "roots included), print the result and exit."],
        ["gencert", None, "Write a new self-signed certificate for --hostname and exit."],
        ["rsa", None, "With --gencert: RSA 2048 instead of ECDSA P-256."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["defines"] = {}
        self["config"] = None

    def opt_config(self, path: str) -> None:
        """A gmid.conf file to serve."""
        self["config"] = path

    opt_c = opt_config

    def opt_define(self, definition: str) -> None:
        """NAME=VALUE: define a macro for the config file, winning over the file's own."""
        name, equals, value = definition.partition("=")
        if not equals or not name:
            raise usage.UsageError(f"-D takes NAME=VALUE, not {definition!r}")
        self["defines"][name] = value

    opt_D = opt_define

    def opt_listen(self, description: str) -> None:
        """A Twisted server endpoint string to listen on (repeatable); TLS is added by gemfcgi, e.g. tcp:1965:interface=0.0.0.0."""
        self["listen"].append(description)

    def opt_version(self) -> None:
        """Print gemfcgi's version and exit."""
        print(f"gemfcgi {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        if (self["cert"] is None) != (self["key"] is None):
            raise usage.UsageError("--cert and --key go together")
        if self["check"] and self["config"] is None:
            raise usage.UsageError("--check needs --config FILE")
        # Given or not, which a default of "localhost" could not tell:
        # ``-c`` refuses it given, even as "localhost".
        hostname_given = self["hostname"] is not None
        if not hostname_given:
            self["hostname"] = "localhost"
        if canonical_host(self["hostname"]) is None:
            raise usage.UsageError(f"--hostname takes a host name or an IP address, not {self['hostname']!r}")
        if self["config"] is not None and self["root"] is not None:
            raise usage.UsageError("--config and --root are two different modes; pick one")
        # Options of another mode were taken without a word: --rsa started
        # the server, and a configuration served its own certificate.
        if self["rsa"] and not self["gencert"]:
            raise usage.UsageError("--rsa goes with --gencert")
        if self["gencert"] and (self["config"] is not None or self["check"]):
            raise usage.UsageError("--gencert writes a certificate for --hostname and exits: "
                                   "it takes no --config or --check")
        if self["config"] is not None and not self["gencert"]:
            given = [f"--{name}" for name in ("cert", "key", "state-dir") if self[name] is not None]
            if hostname_given:
                given.append("--hostname")
            if given:
                raise usage.UsageError(
                    f"{', '.join(given)}: for quick mode (--root) and the embedded default; a "
                    "configuration file names its servers, certificates and keys itself")
        for name in ("request-timeout", "handshake-timeout", "idle-timeout", "backend-timeout"):
            if not (math.isfinite(self[name]) and self[name] > 0):
                raise usage.UsageError(f"--{name} takes a number of seconds above 0, not {self[name]:g}")
        if not (math.isfinite(self["drain-timeout"]) and self["drain-timeout"] >= 0):
            raise usage.UsageError(
                f"--drain-timeout takes a number of seconds, 0 or more, not {self['drain-timeout']:g}")
        if self["max-connections"] is not None and self["max-connections"] < 1:
            raise usage.UsageError(f"--max-connections takes 1 or more, not {self['max-connections']}")
        workers = self["workers"]
        if workers is not None and not PREFORK_MIN <= workers <= PREFORK_MAX:
            raise usage.UsageError(
                f"--workers takes {PREFORK_MIN} to {PREFORK_MAX}, as prefork does, not {workers}")
        if self["state-dir"] is None:
            self["state-dir"] = str(default_state_dir())
        elif not self["state-dir"]:
            # An unset variable: abspath would make it the current
            # directory, which may be the capsule served.
            raise usage.UsageError("--state-dir is empty: give a directory")
        # twistd may change directory (--rundir) after this, and a reload
        # reads these again: they name what they named when given.
        for name in ("config", "root", "cert", "key", "state-dir"):
            if self[name] is not None:
                self[name] = os.path.abspath(self[name])


def _names_for(hostname: str) -> list[str]:
    # The name as hosts are compared (a certificate for "Example.ORG." is
    # for example.org); LOCALHOST and localhost. are localhost too, whose
    # pair names the loopback addresses as well.
    canonical = canonical_host(hostname) or hostname
    return LOCAL_NAMES if canonical == "localhost" else [canonical]


def self_signed_directory(options: Options) -> Path:
    """
    Where quick mode keeps the self-signed pair for ``--hostname`` (as
    ``cert.pem`` and ``key.pem``), and where ``--gencert`` writes one: the
    state directory for localhost (the embedded default's), a directory
    per host name inside it for any other name.
    """
    directory = Path(options["state-dir"])
    hostname = options["hostname"]
    # One host, one pair, however it is written (Example.org., example.org);
    # a pair kept under the name as written before stays in use.
    canonical = canonical_host(hostname) or hostname
    if canonical == "localhost":
        return directory
    if canonical != hostname and (directory / hostname).is_dir():
        return directory / hostname
    return directory / canonical


def gencert(options: Options) -> None:
    """
    ``--gencert``: a fresh pair for a capsule owner, where quick mode will
    use it, never overwriting one (clients trust a capsule's certificate
    on first use: replacing it makes them warn).
    """
    hostname = options["hostname"]
    cert_path, key_path = self_signed_paths(self_signed_directory(options))
    if options["cert"]:
        cert_path, key_path = Path(options["cert"]), Path(options["key"])
    if os.path.abspath(cert_path) == os.path.abspath(key_path):
        sys.exit(f"{cert_path}: --cert and --key name the same file; give each its own")
    for path in (cert_path, key_path):
        if os.path.lexists(path):  # a dangling link too: it leads somewhere
            sys.exit(f"{path}: already exists; remove it first to replace it")
        parent = next((above for above in path.parents if os.path.lexists(above)), None)
        if parent is not None and not parent.is_dir():
            sys.exit(f"{parent}: not a directory, so {path} cannot be written")
    cert_pem, key_pem = make_self_signed(_names_for(hostname), use_rsa=options["rsa"])
    written: list[Path] = []
    try:
        for path, data in ((key_path, key_pem), (cert_path, cert_pem)):
            path.parent.mkdir(parents=True, exist_ok=True)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
                written.append(path)
                file.write(data)
            if path == cert_path:
                path.chmod(0o644)
    except OSError as error:
        # Half a pair would block the next try ("already exists").
        for path in written:
            path.unlink(missing_ok=True)
        sys.exit(f"{error.filename or path}: cannot write: {error.strerror}")
    print(f"certificate: {cert_path}\nkey: {key_path}")
    sys.exit(0)


def quick_config(options: Options, root: str) -> model.Config:
    """One server for ``root``, with the given or a self-signed certificate."""
    hostname = options["hostname"]
    names = _names_for(hostname)
    if options["cert"]:
        cert, key = options["cert"], options["key"]
        served = os.path.realpath(root)
        if os.path.commonpath([served, os.path.realpath(key)]) == served:
            raise CertificateError(f"the key {key} is inside the root {root}, which would serve it "
                                   "to anyone: keep it outside the root")
    else:
        directory = self_signed_directory(options)
        served, kept = os.path.realpath(root), os.path.realpath(directory)
        if os.path.commonpath([served, kept]) == served:
            raise CertificateError(f"the state directory {directory} is inside the root {root}, which "
                                   "would serve its private key to anyone: give another --state-dir")
        cert_path, key_path = ensure_self_signed(directory, names)
        cert, key = str(cert_path), str(key_path)
    _warn_if_out_of_date(cert)
    server = model.Server(
        name=hostname,
        # The loopback addresses that the certificate made for localhost
        # names: a URL written with one of them is for the same capsule.
        aliases=[name for name in names if name != (canonical_host(hostname) or hostname)],
        cert=cert,
        key=key,
        options=model.LocationOptions(root=os.path.abspath(root)),
    )
    return model.Config(servers=[server], log=model.LogSettings(syslog=False))


def _warn_if_out_of_date(cert: str) -> None:
    """As a configuration's check does, at a start and each reload: clients refuse such a certificate."""
    try:
        leaf = x509.load_pem_x509_certificate(read_regular_file(cert))
    except (OSError, ValueError):
        return  # said as the pair is loaded
    invalid = validity_problem(leaf, datetime.datetime.now(datetime.timezone.utc))
    if invalid:
        log.warn("warning: {cert}: {invalid}: clients will refuse it, or warn", cert=cert, invalid=invalid)


def demo_config(options: Options) -> model.Config:
    """The embedded default: the demo capsule, with its FastCGI app under /app/."""
    config = quick_config(options, str(DEMO_ROOT))
    app = model.FastCGI(
        address=model.FastCGISpawn(f"{shlex.quote(sys.executable)} -m gemfcgi.demo.app")
    )
    config.servers[0].locations.append(
        model.Location("/app/*", model.LocationOptions(fastcgi=app))
    )
    return config


def load_or_exit(options: Options) -> model.Config:
    """The ``--config`` file, or every error as ``FILE:LINE: message`` and exit 1."""
    try:
        config, warnings = load_and_check(options["config"], options["defines"])
    except ConfigError as error:
        for diagnostic in in_file_order(error.warnings, options["config"]):
            print(f"warning: {diagnostic}", file=sys.stderr)
        for diagnostic in error.diagnostics:
            print(diagnostic, file=sys.stderr)
        sys.exit(1)
    # A start's warnings go to the log too, where it is not the terminal
    # (twistd's ``--logfile``, a daemon's): a reload's go there alone.
    to_the_log = not options["check"] and not textlog.logs_to_the_terminal(options.parent)
    for diagnostic in in_file_order(warnings, options["config"]):
        print(f"warning: {diagnostic}", file=sys.stderr)
        if to_the_log:
            log.warn("warning: {d}", d=str(diagnostic))
    if options["check"]:
        print("configuration OK")
        sys.exit(0)
    return config


class StartOrExit(MultiService):
    """
    What twistd starts. A socket that cannot be opened (a port in use, an
    address this machine does not have), or an access file, ends the start as a bad
    configuration does, before any FastCGI application is spawned: with one
    line (``FILE:LINE:`` first when a ``listen on`` line asked for the
    socket) and exit status 1 rather than a traceback. A daemon's line also
    goes to the parent twistd left waiting for word of the start, which
    prints it: twistd's own report of an exception would keep the first 100
    bytes of the exception's class and message, which loses the line.
    """

    def __init__(self, service: Service, foreground: bool, pidfile: str = "",
                 twistd_options: Optional[dict] = None) -> None:
        super().__init__()
        self.foreground = foreground
        self.pidfile = pidfile
        self.twistd_options = twistd_options
        service.setServiceParent(self)

    def privilegedStartService(self) -> None:
        # The sockets and the access file are opened here (as root, under
        # twistd's --uid), and fail as they would in startService.
        try:
            super().privilegedStartService()
        except StartError as error:
            self._exit_for(error)

    def startService(self) -> None:
        try:
            super().startService()
        except StartError as error:
            self._exit_for(error)

    def _exit_for(self, error: StartError) -> None:
        where, what = "", str(error)
        if isinstance(error, ListenError):
            where = f"{error.origin}: " if error.origin else ""
            what = f"cannot listen on {error}"
        # twistd has standard error written to its log by now. A
        # daemon's line is there before its waiting parent, told, exits.
        print(f"gemfcgi: {where}{what}", file=sys.stderr, flush=True)
        if not self.foreground and not self._tell_the_waiting_parent(where, what):
            raise error
        # twistd removes its pidfile when it stops, which an exit here skips.
        self._remove_pidfile()
        sys.exit(1)

    def _tell_the_waiting_parent(self, where: str, what: str) -> bool:
        """Whether the problem went to the daemon's waiting parent."""
        pipe = self.twistd_options.get("statusPipe") if self.twistd_options is not None else None
        if pipe is None:
            return False
        try:
            os.write(pipe, b"1 " + status_message(where, what))
            os.close(pipe)
        except OSError:
            return False
        # So that twistd, seeing the exit, does not write to it again.
        self.twistd_options["statusPipe"] = None
        return True

    def _remove_pidfile(self) -> None:
        """twistd's pidfile, if it names this process (it is relative to ``--rundir``, the current directory)."""
        if not self.pidfile:
            return
        try:
            with open(self.pidfile) as written:
                if written.read().strip() != str(os.getpid()):
                    return
            os.remove(self.pidfile)
        except OSError:
            pass


def status_message(where: str, what: str) -> bytes:
    """
    ``where`` and ``what`` in the room twistd's waiting parent reads: when
    they do not fit, the end of ``where`` (the file name and the line) and
    the reason at the end of ``what`` are kept, and middles give way.
    """
    whole = (where + what).encode("ascii", "backslashreplace")
    if len(whole) <= STATUS_PIPE_ROOM:
        return whole
    place = where.encode("ascii", "backslashreplace")
    said = what.encode("ascii", "backslashreplace")
    reason = said.rpartition(b": ")[2][-(STATUS_PIPE_ROOM // 3):]
    room = STATUS_PIPE_ROOM - len(reason) - len(b"...")
    if len(place) > room // 2:
        place = b"..." + place[-(room // 2 - 3):]
    return (place + said)[:room] + b"..." + reason


def makeService(options: Options) -> Service:
    try:
        foreground = options.parent is not None and bool(options.parent.get("nodaemon"))
        pidfile = (options.parent.get("pidfile") or "") if options.parent is not None else ""
        service: Service = StartOrExit(_make_service(options), foreground, pidfile,
                                       options.parent)
    except (ListenError, CertificateError, PrivilegeError) as error:
        sys.exit(f"gemfcgi: {error}")
    # Under twistd, its text log is written by an observer of ours that
    # writes the same lines for less (an access line per request).
    try:
        observer = textlog.twistd_observer(options.parent) if options.parent is not None else None
    except OSError as error:
        # A FIFO no process reads, a directory that is not there: a line, not a traceback.
        sys.exit(f"gemfcgi: --logfile {error.filename or options.parent.get('logfile')}: "
                 f"{error.strerror or error}")
    if observer is None:
        return service
    return textlog.WithTwistdLog(service, observer)


def _make_service(options: Options) -> Service:
    if options["gencert"]:
        gencert(options)
    timeouts = Timeouts(
        handshake=options["handshake-timeout"],
        request=options["request-timeout"],
        idle=options["idle-timeout"],
        backend=options["backend-timeout"],
    )
    serving = dict(
        timeouts=timeouts,
        max_connections=options["max-connections"],
        drain_timeout=options["drain-timeout"],
    )
    listen: Optional[list[str]] = options["listen"] or None
    rebuild: Optional[Callable[[], model.Config]] = None
    if options["config"] is not None:
        config = load_or_exit(options)
    elif options["root"] is not None:
        if not os.path.isdir(options["root"]):
            # What a configuration's root gets from the check, said of the option.
            sys.exit(f"gemfcgi: --root {options['root']} is not a directory")
        rebuild = partial(quick_config, options, options["root"])
        listen = listen or [ALL_ADDRESSES_LISTENER]
    else:
        rebuild = partial(demo_config, options)
        listen = listen or LOOPBACK_LISTENERS
    if listen is not None:
        listen = [with_backlog(description) for description in listen]
        if rebuild is not None:
            # Said before a self-signed pair is made for a start that
            # cannot happen (the line giving its fingerprint would be lost).
            from twisted.internet import reactor

            for description in listen:
                if not split_proxied(description)[1].startswith("systemd:"):
                    server_endpoint(reactor, description)
    if rebuild is not None:
        config = rebuild()
    workers = options["workers"] or config.prefork
    service: Service
    refuse: Optional[Callable[[model.Config], list]]
    if workers > 1 or config.user is not None or config.chroot is not None:
        # Several processes, or privileges to drop: a parent that keeps its
        # own and workers that serve.
        pool = WorkerPool(config, workers, listen=listen, fixed_count=bool(options["workers"]),
                          **serving)
        service, apply = MultiService(), pool.reload
        pool.setServiceParent(service)
        refuse = None
    else:
        # Checked already, as the file was read (or built from checked options).
        service = GemfcgiService(config, listen=listen, **serving)
        # A file's reload is refused, as it is read, for what only a start
        # sets up; the command line's options ask for none of it.
        apply = service.reload
        refuse = partial(needs_a_restart, workers_fixed=bool(options["workers"]))
    # A hangup reloads in every mode, rather than ending the server at once
    # (the default action) and orphaning its spawned FastCGI applications:
    # without a file, the same options are applied again, which reads the
    # certificate and key files again (renewed in place).
    from twisted.internet import reactor

    reloader: Reloader
    if rebuild is None:
        reloader = ConfigReloader(options["config"], options["defines"], apply, reactor, refuse)
    else:
        reloader = Reloader(COMMAND_LINE, lambda: (rebuild(), []), apply, reactor)
    reloader.setServiceParent(service)
    # The prefork parent too, which is no GemfcgiService.
    answer_repeated_stops(reactor)
    return service
