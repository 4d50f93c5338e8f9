"""
How each server under test is started, on 127.0.0.1 and CPU 0.

A ``ServerKind`` knows its command line; ``start`` runs it through
``Processes`` and waits until a process of its tree listens on the port,
the one readiness signal that every server gives (a connect alone would be
answered by anything else holding the port). Each server writes its log
(access lines included, as gemfcgi, jetforce and molly-brown log every
request by default; the bare Twisted floor logs nothing) to a file in the
work directory, never to a terminal.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bench.fixtures import Fixture
from bench.processes import Processes, process_tree, wait_until
from gemfcgi.fastcgi.spawn import holds

SERVER_CPU = 0
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
BARE_TWISTED = "bare Twisted"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
# A server is stopped between runs, with nothing in flight, or on Ctrl-C in
# the middle of one: gemfcgi's drain of 30 s would only delay the SIGKILL.
STOP_SOON = ["--drain-timeout", "1"]


class ServerFailed(Exception):
    """A server did not start; the message ends with the tail of its log."""


@dataclass
class RunningServer:
    name: str
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"gemini://localhost:{self.port}{path}"


@dataclass
class ServerKind:
    """A server's name and how to run it; subclasses give the command."""

    name: str

    def command(self, port: int, fixture: Fixture, work: Path) -> list[str]:
        raise NotImplementedError

    def environment(self, code: Path) -> Optional[dict[str, str]]:
        return None

    def start(self, processes: Processes, port: int, fixture: Fixture, work: Path,
              code: Path) -> RunningServer:
        """Start on ``port``; gemfcgi runs the copy of its code in ``code``."""
        log = work / "logs" / f"{self.name}-{port}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        process = processes.start(
            self.command(port, fixture, work), log, cpu=SERVER_CPU, env=self.environment(code), cwd=work
        )
        if not wait_until(lambda: process.poll() is not None or listens_in_tree(process.pid, port),
                          START_TIMEOUT):
            processes.stop(process)
            raise ServerFailed(f"{self.name}: not listening after {START_TIMEOUT:.0f} s\n{tail(log)}")
        if process.poll() is not None:
            raise ServerFailed(f"{self.name}: exited with {process.returncode}\n{tail(log)}")
        return RunningServer(self.name, port, process, log)


def _project_environment(code: Path) -> dict[str, str]:
    """``code`` (a copy of the repository's gemfcgi) first on PYTHONPATH, where twistd finds the plugin."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@dataclass
class Gemfcgi(ServerKind):
    """gemfcgi in quick mode (``--root``), as a capsule owner starts it."""

    request_timeout: Optional[float] = None

    def command(self, port: int, fixture: Fixture, work: Path) -> list[str]:
        argv = [
            *TWISTD, "gemfcgi", "--root", str(fixture.root),
            "--cert", str(fixture.cert), "--key", str(fixture.key),
            "--listen", f"tcp:{port}:interface={HOST}", *STOP_SOON,
        ]
        if self.request_timeout is not None:
            argv += ["--request-timeout", str(self.request_timeout)]
        return argv

    def environment(self, code: Path) -> Optional[dict[str, str]]:
        return _project_environment(code)


@dataclass
class GemfcgiConfig(ServerKind):
    """gemfcgi with a gmid.conf: FastCGI locations, ``prefork``."""

    prefork: Optional[int] = None
    locations: list[str] = field(default_factory=list)

    def config_text(self, port: int, fixture: Fixture) -> str:
        lines = [f"prefork {self.prefork}"] if self.prefork is not None else []
        lines += [
            "log { syslog off }",
            'server "localhost" {',
            f"\tlisten on {HOST} port {port}",
            f'\tcert "{fixture.cert}"',
            f'\tkey "{fixture.key}"',
            f'\troot "{fixture.root}"',
            *(f"\t{location}" for location in self.locations),
            "}",
        ]
        return "\n".join(lines) + "\n"

    def command(self, port: int, fixture: Fixture, work: Path) -> list[str]:
        config = work / f"{self.name}.conf"
        config.write_text(self.config_text(port, fixture))
        return [*TWISTD, "gemfcgi", "-c", str(config), *STOP_SOON]

    def environment(self, code: Path) -> Optional[dict[str, str]]:
        return _project_environment(code)


def demo_app_location() -> str:
    """The project's demo responder at /app/, spawned by gemfcgi."""
    return f'location "/app/*" {{ fastcgi spawn "{sys.executable} -m gemfcgi.demo.app" }}'


def fcgiwrap_location(fcgiwrap: str, fixture: Fixture) -> str:
    """fcgiwrap, spawned by gemfcgi, running the scripts of the fixture's cgi/ as /cgi/NAME."""
    return (
        f'location "/cgi/*" {{ root "{fixture.cgi}"; '
        f'fastcgi {{ spawn "{fcgiwrap} -c 4"; strip 1 }} }}'
    )


@dataclass
class Jetforce(ServerKind):
    """jetforce (Twisted + pyOpenSSL too), from its own virtual environment."""

    executable: Path = Path("jetforce")

    def command(self, port: int, fixture: Fixture, work: Path) -> list[str]:
        return [
            str(self.executable), "--host", HOST, "--port", str(port), "--hostname", "localhost",
            "--dir", str(fixture.root), "--tls-certfile", str(fixture.cert),
            "--tls-keyfile", str(fixture.key),
        ]


@dataclass
class BareTwisted(ServerKind):
    """``bare_twisted.py``: Twisted's own TLS and a one-line protocol, the floor for scale."""

    def command(self, port: int, fixture: Fixture, work: Path) -> list[str]:
        script = Path(__file__).with_name("bare_twisted.py")
        return [sys.executable, str(script), str(port), str(fixture.root), str(fixture.cert),
                str(fixture.key)]


@dataclass
class MollyBrown(ServerKind):
    """molly-brown (Go). It binds every interface: run it only in a private network namespace."""

    executable: str = "molly-brown"

    def command(self, port: int, fixture: Fixture, work: Path) -> list[str]:
        config = work / f"molly-brown-{port}.conf"
        log = work / "logs" / f"molly-brown-{port}"
        config.write_text(
            f"Port = {port}\n"
            'Hostname = "localhost"\n'
            f'CertPath = "{fixture.cert}"\n'
            f'KeyPath = "{fixture.key}"\n'
            f'DocBase = "{fixture.root}"\n'
            f'AccessLog = "{log}.access"\n'
            f'ErrorLog = "{log}.error"\n'
        )
        return [self.executable, "-c", str(config)]


def listens_in_tree(root: int, port: int) -> bool:
    """
    Whether a process of ``root``'s tree holds the socket listening on TCP
    ``port``: something else there (a server left from another run) would
    answer a connect as well, while the one started has exited.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is ADDRESS:PORT in hex; state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    return bool(inodes) and any(holds(pid, inodes) for pid in process_tree(root))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
