"""
The benchmark's smoke mode, so that ``bench/run`` cannot rot between full runs.

``bench/run --quick`` builds gembench from the shared tools folder beside the
checkout, starts gemfcgi and runs every scenario for about a second. It needs
build-essential and libssl-dev (to build gembench) and taskset (util-linux).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Optional

import pytest

from bench.prepare import gembench_source
from tests.support import PROJECT_ROOT

GEMFCGI_REQUESTS = re.compile(r"^\| 1\. [^|]+ \| req/s \| ([\d,.]+)\+? \|", re.MULTILINE)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    if not (gembench_source(None) / "gembench.c").exists():
        pytest.skip(f"gembench source not found at {gembench_source(None)} (set GEMBENCH_SRC)")
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "run"), "--quick",
         "--out", str(out), "--work", str(out / "work")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return (out / "RESULTS.md").read_text()


def test_quick_run_writes_a_report_with_a_gemfcgi_rate(quick_report):
    assert "| scenario | metric | gemfcgi |" in quick_report
    match = GEMFCGI_REQUESTS.search(quick_report)
    assert match, quick_report
    assert float(match.group(1).replace(",", "")) > 0


def test_quick_run_measures_the_bare_twisted_floor_beside_gemfcgi(quick_report):
    # Its column follows gemfcgi's (and jetforce's, when its venv exists).
    header = re.search(r"^\| scenario \| metric \| (.*) \|$", quick_report, re.MULTILINE)
    assert header, quick_report
    columns = header.group(1).split(" | ")
    assert "bare Twisted" in columns and "gemfcgi/bare Twisted" in columns
    row = re.search(r"^\| 1\. [^|]+ \| req/s \| (.*) \|$", quick_report, re.MULTILINE)
    rate = row.group(1).split(" | ")[columns.index("bare Twisted")]
    assert float(rate.rstrip("+").replace(",", "")) > 0


def test_quick_run_reports_every_scenario(quick_report):
    for heading in ("## Targets", "## FastCGI", "## Memory", "## Prefork", "## All runs"):
        assert heading in quick_report
    assert " s after those connections closed " in quick_report
    assert "Smoke run" in quick_report


def test_a_client_bound_rate_can_pass_but_never_fail():
    from bench.report import Target

    assert Target("1", ">= 1.3x", "1.27x", False, lower_bound=True).mark == "not decided (client-bound)"
    assert Target("1", ">= 1.3x", "1.35x", True, lower_bound=True).mark == "PASS (lower bound)"
    assert Target("1", ">= 1.3x", "1.27x", False).mark == "FAIL"
    assert Target("1", ">= 1.3x", "not measured", None).mark == "n/a"


def test_a_rate_ratio_over_a_client_bound_rate_can_fail_but_never_pass():
    # Over a peer's (or scenario 1's) client-bound rate the ratio is at most
    # what was measured: it was marked PASS, or PASS (lower bound) when
    # both sides were client-bound.
    from bench.report import Target

    assert Target("5", ">= 0.85x", "0.90x", True, upper_bound=True).mark == "not decided (the other client-bound)"
    assert Target("5", ">= 0.85x", "0.73x", False, upper_bound=True).mark == "FAIL (upper bound)"
    assert Target("1", ">= 1.3x", "1.35x", True, lower_bound=True, upper_bound=True).mark == \
        "not decided (both client-bound)"


def test_ratio_targets_show_the_spread_of_the_rounds_and_are_decided_on_the_medians():
    from bench.gembench import Result
    from bench.report import targets
    from bench.scenarios import Measurement, Outcome, Settings

    def run(server: str, number: int, rps: float, cpu_us: float) -> Measurement:
        result = Result(rps, 1.0, 10.0, 12.0, 20.0, 30.0, 11.0, int(rps * 10), 0, 0,
                        int(rps * 10), 0, 70.0, 10.0, 32)
        return Measurement("2", server, number, result, cpu_us, 50_000, 0.0)

    outcome = Outcome(Settings.full())
    # Round by round (jetforce's CPU over ours): 1.49x, 1.95x, 1.86x; medians 789 / 432 = 1.83x.
    for number, ours, theirs in [(1, 432, 642), (2, 474, 923), (3, 425, 789)]:
        outcome.measurements += [run("gemfcgi", number, 2000, ours), run("jetforce", number, 1000, theirs)]
    # The warm-ups (round 0) count for nothing.
    outcome.measurements += [run("gemfcgi", 0, 1, 9999), run("jetforce", 0, 1, 1)]
    by_wanted = {t.wanted: t for t in targets(outcome) if t.scenario == "2"}
    cpu = by_wanted[">= 1.8x jetforce, server CPU per request (jetforce's over ours)"]
    assert cpu.measured == "1.83x (789 / 432 us) (rounds 1.49-1.95x)"
    assert cpu.mark == "PASS"
    rate = by_wanted[">= 1.8x jetforce req/s"]
    assert rate.measured == "2.00x (rounds 2.00-2.00x)"


def test_a_round_that_served_nothing_is_left_out_of_the_spread():
    from bench.gembench import Result
    from bench.report import round_ratios
    from bench.scenarios import Measurement, Outcome, Settings

    def run(server: str, number: int, rps: float) -> Measurement:
        result = Result(rps, 1.0, 10.0, 12.0, 20.0, 30.0, 11.0, int(rps * 10), 0, 0, 0, 0, 70.0, 10.0, 32)
        return Measurement("1", server, number, result, 500.0, 50_000, 0.0)

    outcome = Outcome(Settings.full())
    outcome.measurements += [run("gemfcgi", 1, 1500), run("jetforce", 1, 1000),
                             run("gemfcgi", 2, 1400), run("jetforce", 2, 0),
                             run("gemfcgi", 3, 1300)]  # jetforce's third round is missing
    assert round_ratios(outcome, "1", "jetforce", lambda o, t: o.result.rps / t.result.rps) == [1.5]


def test_the_fastcgi_target_shows_how_its_rounds_drifted():
    from bench.gembench import Result
    from bench.report import targets
    from bench.scenarios import FASTCGI_SERVER, Measurement, Outcome, Settings

    def run(scenario: str, server: str, number: int, rps: float, cpu_us: float) -> Measurement:
        result = Result(rps, 1.0, 10.0, 12.0, 20.0, 30.0, 11.0, int(rps * 10), 0, 0, 0, 0, 70.0, 10.0, 16)
        return Measurement(scenario, server, number, result, cpu_us, 50_000, 0.0)

    outcome = Outcome(Settings.full())
    # A machine slower in rounds 1 and 2: each round's FastCGI run is at
    # 0.70x, 0.89x and 0.71x of its own scenario 1 run, but the medians
    # (640 from round 1, 737 from round 2) make 0.87x.
    for number, static, fastcgi in [(1, 640, 920), (2, 654, 737), (3, 489, 684)]:
        outcome.measurements += [run("1", "gemfcgi", number, 1_000_000 / static, static),
                                 run("5a", FASTCGI_SERVER, number, 1_000_000 / fastcgi, fastcgi)]
    by_wanted = {t.wanted: t for t in targets(outcome) if t.scenario == "5"}
    cpu = by_wanted[">= 0.85x, server CPU per request (scenario 1's over the demo responder's, "
                    "its tree included)"]
    assert cpu.measured == "0.87x (640 / 737 us) (rounds 0.70-0.89x)"
    rate = by_wanted[">= 0.85x gemfcgi's scenario 1 req/s (demo responder)"]
    assert rate.measured == "0.87x (rounds 0.70-0.89x)"
    assert rate.mark == "PASS"
    # Scenario 1's rate bound by the client: 0.87x is at most the truth.
    for measurement in outcome.measurements:
        if measurement.scenario == "1":
            object.__setattr__(measurement.result, "cpu_pct", 95.0)
    rate = next(t for t in targets(outcome) if t.wanted == ">= 0.85x gemfcgi's scenario 1 req/s (demo responder)")
    assert rate.mark == "not decided (the other client-bound)"


def test_the_rss_at_rest_is_shown_beside_what_the_imports_alone_hold():
    from bench.report import markdown, targets
    from bench.scenarios import Outcome, Settings

    outcome = Outcome(Settings.full())
    outcome.memory.update(rest_kib=52_441, floor_python_kib=13_285, floor_pyopenssl_kib=32_031,
                          floor_reactor_kib=43_262, idle_kib=77_637, idle_count=1000,
                          idle_failed=0, idle_still_open=1000, idle_open_seconds=1.4, closed_kib=55_000)
    rest = next(t for t in targets(outcome) if t.wanted == "<= 40 MB RSS at rest")
    assert rest.measured == "53.7 MB (a Python that only imports Twisted's reactor: 44.3 MB)"
    assert rest.mark == "FAIL"
    report = markdown(outcome, {}, "")
    assert re.search(r"^\| for scale: a Python [\d.]+ that only imports Twisted's reactor "
                     r"\(`twisted.internet.reactor`, which imports pyOpenSSL\) \| 42\.2 \| 44\.3 \|$",
                     report, re.MULTILINE), report
    assert "only imports pyOpenSSL (`OpenSSL.SSL`) | 31.3 | 32.8 |" in report
    assert re.search(r"^\| [\d.]+ s after those connections closed [^|]+ \| 53\.7 \| 56\.3 \|$",
                     report, re.MULTILINE), report


def test_a_python_that_only_imports_gets_its_rss_measured():
    from bench.processes import import_rss_kib

    bare = import_rss_kib(sys.executable, [])
    with_reactor = import_rss_kib(sys.executable, ["twisted.internet.reactor"])
    assert 0 < bare < with_reactor
    with pytest.raises(RuntimeError, match="No module named 'no_such_module_here'"):
        import_rss_kib(sys.executable, ["no_such_module_here"])


def test_own_cpu_counts_a_live_process_and_nothing_for_one_that_is_gone():
    from bench.processes import own_cpu_seconds

    script = "import time, twisted.internet.reactor; print('ready', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        # Its start-up and imports, some tenths of a second; not the 30 s it sleeps.
        assert 0.0 < own_cpu_seconds(child.pid) < 10.0
    finally:
        child.kill()
        child.wait()
    assert own_cpu_seconds(child.pid) == 0.0


@pytest.mark.parametrize("behaviour, message", [
    ("exec sleep 30", "was not ready within 0.5 s"),
    ("echo ready; exec sleep 30 < /dev/null", "did not end within 0.5 s"),
])
def test_an_import_floor_that_hangs_is_killed_and_named(tmp_path, behaviour, message):
    from bench.processes import import_rss_kib

    # A "python" that hangs before it is ready, or after (ignoring its stdin's end).
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\n{behaviour}\n")
    python.chmod(0o755)
    with pytest.raises(RuntimeError, match=message):
        import_rss_kib(str(python), ["twisted"], timeout=0.5)


def test_the_fastcgi_table_shows_the_relays_share_of_the_tree():
    from bench.gembench import Result
    from bench.report import markdown
    from bench.scenarios import FASTCGI_SERVER, Measurement, Outcome, Settings

    def run(scenario: str, server: str, tree_us: float, own_us: float) -> Measurement:
        result = Result(1000.0, 1.0, 10.0, 12.0, 20.0, 30.0, 11.0, 10_000, 0, 0, 0, 0, 70.0, 10.0, 16)
        return Measurement(scenario, server, 1, result, tree_us, 50_000, 0.0, tree_us, own_us)

    outcome = Outcome(Settings.full())
    outcome.servers = ["gemfcgi"]
    outcome.measurements += [run("1", "gemfcgi", 573, 573), run("5a", FASTCGI_SERVER, 833, 741)]
    report = markdown(outcome, {}, "")
    assert re.search(r"^\| 5a\. [^|]+ \| 1,000\.0 \| 10\.000 \| 20\.000 \| 833 \| 741 \| 833 \| 1\.00x \|$",
                     report, re.MULTILINE), report
    assert "gemfcgi serving scenario 1 (static, one process): 573 us." in report


GEMBENCH_OUTPUT = """gembench: 120 requests, 1 concurrent
  latency ms   min 0.801  p50 1.034  p90 1.201  p99 1.585  max 2.011  mean 1.052
  phases ms    connect 0.045  handshake 0.850  request+response 0.244  (means)
  client cpu   57% of one core, 650.0 us/request
RESULT rps=879.3 mib_s=0.840 p50_ms=1.034 p90_ms=1.201 p99_ms=1.585 max_ms=2.011 mean_ms=1.052 \
ok=120 err=0 non2x=0 resumed=0 unclean=0 cpu_pct=57 elapsed_s=10.001 c=1
"""


def test_gembench_phases_are_read_beside_its_result_line():
    from bench.gembench import parse_result

    result = parse_result(GEMBENCH_OUTPUT)
    assert (result.p50_ms, result.ok, result.c) == (1.034, 120, 1)
    assert (result.connect_ms, result.handshake_ms, result.response_ms) == (0.045, 0.850, 0.244)
    # Without a successful request gembench prints no phases.
    quiet = parse_result(GEMBENCH_OUTPUT.replace("  phases ms", "  other"))
    assert (quiet.rps, quiet.response_ms) == (879.3, None)


def test_the_latency_scenario_shows_where_a_requests_time_goes():
    from bench.gembench import Result
    from bench.report import markdown
    from bench.scenarios import Measurement, Outcome, Settings

    def run(scenario: str, server: str, response_ms: Optional[float]) -> Measurement:
        result = Result(900.0, 1.0, 1.0, 1.2, 1.5, 2.0, 1.1, 9_000, 0, 0, 0, 0, 57.0, 10.0, 1,
                        connect_ms=0.05, handshake_ms=0.85, response_ms=response_ms)
        return Measurement(scenario, server, 1, result, 650.0, 50_000, 0.0)

    outcome = Outcome(Settings.full())
    outcome.servers = ["gemfcgi", "molly-brown"]
    outcome.measurements += [run("3", "gemfcgi", 0.25), run("3", "molly-brown", 0.125),
                             run("1", "gemfcgi", 0.5), run("1", "molly-brown", 0.4)]
    report = markdown(outcome, {}, "")
    assert "|  | request+response ms (mean) | 0.250 | 0.125 | 2.00x |" in report, report
    assert "|  | handshake ms (mean) | 0.850 | 0.850 | 1.00x |" in report
    # Only once: scenario 1's concurrency would make them a queue's length.
    assert report.count("request+response ms (mean)") == 1

    # A server whose every request failed has no phases: shown as such, with no ratio.
    outcome.measurements = [run("3", "gemfcgi", None), run("3", "molly-brown", 0.125)]
    report = markdown(outcome, {}, "")
    assert "|  | request+response ms (mean) | - | 0.125 | - |" in report, report


def test_stopping_a_server_ends_the_programs_it_started_in_sessions_of_their_own(tmp_path):
    # gemfcgi spawns FastCGI programs in sessions of their own, out of its
    # group's reach; fcgiwrap's workers were left running after a Ctrl-C.
    from bench.processes import Processes

    script = ("import os, subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
              "start_new_session=True)\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(120)\n")
    with Processes() as processes:
        server = processes.start([sys.executable, "-c", script], tmp_path / "log")
        deadline = time.monotonic() + 20
        while not (tmp_path / "log").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int((tmp_path / "log").read_text().split()[0])
        os.kill(child, 0)  # running
        processes.stop(server)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        try:
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    # Gone, or a zombie its init has yet to reap.
    assert not os.path.exists(f"/proc/{child}") or \
        open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_server_that_exits_is_not_taken_for_ready_because_another_holds_its_port(tmp_path):
    # A port taken by someone else answered the readiness probe, and the
    # run measured that other server while the one started had exited.
    import socket as sockets

    from bench.processes import Processes
    from bench.servers import ServerFailed, ServerKind

    class Failing(ServerKind):
        def command(self, port, fixture, work):
            return [sys.executable, "-c", "import time, sys; time.sleep(0.5); sys.exit(1)"]

        def environment(self, code):
            return None

    with sockets.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with Processes() as processes, pytest.raises(ServerFailed, match="exited with 1"):
            Failing("failing").start(processes, port, None, tmp_path, tmp_path)


@pytest.mark.parametrize("arguments", [["--rounds", "0"], ["--rounds", "-1"], ["--duration", "0"],
                                       ["--duration", "-2"]])
def test_rounds_and_durations_that_measure_nothing_are_refused(arguments, capsys):
    # 0 was taken for the default; -1 rounds wrote a report of empty tables.
    from bench.__main__ import parse_arguments

    with pytest.raises(SystemExit) as raised:
        parse_arguments(arguments)
    assert raised.value.code == 2
    assert "must be" in capsys.readouterr().err
