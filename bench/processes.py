"""
Children of the benchmark, and what a server's process tree costs.

Every process is started through ``Processes``, in a session of its own, so
that ``stop_all`` (run from a ``finally``) can signal its whole process group:
servers fork FastCGI applications and fcgiwrap forks workers, and none of them
may outlive the benchmark.

CPU time and memory are read from ``/proc`` for the server's whole tree
(the server and every descendant), because a FastCGI application spawned by
gemfcgi does part of the work of a request.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Optional, Sequence

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


class Processes:
    """The children of one benchmark run; a context manager that stops them all."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen] = []
        self._logs: list[IO[bytes]] = []

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    def start(
        self,
        argv: Sequence[str],
        log_path: Path,
        cpu: Optional[int] = None,
        env: Optional[dict[str, str]] = None,
        cwd: Optional[Path] = None,
    ) -> subprocess.Popen:
        """Start ``argv`` (pinned to ``cpu`` with taskset), output to ``log_path``."""
        command = list(argv)
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        log = open(log_path, "ab")
        self._logs.append(log)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._started.append(process)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 10.0) -> None:
        """
        SIGTERM to the process group, SIGKILL if it lingers; then SIGKILL to
        whatever of its tree is left. A FastCGI program gemfcgi spawns runs
        in a session of its own, out of the group's reach, and the workers
        fcgiwrap forks are not told when their parent dies.
        """
        if process in self._started:
            # Once stopped, never signalled again: its numbers may be reused.
            self._started.remove(process)
        tree = _tree_start_times(process.pid) if process.poll() is None else {}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        # Workers that left the group's leader behind still belong to the group.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid, started in tree.items():
            if _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stop_all(self) -> None:
        while self._started:
            self.stop(self._started[-1])
        while self._logs:
            self._logs.pop().close()


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (field 3 onwards)."""
    text = (PROC / str(pid) / "stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _start_time(pid: int) -> Optional[int]:
    """When ``pid`` started (clock ticks since boot), which tells it from a later process of that number."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, ValueError, IndexError):
        return None


def _tree_start_times(root: int) -> dict[int, Optional[int]]:
    return {pid: _start_time(pid) for pid in process_tree(root)}


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, found through each process's parent id.

    /proc/PID/task/TID/children is not in every kernel build, so the whole
    process table is scanned (a few hundred entries).
    """
    parents: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(parents.get(pid, []))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of the tree, including children that already exited.

    utime+stime of each live process plus cutime+cstime (children it has
    reaped) counts every process once: a child that ends between two readings
    moves from its own fields into its parent's.
    """
    ticks = 0
    for pid in process_tree(root):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` alone: not its children's, live or reaped."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:13]) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time all CPUs spent in user and system mode since boot (/proc/stat).

    Compared with the server's and gembench's own CPU over a run, it shows
    how much other processes (another session's tests, say) took meanwhile.
    Interrupt and softirq time is left out: loopback traffic is processed
    there, so it includes the benchmark's own packets.
    """
    user, nice, system = (int(value) for value in (PROC / "stat").read_text().split()[1:4])
    return (user + nice + system) / CLOCK_TICKS


def core_busy_seconds(cpu: int) -> float:
    """CPU time one CPU spent in user and system mode since boot (its line of /proc/stat).

    The servers are pinned to one CPU, and so is everything they start. A
    program that ignores SIGCHLD (fcgiwrap does) has its children reaped
    without their time being added to its own, so the process tree misses
    them; the CPU they ran on does not.
    """
    prefix = f"cpu{cpu} "
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith(prefix):
            user, nice, system = (int(value) for value in line.split()[1:4])
            return (user + nice + system) / CLOCK_TICKS
    return 0.0


def _status_kib(pid: int, field: str) -> int:
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def tree_memory_kib(root: int, field: str = "VmRSS") -> int:
    """``field`` of /proc/PID/status (VmRSS, VmHWM), summed over the tree."""
    total = 0
    for pid in process_tree(root):
        try:
            total += _status_kib(pid, field)
        except OSError:
            continue
    return total


def reset_peak_memory(root: int) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > clear_refs``); False if refused."""
    done = True
    for pid in process_tree(root):
        try:
            (PROC / str(pid) / "clear_refs").write_text("5")
        except OSError:
            done = False
    return done


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def import_rss_kib(python: str, modules: Sequence[str], timeout: float = 60.0) -> int:
    """
    VmRSS of a ``python`` process that has imported ``modules`` and nothing
    else: what a server built on them holds before it has any code or state
    of its own.

    The child gets ``timeout`` seconds to be ready and as many to end; one
    that does not is killed, and the run goes on without the figure's cause
    hidden behind a hang.
    """
    script = "".join(f"import {module}\n" for module in modules)
    script += "import sys\nsys.stdout.write('ready\\n')\nsys.stdout.flush()\nsys.stdin.read()\n"
    what = f"{python} importing {', '.join(modules) or 'nothing'}"
    with subprocess.Popen([python, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        with selectors.DefaultSelector() as waiting:
            waiting.register(child.stdout, selectors.EVENT_READ)
            if not waiting.select(timeout):
                child.kill()
                child.wait()
                raise RuntimeError(f"{what} was not ready within {timeout:g} s")
        ready = child.stdout.readline().strip() == "ready"
        rss = _status_kib(child.pid, "VmRSS") if ready else 0
        try:
            _, errors = child.communicate(timeout=timeout)  # closing stdin ends it
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise RuntimeError(f"{what} did not end within {timeout:g} s") from None
    if not ready:
        last = errors.strip().splitlines()[-1:] or ["no error shown"]
        raise RuntimeError(f"{python} could not import {', '.join(modules)}: {last[0]}")
    return rss
