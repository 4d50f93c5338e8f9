"""
Helpers for the FastCGI integration tests: a gemfcgi server built from a
JSON spec by ``server.tac``, FastCGI applications in child processes, and
what the tests observe of a process (descriptors, memory).

Every process started here is stopped by the ``Processes`` that started it,
so a fixture's teardown leaves nothing running.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from tests.support import PROJECT_ROOT, TWISTD, ServerProcess, start_command

APPS = Path(__file__).resolve().parent
TAC = APPS / "server.tac"
FAST_TIMEOUTS = {"connect": 1.0, "reply": 2.0, "drain": 3.0, "kill": 2.0}


def python_app(name: str, *args: str) -> str:
    """A spawn command running one of the test applications."""
    return shlex.join([sys.executable, str(APPS / name), *args])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Poll ``condition`` until it is true; its value, or an AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def accepts(address) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Processes:
    """Child processes of a test, all stopped by ``stop_all``."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []
        self.servers: list[ServerProcess] = []

    def app(self, argv: Sequence[str], ready: object = None) -> subprocess.Popen:
        """Start a FastCGI application; wait until ``ready`` (a path or (host, port)) accepts."""
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
        process = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        self.started.append(process)
        if ready is not None:
            wait_for(lambda: process.poll() is not None or accepts(ready), what=f"{argv[0]} to listen")
            assert process.poll() is None, f"{argv} exited with {process.returncode}"
        return process

    def server(self, spec: dict, env: Optional[dict] = None) -> ServerProcess:
        env = {**(env or {}), "GEMFCGI_TEST_SPEC": json.dumps(spec)}
        server = start_command([*TWISTD, "-n", "--pidfile=", "-y", str(TAC)], env=env)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def server_spec(certificate, locations: list[dict], root: Optional[str] = None,
                timeouts: Optional[dict] = None) -> dict:
    cert, key = certificate
    return {
        "cert": cert,
        "key": key,
        "listen": "tcp:0:interface=127.0.0.1",
        "root": root,
        "timeouts": timeouts or FAST_TIMEOUTS,
        "locations": locations,
    }
