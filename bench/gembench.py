"""
Running gembench on CPU 1 and reading its machine-readable ``RESULT`` line,
and the ``phases`` line beside it: where a request's time went on average
(connect, TLS handshake, request and response).

gembench always gets ``-b`` with the exact body size, so a truncated body is
an error and not a fast request, and ``-e`` so that failed requests are
counted in the result instead of hiding it behind an exit status.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

CLIENT_CPU = 1
REQUEST_TIMEOUT = 10.0
# At or above this, gembench itself may be the bottleneck (its README, "Capacity").
CLIENT_CPU_LIMIT = 90


@dataclass(frozen=True)
class Load:
    """One gembench invocation, minus the server."""

    path: str
    body_size: int
    concurrency: int
    duration: float
    resume: bool = False


@dataclass(frozen=True)
class Result:
    rps: float
    mib_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    ok: int
    err: int
    non2x: int
    resumed: int
    unclean: int
    cpu_pct: float
    elapsed_s: float
    c: int
    # Means from the phases line, in ms: TCP connect; from connect to the
    # client's handshake done (the server's first flight, and the client's
    # work on it); from the client's Finished and request to the EOF (the
    # server's end of the handshake, its session tickets, the reply and
    # close_notify). gembench prints them when a request succeeded.
    connect_ms: Optional[float] = None
    handshake_ms: Optional[float] = None
    response_ms: Optional[float] = None

    @property
    def finished(self) -> int:
        return self.ok + self.err + self.non2x

    @property
    def client_bound(self) -> bool:
        return self.cpu_pct >= CLIENT_CPU_LIMIT


class GembenchFailed(Exception):
    pass


PHASE_FIELDS = ("connect_ms", "handshake_ms", "response_ms")
PHASES = re.compile(
    r"^\s*phases ms\s+connect ([\d.]+)\s+handshake ([\d.]+)\s+request\+response ([\d.]+)",
    re.MULTILINE,
)


def parse_result(output: str) -> Result:
    """The ``RESULT key=value ...`` line, the last one gembench prints, and its phases."""
    phases = PHASES.search(output)
    connect, handshake, response = (float(value) for value in phases.groups()) if phases else (None,) * 3
    for line in reversed(output.splitlines()):
        if line.startswith("RESULT "):
            values = dict(item.split("=", 1) for item in line.split()[1:])
            kinds = {f.name: f.type for f in fields(Result) if f.name not in PHASE_FIELDS}
            return Result(
                **{
                    name: (int(float(values[name])) if kinds[name] in ("int", int) else float(values[name]))
                    for name in kinds
                },
                connect_ms=connect,
                handshake_ms=handshake,
                response_ms=response,
            )
    raise GembenchFailed(f"no RESULT line in gembench output:\n{output[-2000:]}")


def command(binary: Path, load: Load, port: int) -> list[str]:
    argv = [
        # Not quiet: the phases line is in the human-readable part.
        "taskset", "-c", str(CLIENT_CPU), str(binary), "-e",
        "-c", str(load.concurrency), "-d", f"{load.duration:g}", "-b", str(load.body_size),
        "-t", f"{REQUEST_TIMEOUT:g}", "-H", f"127.0.0.1:{port}",
        "-u", f"gemini://localhost:{port}{load.path}",
    ]
    if load.resume:
        argv.append("-r")
    return argv


def run(binary: Path, load: Load, port: int) -> Result:
    """Run one load against 127.0.0.1:``port``; bounded by duration + request timeout."""
    argv = command(binary, load, port)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=load.duration + REQUEST_TIMEOUT + 30
        )
    except subprocess.TimeoutExpired as error:
        raise GembenchFailed(f"gembench did not finish: {' '.join(argv)}") from error
    if done.returncode not in (0, 1):
        raise GembenchFailed(f"gembench exited with {done.returncode}: {done.stderr.strip()}")
    return parse_result(done.stdout)
