"""
What is measured, against which server, in which order.

Throughput scenarios (1-5) run in rounds, and within a round every server
takes its turn at one scenario before the next scenario starts (A B C A B C
...): the machine is a shared VM whose speed drifts, and interleaving spreads
that drift over all servers instead of charging it to whichever ran last.
The report takes medians over the rounds.

Each run reads the server tree's CPU time before and after (server CPU per
request) and resets its peak RSS before it (peak memory during the run).
Memory (6) and prefork (7) need fresh servers of their own and come last.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from bench import clients, gembench
from bench.fixtures import INDEX_SIZE, Fixture
from bench.gembench import Load, Result
from bench.processes import (
    Processes,
    core_busy_seconds,
    import_rss_kib,
    machine_busy_seconds,
    own_cpu_seconds,
    process_tree,
    reset_peak_memory,
    tree_cpu_seconds,
    tree_memory_kib,
)
from bench.servers import (
    SERVER_CPU,
    Gemfcgi,
    GemfcgiConfig,
    RunningServer,
    ServerFailed,
    ServerKind,
    demo_app_location,
    fcgiwrap_location,
    free_port,
)
from gemfcgi.memorytrim import TRIM_AFTER

GEMFCGI = "gemfcgi"
# Runs where other processes took more than this (% of one core) are flagged: the
# machine is a shared VM, and twisted.md section 6 discarded such runs.
FOREIGN_CPU_LIMIT = 12.0
# Seconds from the idle connections' close to the memory read after it:
# the server's trim comes TRIM_AFTER seconds after the first of them ends.
AFTER_CLOSE_SECONDS = TRIM_AFTER + 1.5
FASTCGI_SERVER = "gemfcgi+fastcgi"
# What the interpreter holds after imports alone, for scale beside the RSS at
# rest: the key in ``Outcome.memory``, the modules imported, and what the
# report calls that Python.
IMPORT_FLOORS = [
    ("floor_python_kib", (), "that imports nothing (its start-up modules only)"),
    ("floor_pyopenssl_kib", ("OpenSSL.SSL",), "that only imports pyOpenSSL (`OpenSSL.SSL`)"),
    ("floor_reactor_kib", ("twisted.internet.reactor",),
     "that only imports Twisted's reactor (`twisted.internet.reactor`, which imports pyOpenSSL)"),
]


@dataclass(frozen=True)
class Settings:
    """Sizes and durations: the full benchmark, or the few-second smoke test."""

    quick: bool
    duration: float
    rounds: int
    warmup: float
    big_size: int
    huge_size: int
    idle_connections: int
    slow_rate: float
    slow_seconds: float
    retries: int  # extra attempts of a run during which other processes were busy

    @classmethod
    def full(cls, duration: float = 10.0, rounds: int = 3) -> "Settings":
        return cls(False, duration, rounds, 2.0, 10 * 2**20, 2**30, 1000, 2**20, 30.0, 1)

    @classmethod
    def smoke(cls, duration: float = 1.0, rounds: int = 1) -> "Settings":
        return cls(True, duration, rounds, 0.0, 2**20, 64 * 2**20, 50, 2**20, 2.0, 0)


@dataclass(frozen=True)
class Scenario:
    key: str  # "1", "2", "5a": the project issue's numbering
    title: str
    path: str
    concurrency: int
    resume: bool = False
    # The server's programs start processes whose CPU time no parent
    # collects (fcgiwrap ignores SIGCHLD): on the server's CPU, they are its.
    untracked_children: bool = False

    def load(self, body_size: int, duration: float) -> Load:
        return Load(self.path, body_size, self.concurrency, duration, self.resume)


STATIC_SCENARIOS = [
    Scenario("1", "986-byte page, 32 concurrent, new TLS handshake each", "/index.gmi", 32),
    Scenario("2", "986-byte page, 32 concurrent, TLS session resumption", "/index.gmi", 32, True),
    Scenario("3", "986-byte page, 1 concurrent (latency)", "/index.gmi", 1),
    Scenario("4", "10 MiB file, 4 concurrent (throughput)", "/big.bin", 4),
]
DEMO_APP = Scenario("5a", "FastCGI: demo responder spawned by gemfcgi, 16 concurrent", "/app/hello", 16)
FCGIWRAP = Scenario("5b", "FastCGI: fcgiwrap running a one-line shell script, 16 concurrent",
                    "/cgi/hello.sh", 16, untracked_children=True)
PREFORK = Scenario("7", "986-byte page, 32 concurrent, prefork 1 against prefork 2", "/index.gmi", 32)


@dataclass(frozen=True)
class Measurement:
    """One gembench run against one server, with the server's own costs."""

    scenario: str
    server: str
    round: int
    result: Result
    server_cpu_us: float  # per finished request, whole process tree
    peak_rss_kib: int  # VmHWM summed over the tree, reset before the run
    foreign_cpu_pct: float  # CPU used by neither the server tree nor gembench, % of one core
    # Busy time of the server's CPU per finished request, whatever ran there:
    # the tree, descendants it does not account for (fcgiwrap's scripts), noise.
    core_cpu_us: float = 0.0
    # The server's own process alone, per finished request: for FastCGI, the
    # relay's share of the tree (the rest is the application's).
    own_cpu_us: float = 0.0


@dataclass
class Outcome:
    """Everything the report needs."""

    settings: Settings
    servers: list[str] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)  # KiB, seconds or counts
    rest_rss_kib: dict[str, int] = field(default_factory=dict)
    prefork_processes: int = 0  # in the tree of 'prefork 2'
    repeated: int = 0  # runs done again because other processes were busy
    unavailable: dict[str, str] = field(default_factory=dict)  # server or scenario -> why
    notes: list[str] = field(default_factory=list)
    commit: str = "?"  # of the code snapshot the servers ran
    started: float = field(default_factory=time.time)
    finished: float = 0.0


@dataclass
class Bench:
    """The benchmark's fixed parts, and the outcome being filled in."""

    settings: Settings
    gembench: Path
    fixture: Fixture
    work: Path
    processes: Processes
    peers: list[ServerKind]
    fcgiwrap: Optional[str]
    outcome: Outcome
    code: Path  # the snapshot of gemfcgi the servers run
    log: Callable[[str], None] = print

    def start(self, kind: ServerKind) -> Optional[RunningServer]:
        try:
            return kind.start(self.processes, free_port(), self.fixture, self.work, self.code)
        except ServerFailed as error:
            self.outcome.unavailable[kind.name] = str(error).splitlines()[0]
            self.log(f"  {error}")
            return None

    def measure(self, server: RunningServer, scenario: Scenario, body_size: int,
                duration: float, round_number: int) -> Measurement:
        """One run; repeated (up to ``settings.retries`` times) while other processes were busy.

        Of the attempts, the one with the least foreign CPU is kept.
        """
        best = self._measure_once(server, scenario, body_size, duration, round_number)
        for _ in range(self.settings.retries if round_number > 0 else 0):
            if best.foreign_cpu_pct <= FOREIGN_CPU_LIMIT:
                break
            self.outcome.repeated += 1
            again = self._measure_once(server, scenario, body_size, duration, round_number)
            best = min(best, again, key=lambda m: m.foreign_cpu_pct)
        return best

    def _measure_once(self, server: RunningServer, scenario: Scenario, body_size: int,
                      duration: float, round_number: int) -> Measurement:
        peak_reset = reset_peak_memory(server.pid)
        cpu_before, busy_before = tree_cpu_seconds(server.pid), machine_busy_seconds()
        own_before = own_cpu_seconds(server.pid)
        core_before = core_busy_seconds(SERVER_CPU)
        result = gembench.run(self.gembench, scenario.load(body_size, duration), server.port)
        cpu = tree_cpu_seconds(server.pid) - cpu_before
        own = own_cpu_seconds(server.pid) - own_before
        core = core_busy_seconds(SERVER_CPU) - core_before
        server_side = max(cpu, core) if scenario.untracked_children else cpu
        others = machine_busy_seconds() - busy_before - server_side - result.cpu_pct / 100 * result.elapsed_s
        peak = tree_memory_kib(server.pid, "VmHWM" if peak_reset else "VmRSS")
        finished = max(result.finished, 1)
        measurement = Measurement(scenario.key, server.name, round_number, result,
                                  cpu * 1e6 / finished, peak,
                                  max(0.0, 100 * others / max(result.elapsed_s, 1e-3)),
                                  core * 1e6 / finished, own * 1e6 / finished)
        warning = "  (gembench CPU-bound)" if result.client_bound else ""
        if measurement.foreign_cpu_pct > FOREIGN_CPU_LIMIT:
            warning += f"  (other processes: {measurement.foreign_cpu_pct:.0f} % CPU)"
        self.log(f"  [{scenario.key}] {server.name:16} {result.rps:9.1f} req/s {result.mib_s:8.2f} MiB/s "
                 f"p50 {result.p50_ms:7.3f} ms  err {result.err + result.non2x}  "
                 f"server {measurement.server_cpu_us:6.0f} us/req{warning}")
        return measurement


def run_all(bench: Bench) -> Outcome:
    """Every scenario, in order; what cannot run is recorded with its reason."""
    raise_open_file_limit()
    settings, outcome = bench.settings, bench.outcome
    bench.log("starting the servers")
    static = [s for s in (bench.start(kind) for kind in [Gemfcgi(GEMFCGI), *bench.peers]) if s]
    if not static or static[0].name != GEMFCGI:
        raise ServerFailed(f"gemfcgi did not start: {outcome.unavailable.get(GEMFCGI)}")
    outcome.servers = [server.name for server in static]
    for server in static:
        clients.probe(server.port, "/index.gmi")
    time.sleep(1.0)
    for server in static:
        outcome.rest_rss_kib[server.name] = tree_memory_kib(server.pid)

    fastcgi_server, fastcgi_scenarios = start_fastcgi(bench)
    if settings.warmup:
        bench.log("warm-up")
        for server in static:
            bench.measure(server, STATIC_SCENARIOS[0], INDEX_SIZE, settings.warmup, 0)
        for scenario, size in fastcgi_scenarios[:1] if fastcgi_server is not None else []:
            # The FastCGI application's first requests too (imports, caches).
            bench.measure(fastcgi_server, scenario, size, settings.warmup, 0)

    for round_number in range(1, settings.rounds + 1):
        bench.log(f"round {round_number} of {settings.rounds}")
        for scenario in STATIC_SCENARIOS:
            size = settings.big_size if scenario.path == "/big.bin" else INDEX_SIZE
            for server in static:
                outcome.measurements.append(
                    bench.measure(server, scenario, size, settings.duration, round_number))
        if fastcgi_server is not None:
            for scenario, size in fastcgi_scenarios:
                outcome.measurements.append(
                    bench.measure(fastcgi_server, scenario, size, settings.duration, round_number))
    for server in static:
        bench.processes.stop(server.process)

    prefork(bench)
    memory(bench, fastcgi_server)
    if fastcgi_server is not None:
        bench.processes.stop(fastcgi_server.process)
    outcome.finished = time.time()
    return outcome


def start_fastcgi(bench: Bench) -> tuple[Optional[RunningServer], list[tuple[Scenario, int]]]:
    """gemfcgi with a gmid.conf spawning the demo app (and fcgiwrap, if installed).

    Each route is probed once; one that does not answer 20 is reported as
    not available, with what it answered.
    """
    locations = [demo_app_location()]
    if bench.fcgiwrap:
        locations.append(fcgiwrap_location(bench.fcgiwrap, bench.fixture))
    else:
        bench.outcome.unavailable[FCGIWRAP.key] = "fcgiwrap not installed"
    server = bench.start(GemfcgiConfig(FASTCGI_SERVER, locations=locations))
    if server is None:
        reason = "FastCGI not available: " + bench.outcome.unavailable[FASTCGI_SERVER]
        for scenario in (DEMO_APP, FCGIWRAP):
            bench.outcome.unavailable.setdefault(scenario.key, reason)
        return None, []
    ready = []
    for scenario in [DEMO_APP, FCGIWRAP] if bench.fcgiwrap else [DEMO_APP]:
        try:
            reply = clients.probe(server.port, scenario.path)
        except OSError as error:
            reply = clients.Reply(f"no reply ({error})", 0)
        if reply.ok:
            ready.append((scenario, reply.body_size))
        else:
            answer = f"answered {reply.header!r}" if reply.header else "got no reply"
            bench.outcome.unavailable[scenario.key] = (
                f"FastCGI not available: {scenario.path} {answer}{last_error(server.log)}")
            bench.log(f"  {scenario.key}: {bench.outcome.unavailable[scenario.key]}")
    return server, ready


def prefork(bench: Bench) -> None:
    """Scenario 7, if ``prefork 2`` really gives two serving processes."""
    outcome = bench.outcome
    bench.log("prefork")
    two = bench.start(GemfcgiConfig("gemfcgi prefork 2", prefork=2))
    if two is None:
        outcome.unavailable[PREFORK.key] = "not available: " + outcome.unavailable.pop("gemfcgi prefork 2")
        return
    time.sleep(1.0)
    processes = outcome.prefork_processes = len(process_tree(two.pid))
    if processes < 2:
        bench.processes.stop(two.process)
        outcome.unavailable[PREFORK.key] = (
            f"not available: with 'prefork 2' gemfcgi runs {processes} process (setting not honoured)")
        bench.log(f"  {outcome.unavailable[PREFORK.key]}")
        return
    one = bench.start(GemfcgiConfig("gemfcgi prefork 1", prefork=1))
    if one is None:
        bench.processes.stop(two.process)
        outcome.unavailable[PREFORK.key] = "not available: 'prefork 1' did not start"
        return
    for round_number in range(1, bench.settings.rounds + 1):
        for server in (one, two):
            outcome.measurements.append(
                bench.measure(server, PREFORK, INDEX_SIZE, bench.settings.duration, round_number))
    bench.processes.stop(one.process)
    bench.processes.stop(two.process)


def memory(bench: Bench, fastcgi_server: Optional[RunningServer]) -> None:
    """Scenario 6: RSS at rest, with many idle TLS connections, under a slow reader.

    A fresh gemfcgi with a 60 s request timeout, so that the idle
    connections are still open when their cost is read (the default 10 s
    would close them while they are being opened).
    """
    settings, outcome = bench.settings, bench.outcome
    bench.log("memory")
    server = bench.start(Gemfcgi("gemfcgi memory", request_timeout=60))
    if server is None:
        outcome.unavailable["6"] = outcome.unavailable.pop("gemfcgi memory")
        return
    clients.probe(server.port, "/index.gmi")
    time.sleep(1.0)
    rest = tree_memory_kib(server.pid)
    outcome.memory["rest_kib"] = rest
    for key, modules, _ in IMPORT_FLOORS:
        try:
            outcome.memory[key] = import_rss_kib(sys.executable, modules)
        except (OSError, RuntimeError) as problem:
            bench.log(f"  RSS of imports {', '.join(modules) or '(none)'} not measured: {problem}")
    with clients.IdleConnections(server.port, settings.idle_connections) as idle:
        time.sleep(1.0)
        outcome.memory["idle_kib"] = tree_memory_kib(server.pid)
        outcome.memory["idle_count"] = settings.idle_connections
        outcome.memory["idle_failed"] = idle.failed
        outcome.memory["idle_open_seconds"] = idle.seconds
        outcome.memory["idle_still_open"] = idle.still_open()
    # Closed: the server gives the memory of a burst back a few seconds
    # after connections end (gemfcgi.memorytrim).
    time.sleep(AFTER_CLOSE_SECONDS)
    outcome.memory["closed_kib"] = tree_memory_kib(server.pid)
    bench.log(f"  rest {rest / 1024:.1f} MiB, {settings.idle_connections} idle "
              f"{outcome.memory['idle_kib'] / 1024:.1f} MiB ({idle.failed} failed, "
              f"{outcome.memory['idle_still_open']:.0f} still open, opened in {idle.seconds:.1f} s), "
              f"{AFTER_CLOSE_SECONDS:g} s after they closed {outcome.memory['closed_kib'] / 1024:.1f} MiB")
    slow_read(bench, server, "/huge.bin", "slow_static")
    bench.processes.stop(server.process)
    if fastcgi_server is not None and FCGIWRAP.key not in outcome.unavailable:
        slow_read(bench, fastcgi_server, "/cgi/huge.sh", "slow_fastcgi")
    else:
        outcome.unavailable["6-fastcgi"] = "FastCGI (fcgiwrap) not available"


def slow_read(bench: Bench, server: RunningServer, path: str, key: str) -> None:
    """RSS growth of the server tree while one client reads ``path`` slowly."""
    settings, outcome = bench.settings, bench.outcome
    baseline = tree_memory_kib(server.pid)
    peak_reset = reset_peak_memory(server.pid)
    reader = clients.SlowReader(server.port, path, settings.slow_rate, settings.slow_seconds)
    reader.start()
    highest = baseline
    while reader.is_alive():
        highest = max(highest, tree_memory_kib(server.pid))
        reader.join(0.25)
    if peak_reset:
        highest = max(highest, tree_memory_kib(server.pid, "VmHWM"))
    outcome.memory[f"{key}_kib"] = highest - baseline
    outcome.memory[f"{key}_baseline_kib"] = baseline
    outcome.memory[f"{key}_received"] = reader.received
    if reader.error or not reader.header.startswith("2"):
        outcome.notes.append(f"slow reader on {path}: header {reader.header!r}, error {reader.error}")
    bench.log(f"  slow reader {path}: read {reader.received / 2**20:.1f} MiB, "
              f"growth {(highest - baseline) / 1024:.1f} MiB")


def last_error(log: Path) -> str:
    """The last exception line of a server log, as "; server log: ...", or ""."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.strip() for line in lines if re.match(r"\s*[\w.]+(Error|Exception): ", line)]
    return f"; server log: {errors[-1]}" if errors else ""


def raise_open_file_limit() -> None:
    """1,000 idle connections need more descriptors than a default soft limit of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
