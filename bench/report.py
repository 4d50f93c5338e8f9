"""
From measurements to RESULTS.md: medians, ratios, targets, warnings.

Every ratio is gemfcgi over a peer measured in the same run, never against
a figure from another day: the VM's speed drifts by tens of percent, the
ratio much less. A median whose runs had gembench at 90 % CPU or more is
marked as a lower bound: the client, not the server, may have been the limit.
"""

from __future__ import annotations

import json
import os
import platform
import ssl
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bench import BENCH_DIR
from bench.scenarios import (
    AFTER_CLOSE_SECONDS,
    DEMO_APP,
    FOREIGN_CPU_LIMIT,
    FASTCGI_SERVER,
    FCGIWRAP,
    GEMFCGI,
    IMPORT_FLOORS,
    PREFORK,
    STATIC_SCENARIOS,
    Measurement,
    Outcome,
)
from bench.servers import BARE_TWISTED

# A server under 16+ requests in flight that is busier than this is working, not waiting.
WAITING_CPU_PCT = 70
MB = 1_000_000  # memory targets are in MB (10^6 bytes); MiB are given beside them
PEERS = ["jetforce", "molly-brown", BARE_TWISTED]

# gembench's phases of a request, shown for the one-at-a-time scenario: at
# higher concurrency they would mostly measure the queue.
PHASE_SCENARIO = "3"
PHASE_ROWS = [("connect ms (mean)", "connect_ms"), ("handshake ms (mean)", "handshake_ms"),
              ("request+response ms (mean)", "response_ms")]
PHASE_METRICS = {metric for _, metric in PHASE_ROWS}


@dataclass(frozen=True)
class Median:
    """Medians over the rounds of one scenario on one server."""

    runs: list[Measurement]

    def of(self, metric: Callable[[Measurement], float]) -> float:
        return statistics.median(metric(run) for run in self.runs)

    @property
    def rps(self) -> float:
        return self.of(lambda m: m.result.rps)

    @property
    def mib_s(self) -> float:
        return self.of(lambda m: m.result.mib_s)

    @property
    def p50(self) -> float:
        return self.of(lambda m: m.result.p50_ms)

    @property
    def p99(self) -> float:
        return self.of(lambda m: m.result.p99_ms)

    @property
    def cpu_us(self) -> float:
        return self.of(lambda m: m.server_cpu_us)

    def _phase(self, name: str) -> Optional[float]:
        values = [getattr(run.result, name) for run in self.runs]
        return None if None in values else statistics.median(values)

    @property
    def connect_ms(self) -> Optional[float]:
        return self._phase("connect_ms")

    @property
    def handshake_ms(self) -> Optional[float]:
        return self._phase("handshake_ms")

    @property
    def response_ms(self) -> Optional[float]:
        return self._phase("response_ms")

    def _busy_pct(self, us_per_request: Callable[[Measurement], float]) -> float:
        """CPU per request times requests per second, in % of one core."""
        return self.of(lambda m: us_per_request(m) * m.result.finished / max(m.result.elapsed_s, 1e-3) / 1e4)

    @property
    def server_cpu_pct(self) -> float:
        """How busy the server tree was, in % of one core (it has one: CPU 0)."""
        return self._busy_pct(lambda m: m.server_cpu_us)

    @property
    def own_cpu_us(self) -> float:
        return self.of(lambda m: m.own_cpu_us)

    @property
    def core_cpu_us(self) -> float:
        return self.of(lambda m: m.core_cpu_us)

    @property
    def core_busy_pct(self) -> float:
        """How busy the server's CPU was, whatever ran there, in %."""
        return self._busy_pct(lambda m: m.core_cpu_us)

    @property
    def peak_mib(self) -> float:
        return self.of(lambda m: m.peak_rss_kib) / 1024

    @property
    def client_cpu(self) -> float:
        return self.of(lambda m: m.result.cpu_pct)

    @property
    def client_bound(self) -> bool:
        return any(run.result.client_bound for run in self.runs)

    @property
    def errors(self) -> int:
        return sum(run.result.err + run.result.non2x for run in self.runs)

    @property
    def all_resumed(self) -> bool:
        """With -r, the first ~C handshakes are full by design (TLS 1.3 tickets are used once)."""
        return all(run.result.resumed >= run.result.ok - run.result.c for run in self.runs)

    @property
    def resumed_pct(self) -> float:
        return 100 * sum(r.result.resumed for r in self.runs) / max(sum(r.result.ok for r in self.runs), 1)


def medians(outcome: Outcome) -> dict[tuple[str, str], Median]:
    grouped: dict[tuple[str, str], list[Measurement]] = {}
    for run in outcome.measurements:
        if run.round > 0:
            grouped.setdefault((run.scenario, run.server), []).append(run)
    return {key: Median(runs) for key, runs in grouped.items()}


@dataclass(frozen=True)
class Target:
    scenario: str
    wanted: str
    measured: str
    passed: Optional[bool]  # None: could not be measured
    # The client was the limit of the measured rate above the line (ours):
    # the true ratio is at least the one measured.
    lower_bound: bool = False
    # ... of the rate below the line (the peer's, or scenario 1's for 5):
    # the true ratio is at most the one measured.
    upper_bound: bool = False

    @property
    def mark(self) -> str:
        if self.passed is None:
            return "n/a"
        if self.lower_bound and self.upper_bound:
            return "not decided (both client-bound)"
        if self.lower_bound:
            # It can pass but never fail (the rule).
            return "PASS (lower bound)" if self.passed else "not decided (client-bound)"
        if self.upper_bound:
            # It can fail but never pass.
            return "not decided (the other client-bound)" if self.passed else "FAIL (upper bound)"
        return "PASS" if self.passed else "FAIL"


def _ratio(table, scenario: str, peer: str, metric: str) -> Optional[float]:
    ours, theirs = table.get((scenario, GEMFCGI)), table.get((scenario, peer))
    if ours is None or theirs is None or getattr(ours, metric) is None or not getattr(theirs, metric):
        return None
    return getattr(ours, metric) / getattr(theirs, metric)


def round_ratios(outcome: Outcome, scenario: str, peer: str,
                 ratio: Callable[[Measurement, Measurement], float]) -> list[float]:
    """
    ``ratio(ours, theirs)`` of each round, lowest first: within a round the
    servers run back to back, so a round's ratio is little moved by the
    machine's drift, which the medians of a run can still show.
    """
    return paired_round_ratios(outcome, (scenario, GEMFCGI), (scenario, peer), ratio)


def paired_round_ratios(outcome: Outcome, ours: tuple[str, str], theirs: tuple[str, str],
                        ratio: Callable[[Measurement, Measurement], float]) -> list[float]:
    """``ratio`` of the runs ``(scenario, server)`` ``ours`` and ``theirs`` in each round."""
    mine: dict[int, Measurement] = {}
    other: dict[int, Measurement] = {}
    for run in outcome.measurements:
        if run.round > 0:
            if (run.scenario, run.server) == ours:
                mine[run.round] = run
            elif (run.scenario, run.server) == theirs:
                other[run.round] = run
    found = []
    for number in mine.keys() & other.keys():
        try:
            found.append(ratio(mine[number], other[number]))
        except ZeroDivisionError:
            continue  # a round that served nothing has no ratio
    return sorted(found)


def _spread(ratios: list[float]) -> str:
    """`` (rounds 1.49-1.95x)``, or nothing for fewer than two rounds."""
    if len(ratios) < 2:
        return ""
    return f" (rounds {ratios[0]:.2f}-{ratios[-1]:.2f}x)"


def targets(outcome: Outcome) -> list[Target]:
    """The project issue's targets, each with what was measured."""
    table = medians(outcome)
    ours = {key: table.get((key, GEMFCGI)) for key in ("1", "2", "3", "4")}
    found: list[Target] = []

    def ratio_target(key: str, peer: str, metric: str, wanted: float, unit: str) -> None:
        ratio = _ratio(table, key, peer, metric)
        bound = bool(ours[key] and ours[key].client_bound)
        theirs = table.get((key, peer))
        their_bound = bool(theirs and theirs.client_bound)
        if ratio is None:
            found.append(Target(key, f">= {wanted}x {peer} {unit}", f"{peer} not measured", None))
        else:
            spread = _spread(round_ratios(
                outcome, key, peer, lambda o, t: getattr(o.result, metric) / getattr(t.result, metric)))
            found.append(Target(key, f">= {wanted}x {peer} {unit}", f"{ratio:.2f}x{spread}",
                                ratio >= wanted, bound, their_bound))

    def cpu_target(key: str, peer: str, wanted: float) -> None:
        """The same ratio on server CPU per request: the peer's figure over ours."""
        theirs = table.get((key, peer))
        label = f">= {wanted}x {peer}, server CPU per request ({peer}'s over ours)"
        if ours[key] is None or theirs is None or not ours[key].cpu_us:
            found.append(Target(key, label, f"{peer} not measured", None))
            return
        ratio = theirs.cpu_us / ours[key].cpu_us
        spread = _spread(round_ratios(outcome, key, peer, lambda o, t: t.server_cpu_us / o.server_cpu_us))
        found.append(Target(key, label,
                            f"{ratio:.2f}x ({theirs.cpu_us:.0f} / {ours[key].cpu_us:.0f} us){spread}",
                            ratio >= wanted))

    ratio_target("1", "jetforce", "rps", 1.3, "req/s")
    cpu_target("1", "jetforce", 1.3)
    if ours["1"]:
        found.append(Target("1", "<= 540 us server CPU per request", f"{ours['1'].cpu_us:.0f} us",
                            ours["1"].cpu_us <= 540))
    ratio_target("2", "jetforce", "rps", 1.8, "req/s")
    cpu_target("2", "jetforce", 1.8)
    if ours["2"]:
        found.append(Target("2", "100 % of handshakes resumed (after the first 32)",
                            f"{ours['2'].resumed_pct:.1f} % of all", ours["2"].all_resumed))
    molly = table.get(("3", "molly-brown"))
    if ours["3"] and molly:
        found.append(Target("3", "p50 latency <= molly-brown's",
                            f"{ours['3'].p50:.3f} ms vs {molly.p50:.3f} ms", ours["3"].p50 <= molly.p50))
    else:
        found.append(Target("3", "p50 latency <= molly-brown's", "molly-brown not measured", None))
    ratio_target("4", "jetforce", "mib_s", 2.0, "MiB/s")
    cpu_target("4", "jetforce", 2.0)

    demo = table.get((DEMO_APP.key, FASTCGI_SERVER))
    if demo and ours["1"]:
        # Scenario 1 opens each round and 5a closes it, minutes apart: the
        # spread shows how far the machine drifted in between.
        pair = ((DEMO_APP.key, FASTCGI_SERVER), ("1", GEMFCGI))
        ratio = demo.rps / ours["1"].rps
        spread = _spread(paired_round_ratios(outcome, *pair, lambda d, s: d.result.rps / s.result.rps))
        found.append(Target("5", ">= 0.85x gemfcgi's scenario 1 req/s (demo responder)",
                            f"{ratio:.2f}x{spread}", ratio >= 0.85, demo.client_bound,
                            ours["1"].client_bound))
        if demo.cpu_us:
            ratio = ours["1"].cpu_us / demo.cpu_us
            spread = _spread(paired_round_ratios(
                outcome, *pair, lambda d, s: s.server_cpu_us / d.server_cpu_us))
            found.append(Target("5", ">= 0.85x, server CPU per request (scenario 1's over the "
                                "demo responder's, its tree included)",
                                f"{ratio:.2f}x ({ours['1'].cpu_us:.0f} / {demo.cpu_us:.0f} us){spread}",
                                ratio >= 0.85))
    else:
        found.append(Target("5", ">= 0.85x gemfcgi's scenario 1 req/s (demo responder)",
                            outcome.unavailable.get(DEMO_APP.key, "not measured"), None))

    memory = outcome.memory
    count = int(memory.get("idle_count", 1000))
    for key, wanted, limit in [
        ("rest_kib", "<= 40 MB RSS at rest", 40),
        ("idle_kib", f"<= 100 MB RSS with {count} idle TLS connections", 100),
        ("slow_static_kib", "<= 32 MB growth, 1 GiB static reply read at 1 MiB/s", 32),
        ("slow_fastcgi_kib", "<= 32 MB growth, same through FastCGI (fcgiwrap + cat)", 32),
    ]:
        if key in memory:
            value = memory[key] * 1024 / MB
            measured = f"{value:.1f} MB"
            if key == "rest_kib" and "floor_reactor_kib" in memory:
                measured += (f" (a Python that only imports Twisted's reactor: "
                             f"{memory['floor_reactor_kib'] * 1024 / MB:.1f} MB)")
            found.append(Target("6", wanted, measured, value <= limit))
        else:
            why = outcome.unavailable.get("6-fastcgi" if "fastcgi" in key else "6", "not measured")
            found.append(Target("6", wanted, why, None))
    return found


def _fmt(value: Optional[float], digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def _versions(tool_versions: dict[str, str]) -> str:
    from gemfcgi._version import __version__

    parts = [f"gemfcgi {__version__}"]
    parts += [f"{name} {version}" for name, version in tool_versions.items()]
    from OpenSSL import SSL

    import twisted

    pyopenssl = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    parts += [
        f"Twisted {twisted.__version__} (gemfcgi's and {BARE_TWISTED}'s)",
        f"Python {platform.python_version()}",
        f"{pyopenssl} (pyOpenSSL's, used by gemfcgi and jetforce)",
        f"{ssl.OPENSSL_VERSION} (the system's, used by gembench)",
        f"Linux {platform.release()}",
    ]
    return ", ".join(parts)


def commit_description() -> str:
    """The commit measured, and whether the work tree differed from it (read-only git)."""
    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "--no-optional-locks", "-C", str(BENCH_DIR), *args],
                                  capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    changed = [line for line in git("status", "--porcelain").splitlines()
               if not line[3:].startswith("bench/")]
    return commit + (" plus uncommitted changes" if changed else "")


def markdown(outcome: Outcome, tool_versions: dict[str, str], client_note: str) -> str:
    """RESULTS.md."""
    settings = outcome.settings
    table = medians(outcome)
    servers = outcome.servers
    peers = [p for p in PEERS if p in servers]
    minutes = (outcome.finished - outcome.started) / 60
    out: list[str] = ["# gemfcgi benchmark results", ""]
    if settings.quick:
        out += ["**Smoke run (`--quick`): tiny durations and files; these figures mean nothing.**", ""]
    out += [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(outcome.started))}, {minutes:.1f} min, "
        f"{settings.rounds} round(s) of `-d {settings.duration:g}` per scenario and server, "
        f"servers interleaved ({' '.join(servers)} in turn). Medians over the rounds.",
        "",
        f"- Code: commit {outcome.commit}; the servers ran a copy of gemfcgi taken at the start, "
        "so every server of the run ran the same code.",
        f"- Machine: {os.cpu_count()} CPUs; every server on CPU 0 (`taskset -c 0`), gembench on "
        f"CPU 1. {client_note}",
        f"- Versions: {_versions({k: v for k, v in tool_versions.items() if k in servers})}.",
        "- Same ECDSA P-256 certificate and same files for all servers; gembench always with `-b` "
        "(exact body size), `-H 127.0.0.1:PORT` and a `gemini://localhost:PORT/` URL (SNI sent).",
        "- Server CPU per request: utime+stime+cutime+cstime from /proc/PID/stat, summed over the "
        "server's whole process tree, after minus before the run, divided by the requests gembench "
        "finished. Peak RSS: VmHWM summed over the process tree (reset through "
        "/proc/PID/clear_refs before each run).",
        "- Other processes' CPU: user+system time of the whole machine (/proc/stat) during the run, minus "
        "the server tree's and gembench's own CPU, in % of one core. This is a shared VM; runs "
        f"above {FOREIGN_CPU_LIMIT:g} % are repeated once and listed under *Warnings*.",
    ]
    for name, why in outcome.unavailable.items():
        if name in PEERS:
            out.append(f"- **{name} missing**: {why}.")
    out += ["", "## Targets", "", "| scenario | target | measured | result |", "| --- | --- | --- | --- |"]
    for target in targets(outcome):
        out.append(f"| {target.scenario} | {target.wanted} | {target.measured} | {target.mark} |")
    out += ["", "A ratio target holds on server CPU per request and, where gembench stayed below 90 % of "
            "its core, on the rate too. Where gemfcgi's rounds were limited by the client, its rate "
            "is a lower bound: it can pass (*PASS (lower bound)*) but not fail (*not decided*); "
            "where the other side's were (the peer's, or for scenario 5 gemfcgi's scenario 1), the "
            "ratio is an upper bound: it can fail (*FAIL (upper bound)*) but not pass; where both "
            "were, it decides nothing. "
            "*rounds*: the lowest and highest ratio of one round's runs (the servers run back to back "
            "in each round; for scenario 5, gemfcgi's scenario 1 run, which opens the round, against "
            "its 5a run, which closes it), for how far the machine's drift moves a result; the target "
            "is decided on the medians."]

    out += ["", "## Throughput and latency (medians)", ""]
    header = ["scenario", "metric", *servers, *(f"gemfcgi/{p}" for p in peers)]
    out += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    rows = [
        ("req/s", "rps", 1, True), ("MiB/s", "mib_s", 2, True), ("p50 ms", "p50", 3, False),
        ("p99 ms", "p99", 3, False),
        *((label, metric, 3, False) for label, metric in PHASE_ROWS),
        ("server CPU us/req", "cpu_us", 0, False),
        ("server CPU % of its core", "server_cpu_pct", 0, None),
        ("peak RSS MiB (tree)", "peak_mib", 1, False), ("gembench CPU %", "client_cpu", 0, None),
    ]
    for scenario in STATIC_SCENARIOS:
        for label, metric, digits, ratio_wanted in rows:
            if scenario.key == "4" and metric == "rps" or scenario.key != "4" and metric == "mib_s":
                continue
            if metric in PHASE_METRICS and scenario.key != PHASE_SCENARIO:
                continue
            cells = []
            for server in servers:
                median = table.get((scenario.key, server))
                value = getattr(median, metric) if median else None
                bound = "+" if median and metric in ("rps", "mib_s") and median.client_bound else ""
                cells.append(_fmt(value, digits) + bound)
            ratios = [_fmt(_ratio(table, scenario.key, peer, metric), 2, "x") if ratio_wanted is not None
                      else "" for peer in peers]
            title = f"{scenario.key}. {scenario.title}" if label == "req/s" or metric == "mib_s" else ""
            out.append(f"| {title} | {label} | " + " | ".join(cells + ratios) + " |")
    out += ["", "`+`: gembench used 90 % or more of its core in at least one round: the figure is a "
            "lower bound (the client may have been the limit). Ratios below 1 for latency, CPU and "
            "memory mean gemfcgi needs less.",
            "", f"*Phases* (scenario {PHASE_SCENARIO} only, where nothing waits in a queue): gembench's "
            "means of a request's parts, medians over the rounds. *connect*: the TCP connect. "
            "*handshake*: from there to the client's handshake done, i.e. the server's first flight "
            "(key exchange, certificate, signature) and the client's work on it. "
            "*request+response*: from the client's Finished and request to the end of the response: "
            "the server's end of the handshake and its session tickets, the reply, close_notify, and "
            "the client reading them."]
    if BARE_TWISTED in servers:
        out += ["", f"*{BARE_TWISTED}* is not a Gemini server but the floor under one on Twisted "
                "(`bench/bare_twisted.py`): Twisted's own TLS over a TCP port, session tickets on, and "
                "a protocol that answers the first line it reads with a file held in memory. It checks "
                "nothing and logs nothing; what it costs is what Twisted and OpenSSL cost per "
                "connection before a server does any work of its own. Its RSS includes the files "
                "it holds (the 10 MiB one too)."]

    out += ["", "## FastCGI (gemfcgi only)", "",
            "| responder | req/s | p50 ms | p99 ms | server CPU us/req (tree) | of which gemfcgi's "
            "process | CPU 0 busy us/req | ratio to gemfcgi scenario 1 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = table.get(("1", GEMFCGI))
    for scenario in (DEMO_APP, FCGIWRAP):
        median = table.get((scenario.key, FASTCGI_SERVER))
        if median is None:
            out.append(f"| {scenario.key}. {scenario.title} | "
                       f"{outcome.unavailable.get(scenario.key, 'not measured')} | | | | | | |")
            continue
        ratio = _fmt(median.rps / base.rps, 2, "x") if base else "-"
        out.append(f"| {scenario.key}. {scenario.title} | {median.rps:,.1f}{'+' if median.client_bound else ''}"
                   f" | {median.p50:.3f} | {median.p99:.3f} | {median.cpu_us:,.0f} | {median.own_cpu_us:,.0f}"
                   f" | {median.core_cpu_us:,.0f}"
                   f" | {ratio} |")
    out += ["", "*of which gemfcgi's process*: gemfcgi's own process alone, the relay's share; the "
            "rest of the tree is the application's. For comparison, gemfcgi serving scenario 1 "
            f"(static, one process): {_fmt(base.own_cpu_us if base else None, 0)} us.",
            "", "CPU 0 busy: the busy time of the servers' CPU per request, whatever ran there. It "
            "includes what the tree misses: fcgiwrap ignores SIGCHLD, so the CPU time of the "
            "scripts it runs is added to no parent's."]

    memory = outcome.memory
    out += ["", "## Memory (scenario 6, a fresh gemfcgi with `--request-timeout 60`)", ""]
    if "rest_kib" in memory:
        count = int(memory["idle_count"])
        out += [
            "RSS is VmRSS summed over the server's process tree (for FastCGI: gemfcgi, fcgiwrap "
            "and its workers, `cat`).", "",
            "| measurement | MiB | MB |", "| --- | --- | --- |",
            _mem_row("at rest (after one request)", memory["rest_kib"]),
            *(_mem_row(f"for scale: a Python {platform.python_version()} {what}", memory[key])
              for key, _, what in IMPORT_FLOORS if key in memory),
            _mem_row(f"with {count} idle TLS connections ({memory['idle_failed']:.0f} failed to open, "
                     f"{memory['idle_still_open']:.0f} still open when measured, opened in "
                     f"{memory['idle_open_seconds']:.1f} s)", memory["idle_kib"]),
        ]
        if "closed_kib" in memory:
            out.append(_mem_row(f"{AFTER_CLOSE_SECONDS:g} s after those connections closed (the memory "
                                "of a burst is given back a few seconds after it)", memory["closed_kib"]))
        for key, label in [("slow_static", "static"), ("slow_fastcgi", "FastCGI (fcgiwrap + cat)")]:
            if f"{key}_kib" in memory:
                out.append(_mem_row(
                    f"growth while one client reads a {settings.huge_size / 2**30:g} GiB {label} reply at "
                    f"{settings.slow_rate / 2**20:g} MiB/s for {settings.slow_seconds:g} s "
                    f"(read {memory[f'{key}_received'] / 2**20:.1f} MiB)", memory[f"{key}_kib"]))
    else:
        out.append(outcome.unavailable.get("6", "not measured"))
    if outcome.rest_rss_kib:
        out += ["", "For comparison, RSS of each server at rest before the throughput rounds: " + ", ".join(
            f"{name} {kib / 1024:.1f} MiB" for name, kib in outcome.rest_rss_kib.items()) + "."]

    out += ["", "## Prefork (scenario 7)", ""]
    if PREFORK.key in outcome.unavailable:
        out.append(f"Prefork: {outcome.unavailable[PREFORK.key]}.")
    else:
        out += [f"With `prefork 2` the server's tree has {outcome.prefork_processes} processes. Every "
                "process is pinned to CPU 0 like all servers here, so this shows what prefork costs "
                "on one core, not how it scales over cores.", ""]
        base = table.get((PREFORK.key, "gemfcgi prefork 1"))
        for server in ("gemfcgi prefork 1", "gemfcgi prefork 2"):
            median = table.get((PREFORK.key, server))
            if median:
                ratio = f", {median.rps / base.rps:.2f}x prefork 1" if base else ""
                out.append(f"- {server}: {median.rps:,.1f} req/s{ratio}, {median.cpu_us:,.0f} us/req "
                           f"server CPU, peak RSS {median.peak_mib:.1f} MiB (tree)")

    warnings = [f"{m.scenario}/{m.server} round {m.round}: gembench at {m.result.cpu_pct:.0f} % CPU"
                for m in outcome.measurements if m.round > 0 and m.result.client_bound]
    busy = [f"{m.scenario}/{m.server} round {m.round}: {m.foreign_cpu_pct:.0f} % of a core"
            for m in outcome.measurements if m.round > 0 and m.foreign_cpu_pct > FOREIGN_CPU_LIMIT]
    idle = [f"{scenario}/{server}: server at {median.server_cpu_pct:.0f} % of its core (CPU 0 busy "
            f"{median.core_busy_pct:.0f} %), gembench at "
            f"{median.client_cpu:.0f} %, p50 {median.p50:.1f} ms"
            for (scenario, server), median in table.items()
            if median.runs[0].result.c >= 16
            and max(median.server_cpu_pct, median.core_busy_pct) < WAITING_CPU_PCT
            and not median.client_bound]
    failures = [f"{m.scenario}/{m.server} round {m.round}: {m.result.err} errors, {m.result.non2x} non-2x"
                for m in outcome.measurements if m.result.err or m.result.non2x]
    out += ["", "## Warnings", ""]
    out += [f"- client-bound (lower bound): {w}" for w in warnings]
    if outcome.repeated:
        out.append(f"- {outcome.repeated} run(s) were done a second time because other processes took more "
                   f"than {FOREIGN_CPU_LIMIT:g} % of a core meanwhile; the quieter attempt is kept.")
    out += [f"- other processes busy during the run (figure less reliable): {b}" for b in busy]
    if idle:
        out.append("- requests were waiting, not being worked on: neither the server nor gembench was "
                   "busy (a timer, or Nagle's algorithm meeting a delayed ACK costs about 40 ms a request):")
        out += [f"  - {i}" for i in idle]
    out += [f"- failed requests: {f}" for f in failures]
    out += [f"- {note}" for note in outcome.notes]
    if not (warnings or busy or idle or failures or outcome.notes or outcome.repeated):
        out.append("None.")

    out += ["", "## All runs", "",
            "| round | scenario | server | req/s | MiB/s | p50 ms | p99 ms | ok | err | resumed | "
            "gembench CPU % | server CPU us/req | peak RSS MiB | other processes CPU % |",
            "|" + " --- |" * 14]
    for m in outcome.measurements:
        r = m.result
        out.append(f"| {m.round or 'warm-up'} | {m.scenario} | {m.server} | {r.rps:.1f} | {r.mib_s:.2f} | "
                   f"{r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.ok} | {r.err + r.non2x} | {r.resumed} | "
                   f"{r.cpu_pct:.0f} | {m.server_cpu_us:.0f} | {m.peak_rss_kib / 1024:.1f} | "
                   f"{m.foreign_cpu_pct:.0f} |")
    return "\n".join(out) + "\n"


def _mem_row(label: str, kib: float) -> str:
    return f"| {label} | {kib / 1024:.1f} | {kib * 1024 / MB:.1f} |"


def plot_data(outcome: Outcome) -> list[dict]:
    """The ratios results.png shows: one group per figure, one bar per peer."""
    table = medians(outcome)
    groups = []
    for key, metric, label, target, higher in [
        ("1", "rps", "1. req/s, new handshakes", 1.3, True),
        ("2", "rps", "2. req/s, resumed", 1.8, True),
        ("3", "rps", "3. req/s, 1 concurrent", None, True),
        ("3", "p50", "3. p50 latency", 1.0, False),
        ("4", "mib_s", "4. MiB/s, 10 MiB file", 2.0, True),
        ("1", "cpu_us", "1. server CPU/req", None, False),
    ]:
        ratios = {peer: _ratio(table, key, peer, metric) for peer in PEERS}
        ratios = {peer: value for peer, value in ratios.items() if value is not None}
        target_peer = "molly-brown" if key == "3" and metric == "p50" else "jetforce"
        groups.append({"label": label, "ratios": ratios, "target": target,
                       "target_peer": target_peer, "higher_is_better": higher})
    demo, base = table.get((DEMO_APP.key, FASTCGI_SERVER)), table.get(("1", GEMFCGI))
    if demo and base:
        groups.append({"label": "5. FastCGI demo / own static", "ratios": {"gemfcgi": demo.rps / base.rps},
                       "target": 0.85, "target_peer": "gemfcgi", "higher_is_better": True})
    return groups


def write(outcome: Outcome, out_dir: Path, work: Path, tool_versions: dict[str, str],
          plot_python: Optional[str], client_note: str, log) -> Path:
    """RESULTS.md (and results.png when matplotlib is at hand); returns the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "RESULTS.md"
    text = markdown(outcome, tool_versions, client_note)
    data = work / "plot.json"
    data.write_text(json.dumps({"groups": plot_data(outcome), "quick": outcome.settings.quick}))
    png = out_dir / "results.png"
    if plot_python:
        done = subprocess.run([plot_python, str(BENCH_DIR / "plot.py"), str(data), str(png)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log(f"plot failed: {done.stderr.strip()[-500:]}")
            text += "\nPlot: failed (see the benchmark's output).\n"
        else:
            text += "\n![gemfcgi / peer ratios](results.png)\n"
    else:
        text += "\nPlot: skipped, matplotlib not installed.\n"
    report.write_text(text)
    return report
