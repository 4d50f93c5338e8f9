"""
``bench/run`` / ``python -m bench``: prepare, measure, report.

The full run installs what is missing, then re-executes itself inside a
private network namespace (root only) so that molly-brown's every-interface
listener is reachable from nothing but the benchmark. ``--quick`` is the
smoke test the test suite runs: about 30 seconds, no installs, no namespace.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

from bench import BENCH_DIR, prepare, report
from bench.fixtures import make_fixture
from bench.gembench import CLIENT_CPU, GembenchFailed
from bench.processes import Processes
from bench.scenarios import Bench, Outcome, Settings, run_all
from bench.servers import BARE_TWISTED, BareTwisted, Jetforce, MollyBrown, ServerFailed, ServerKind

RUN_SCRIPT = BENCH_DIR / "run"


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description="Benchmark gemfcgi against its peers.")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: seconds, small files, no installs, no network namespace")
    parser.add_argument("--out", type=Path,
                        help="where RESULTS.md and results.png go (default: bench/; with --quick, "
                        "bench/work/quick/, so that a smoke run never replaces the results)")
    parser.add_argument("--work", type=Path, default=BENCH_DIR / "work",
                        help="builds, venvs, fixtures and logs (default: bench/work/)")
    parser.add_argument("--gembench-src", help="gembench's source folder "
                        "(default: $GEMBENCH_SRC, else ../shared/tools/gembench beside the checkout)")
    parser.add_argument("--duration", type=float, help="seconds per run (gembench -d; default 10, quick 1)")
    parser.add_argument("--rounds", type=int, help="rounds of every scenario (default 3, quick 1)")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get or pip install anything")
    parser.add_argument("--no-netns", action="store_true",
                        help="do not enter a network namespace (molly-brown is then left out)")
    parser.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    # 0 was taken for the default, and -1 rounds wrote an empty report.
    if options.duration is not None and not options.duration > 0:
        parser.error(f"--duration must be above 0 seconds, not {options.duration:g}")
    if options.rounds is not None and options.rounds < 1:
        parser.error(f"--rounds must be 1 or more, not {options.rounds}")
    return options


def log(message: str) -> None:
    print(message, flush=True)


def _stop_on_signal(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every started process is stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


def pin_to_client_cpu() -> str:
    """The benchmark's own Python clients share gembench's CPU, never the server's."""
    cpus = os.sched_getaffinity(0)
    if CLIENT_CPU in cpus and len(cpus) > 1:
        os.sched_setaffinity(0, {CLIENT_CPU})
        return ""
    return f"Warning: fewer than 2 CPUs available ({sorted(cpus)}); client and server share a core."


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = parse_arguments(argv)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)
    try:
        return _run(options, argv)
    except KeyboardInterrupt:
        # Also while gembench builds or the report is written.
        log("bench: interrupted; every started process was stopped")
        return 130


def _run(options: argparse.Namespace, argv: list[str]) -> int:
    work = options.work.resolve()
    if options.out is None:
        options.out = work / "quick" if options.quick else BENCH_DIR
    out = options.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if options.quick:
        settings = Settings.smoke(options.duration or 1.0, options.rounds or 1)
    else:
        settings = Settings.full(options.duration or 10.0, options.rounds or 3)

    install = not (options.quick or options.no_install or options.in_netns)
    try:
        tools = prepare.find_tools(work, install, log)
        binary = prepare.build_gembench(prepare.gembench_source(options.gembench_src), work)
    except prepare.PrepareFailed as error:
        log(f"bench: {error}")
        return 2

    use_netns = not (options.quick or options.no_netns)
    if use_netns and not options.in_netns:
        if prepare.can_unshare():
            log("re-executing inside unshare --net (loopback only)")
            prepare.reexecute_in_network_namespace(RUN_SCRIPT, argv)
        use_netns = False
        tools.missing.setdefault("molly-brown", "needs a private network namespace (root, unshare, ip)")
    if options.in_netns:
        prepare.bring_loopback_up()

    peers: list[ServerKind] = []
    if tools.jetforce:
        peers.append(Jetforce("jetforce", executable=tools.jetforce))
    if tools.molly_brown and options.in_netns:
        peers.append(MollyBrown("molly-brown", executable=tools.molly_brown))
    elif tools.molly_brown:
        tools.missing["molly-brown"] = ("left out: it binds every interface, so it runs only inside "
                                        "the full run's private network namespace")
    # Needs nothing beyond what gemfcgi runs on: Twisted and pyOpenSSL.
    peers.append(BareTwisted(BARE_TWISTED))
    for name, why in tools.missing.items():
        log(f"{name}: {why}")

    client_note = pin_to_client_cpu()
    outcome = Outcome(settings, commit=report.commit_description())
    outcome.unavailable.update(tools.missing)
    started = time.monotonic()
    fixture = make_fixture(work / "fixture", settings.big_size, settings.huge_size)
    try:
        with Processes() as processes:
            bench = Bench(settings, binary, fixture, work, processes, peers, tools.fcgiwrap, outcome,
                          prepare.snapshot_code(work), log)
            run_all(bench)
    except (ServerFailed, GembenchFailed) as error:
        log(f"bench: {error}")
        return 1
    path = report.write(outcome, out, work, tools.versions, tools.plot_python, client_note, log)
    log(f"bench: {path} written in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
