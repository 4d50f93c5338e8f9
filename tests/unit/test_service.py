"""The service tree on a memory reactor: listeners, reload, ticket key rotation."""

from __future__ import annotations

import os
import signal

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from gemfcgi.certificates import make_self_signed, write_key_pair
from gemfcgi.config import model
from gemfcgi.privileges import Identity
from gemfcgi.service import TICKET_KEY_LIFETIME, GemfcgiService
from tests.fakes import Trims


@pytest.fixture
def config(tmp_path) -> model.Config:
    cert_pem, key_pem = make_self_signed(["localhost"])
    write_key_pair(tmp_path / "c.pem", tmp_path / "k.pem", cert_pem, key_pem)
    return model.Config(
        servers=[
            model.Server(
                name="localhost",
                cert=str(tmp_path / "c.pem"),
                key=str(tmp_path / "k.pem"),
                options=model.LocationOptions(root=str(tmp_path)),
            )
        ]
    )


def test_ticket_keys_are_replaced_every_period(config):
    reactor = MemoryReactorClock()
    service = GemfcgiService(config, listen=["tcp:1965:interface=127.0.0.1"], reactor=reactor)
    service.startService()
    (tls,) = service._tls.values()
    first = tls.serverConnectionForTLS(None).get_context()
    reactor.advance(TICKET_KEY_LIFETIME - 1)
    assert tls.serverConnectionForTLS(None).get_context() is first
    reactor.advance(1)
    assert tls.serverConnectionForTLS(None).get_context() is not first
    service.stopService()
    assert not service._rotation.running


def test_listeners_follow_the_configuration_on_reload(config):
    reactor = MemoryReactorClock()
    config.servers[0].listens = [model.Listen("127.0.0.1", 1965)]
    service = GemfcgiService(config, reactor=reactor)
    service.startService()
    assert [port for port, *_ in reactor.tcpServers] == [1965]
    config.servers[0].listens = [model.Listen("127.0.0.1", 1966)]
    service.reload(config)
    assert [port for port, *_ in reactor.tcpServers] == [1965, 1966]
    assert list(service.listeners) == [d for d in service.listeners if ":1966:" in d]


def test_a_reload_whose_backends_fail_closes_the_listeners_it_opened(config):
    from copy import deepcopy

    from gemfcgi.service import ListenerService

    reactor = MemoryReactorClock()
    config.servers[0].listens = [model.Listen("127.0.0.1", 1965)]
    service = GemfcgiService(config, reactor=reactor)
    service.startService()
    bad = deepcopy(config)
    bad.servers[0].listens = [model.Listen("127.0.0.1", 1966)]
    bad.servers[0].locations = [model.Location("/x/*", model.LocationOptions(
        fastcgi=model.FastCGI(address=model.FastCGIEndpoint("nonsense-kind:x"))))]
    with pytest.raises(ValueError, match="nonsense-kind"):
        service.reload(bad)
    # The new socket was opened, then given up; the running one still serves.
    assert [port for port, *_ in reactor.tcpServers] == [1965, 1966]
    assert list(service.listeners) == ["tcp:1965:interface=127.0.0.1:backlog=1024"]
    assert [s.description for s in service if isinstance(s, ListenerService)] == list(service.listeners)
    assert service.config is config


class ThreadedClock(MemoryReactorClock):
    """A memory reactor that runs what a signal handler hands to its thread."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


def test_sigusr1_reopens_the_access_log_and_still_calls_the_handler_there_before(config, tmp_path):
    import signal

    config.log = model.LogSettings(access=str(tmp_path / "access.log"), syslog=False)
    calls = []

    def twistd_rotation(number, frame):
        calls.append(number)

    before = signal.signal(signal.SIGUSR1, twistd_rotation)
    try:
        service = GemfcgiService(config, listen=["tcp:1965:interface=127.0.0.1"],
                                 reactor=ThreadedClock())
        service.startService()
        (tmp_path / "access.log").rename(tmp_path / "access.log.1")
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
        assert calls == [signal.SIGUSR1]
        assert (tmp_path / "access.log").exists()
        service.stopService()
        assert signal.getsignal(signal.SIGUSR1) is twistd_rotation
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_a_sigusr1_while_the_stop_drains_reopens_the_log_and_does_not_end_the_process(config, tmp_path):
    # With twistd --logfile=- (the systemd unit) the handler before ours is
    # the default one, whose action ends the process.
    config.log = model.LogSettings(access=str(tmp_path / "access.log"), syslog=False)
    before = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        service = GemfcgiService(config, listen=["tcp:1965:interface=127.0.0.1"], reactor=ThreadedClock())
        service.startService()
        service.connections.add(object())  # a request still in flight
        done = []
        service.stopService().addBoth(done.append)
        assert done == []
        assert signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, before)


@pytest.mark.parametrize("where", ["apply", "load"])
def test_a_reload_that_fails_unexpectedly_is_logged_as_a_failed_reload(config, where):
    # A program's own load() raising a KeyError was an unhandled error of
    # the reactor, logged as critical.
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi.reload import Reloader

    def broken(*given):
        raise KeyError("a bug")

    def fine_load():
        return config, []

    reloader = Reloader("the command line", broken if where == "load" else fine_load,
                        broken if where == "apply" else (lambda applied: None), ThreadedClock())
    with capturedLogs() as events:
        assert reloader.reload() is False
    text = "\n".join(formatEvent(event) for event in events)
    assert "reload failed: the command line" in text
    assert any(event.get("log_failure") is not None for event in events)
    assert "configuration reloaded" not in text


def test_an_access_file_that_cannot_be_opened_fails_the_start_before_any_socket_opens(config, tmp_path):
    from gemfcgi.service import AccessLogError

    missing = tmp_path / "no-such-dir" / "access.log"
    config.log = model.LogSettings(access=str(missing), syslog=False,
                                   access_origin=model.Origin("gmid.conf", 3))
    reactor = MemoryReactorClock()
    service = GemfcgiService(config, listen=["tcp:1965:interface=127.0.0.1"], reactor=reactor)
    with pytest.raises(AccessLogError) as raised:
        service.startService()
    # With the line that named it, as a socket's failure has.
    assert str(raised.value) == f"gmid.conf:3: log access {missing}: No such file or directory"
    assert reactor.tcpServers == [] and not service.running


def test_a_reload_whose_access_file_cannot_be_opened_changes_nothing(config, tmp_path):
    from copy import deepcopy

    from gemfcgi.service import AccessLogError

    config.log = model.LogSettings(access=str(tmp_path / "access.log"), syslog=False)
    config.servers[0].listens = [model.Listen("127.0.0.1", 1965)]
    reactor = MemoryReactorClock()
    service = GemfcgiService(config, reactor=reactor)
    service.startService()
    writer, site = service.access_log, service.site
    bad = deepcopy(config)
    bad.log = model.LogSettings(access=str(tmp_path / "no-such-dir" / "access.log"), syslog=False)
    bad.servers[0].listens = [model.Listen("127.0.0.1", 1966)]
    with pytest.raises(AccessLogError):
        service.reload(bad)
    assert (service.access_log, service.site, service.config) == (writer, site, config)
    assert [port for port, *_ in reactor.tcpServers] == [1965]
    assert writer._fd is not None and os.fstat(writer._fd)


def test_sigusr1_without_an_access_file_reopens_nothing_and_says_nothing(config):
    from twisted.logger import formatEvent, globalLogPublisher

    config.log = model.LogSettings(syslog=True)
    service = GemfcgiService(config, listen=["tcp:1965:interface=127.0.0.1"], reactor=MemoryReactorClock())
    service.startService()
    seen: list = []
    globalLogPublisher.addObserver(seen.append)
    try:
        service.reopen_access_log()
    finally:
        globalLogPublisher.removeObserver(seen.append)
        service.stopService()
    assert [formatEvent(e) for e in seen] == []


@pytest.mark.parametrize("soft", [40, 100, 256, 1024, 4096, 65536])
def test_the_default_connection_limits_fit_in_the_descriptor_limit(monkeypatch, soft):
    import resource

    from gemfcgi.connections import default_max_connections, hard_limit

    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, resource.RLIM_INFINITY))
    most = default_max_connections()
    # Two each up to the limit (a socket and a file or FastCGI socket), one
    # each beyond it while they are told 41, and 64 (a quarter of a small
    # limit) kept for the rest.
    kept = min(64, soft // 4)
    assert 2 * most + (hard_limit(most) - most) + kept <= soft
    assert most >= (soft - kept - 8) * 0.45 or most == 20000  # and not much below


def test_a_hangup_while_the_server_stops_reloads_nothing_and_ends_nothing(config):
    # As in twistd's prefork layout and conf/gemfcgi.tac: the Reloader beside
    # the serving service in a plain MultiService, which stops its children
    # all at once; the serving one then drains for a while.
    from twisted.application.service import MultiService, Service
    from twisted.internet.defer import Deferred
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi.reload import Reloader

    class Draining(Service):
        def stopService(self):
            super().stopService()
            self.drained = Deferred()
            return self.drained

    class RunningReactor(ThreadedClock):
        def addSystemEventTrigger(self, phase, event, f, *args):
            self.triggers.append((phase, event, f))
            return len(self.triggers)

    applied = []
    reactor = RunningReactor()
    reactor.running, reactor.triggers = True, []
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        application = MultiService()
        draining = Draining()
        draining.setServiceParent(application)
        Reloader("the command line", lambda: (config, []), applied.append, reactor).setServiceParent(application)
        application.startService()
        stopped = application.stopService()
        assert not stopped.called  # still draining
        with capturedLogs() as logs:
            signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        assert applied == []
        assert [formatEvent(e) for e in logs] == ["not reloading from the command line: the server is stopping"]
        draining.drained.callback(None)
        assert stopped.called
        [(phase, event, restore)] = reactor.triggers
        assert (phase, event) == ("after", "shutdown")
        restore()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_reload_whose_listeners_cannot_be_planned_leaves_no_access_file_open(config, tmp_path):
    from copy import deepcopy

    from gemfcgi.service import ListenError

    def open_on_the_log() -> int:
        fds = os.listdir("/proc/self/fd")
        return sum(1 for fd in fds if os.path.realpath(f"/proc/self/fd/{fd}") == str(tmp_path / "access.log"))

    config.log = model.LogSettings(access=str(tmp_path / "access.log"), syslog=False)
    config.servers[0].listens = [model.Listen("127.0.0.1", 1965)]
    service = GemfcgiService(config, reactor=MemoryReactorClock())
    service.startService()
    bad = deepcopy(config)
    bad.servers[0].listens = [model.Listen("127.0.0.1", "no-such-service-name")]
    for _ in range(3):
        with pytest.raises(ListenError):
            service.reload(bad)
    assert open_on_the_log() == 1
    service.stopService()
    assert open_on_the_log() == 0


def test_connections_closed_at_the_hard_limit_are_counted_once_per_window(config):
    from twisted.internet.task import Clock
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi.connections import REFUSALS_EVERY
    from gemfcgi.server import GeminiFactory
    from gemfcgi.service import build_site

    clock = Clock()
    factory = GeminiFactory(build_site(config), clock)
    factory.limit = 0
    with capturedLogs() as logs:
        assert all(factory.buildProtocol(None) is None for _ in range(6))
        clock.advance(REFUSALS_EVERY)
        clock.advance(REFUSALS_EVERY)
        factory.buildProtocol(None)
    said = [formatEvent(e).split(" connection")[0] for e in logs]
    # The first at once, the five after it when their window ends, then a new spell.
    assert said == ["1", "5", "1"]
    # A spell of one says nothing more when its window ends, and leaves no timer.
    with capturedLogs() as later:
        clock.advance(REFUSALS_EVERY)
    assert list(later) == [] and not clock.getDelayedCalls()


def test_a_reloader_started_again_before_the_reactor_stopped_keeps_its_handler(config):
    from gemfcgi.reload import Reloader

    class RunningReactor(ThreadedClock):
        def addSystemEventTrigger(self, phase, event, f, *args):
            self.triggers.append(f)
            return len(self.triggers)

        def removeSystemEventTrigger(self, trigger):
            self.removed.append(trigger)

    reactor = RunningReactor()
    reactor.running, reactor.triggers, reactor.removed = True, [], []
    applied = []
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        reloader = Reloader("the command line", lambda: (config, []), applied.append, reactor)
        reloader.startService()
        reloader.stopService()
        reloader.startService()
        assert reactor.removed == [1]
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        assert applied == [config]  # running again: a hangup reloads
        reactor.running = False
        reloader.stopService()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_reloader_taken_out_of_a_running_program_gives_the_hangup_back_at_once(config):
    # The program goes on: a hangup is its own again, not answered until the
    # reactor stops with "the server is stopping".
    from twisted.application.service import MultiService
    from twisted.logger import capturedLogs

    from gemfcgi.reload import Reloader

    class RunningReactor(ThreadedClock):
        def addSystemEventTrigger(self, phase, event, f, *args):
            self.triggers.append(f)
            return len(self.triggers)

    reactor = RunningReactor()
    reactor.running, reactor.triggers = True, []
    hangups = []

    def programs_own(signum, frame):
        hangups.append(signum)

    before = signal.signal(signal.SIGHUP, programs_own)
    try:
        program = MultiService()
        reloader = Reloader("the command line", lambda: (config, []), lambda c: None, reactor)
        reloader.setServiceParent(program)
        program.startService()
        reloader.disownServiceParent()
        assert program.running and reactor.triggers == []
        assert signal.getsignal(signal.SIGHUP) is programs_own
        with capturedLogs() as logs:
            signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        assert hangups == [signal.SIGHUP]
        assert list(logs) == []
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_hangup_while_the_server_starts_its_programs_is_a_reload_not_the_end(config):
    # twistd calls privilegedStartService on the whole tree before any
    # startService: the handler is in place before a program is spawned.
    from twisted.application.service import MultiService, Service

    from gemfcgi.reload import Reloader

    seen_at_start = []

    class SpawnsPrograms(Service):
        def startService(self):
            super().startService()
            seen_at_start.append(signal.getsignal(signal.SIGHUP))
            signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)  # a hangup, now

    reactor = ThreadedClock()
    applied = []
    tree = MultiService()
    SpawnsPrograms().setServiceParent(tree)
    reloader = Reloader("the command line", lambda: (config, []), applied.append, reactor)
    reloader.setServiceParent(tree)  # after the programs, as twistd gemfcgi adds it
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        tree.privilegedStartService()
        tree.startService()
        assert seen_at_start[0] not in (signal.SIG_DFL, signal.SIG_IGN, None)
        assert applied == [config]
        reactor.running = False
        tree.stopService()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, before)


def two_servers_named_alike(config: model.Config) -> model.Config:
    """Two ``localhost`` blocks, the first on port 1965, the second on 1966."""
    first = config.servers[0]
    first.listens = [model.Listen("*", 1965)]
    second = model.Server(name="localhost", cert=first.cert, key=first.key,
                          options=first.options, listens=[model.Listen("*", 1966)])
    config.servers.append(second)
    return config


def test_a_given_socket_offers_the_certificate_of_the_server_naming_it(config):
    # Its default certificate, for clients whose SNI names no server; which
    # server answers is the name's to choose (``test_systemd``).
    config = two_servers_named_alike(config)
    description = "tcp:1966:interface=127.0.0.1"
    service = GemfcgiService(config, listen=[description], reactor=MemoryReactorClock())
    service.startService()
    try:
        assert service.listeners[description].tls.default_index == 1
    finally:
        service.stopService()


def test_a_worker_whose_parent_is_already_gone_does_not_start(config):
    import pickle
    import subprocess
    import sys

    from gemfcgi.worker import WorkerPlan

    # Its parent here is this test, not the pid the plan names.
    plan = WorkerPlan(config=config, listen=[], number=3, parent=os.getpid() + 1_000_000)
    ended = subprocess.run([sys.executable, "-m", "gemfcgi.worker"], input=pickle.dumps(plan),
                           capture_output=True, timeout=30)
    assert ended.returncode == 1
    assert ended.stderr.decode().strip() == "gemfcgi worker 3: the server process is gone; not starting"


def test_a_reload_of_one_process_refuses_the_privileges_only_a_start_drops(config):
    from gemfcgi.check import needs_a_restart

    config.user, config.chroot, config.prefork = "nobody", "/var/gemini", 4
    config.origins = {"user": model.Origin("gmid.conf", 2), "chroot": model.Origin("gmid.conf", 3),
                      "prefork": model.Origin("gmid.conf", 1)}
    said = "privileges are dropped at a start only, and this server started in one process without"
    assert [str(d) for d in needs_a_restart(config, workers_fixed=True)] == [
        f"gmid.conf:2: user 'nobody': {said}: restart it to apply this",
        f"gmid.conf:3: chroot '/var/gemini': {said}: restart it to apply this",
    ]
    # In the file's order: prefork's line comes first.
    assert [str(d) for d in needs_a_restart(config)][0] == (
        "gmid.conf:1: prefork 4: this server started in one process, and a reload cannot start "
        "workers: restart it to apply this")


class Straggler:
    """A connection whose reply is in its body, as the drain sees one."""

    def __init__(self) -> None:
        from gemfcgi.accesslog import AccessRecord

        self.record = AccessRecord(client_ip="127.0.0.1", url="gemini://localhost/slow", status=20)
        self.transport = StringTransport()
        self.transport.abortConnection = lambda: setattr(self, "aborted", True)
        self.aborted = False

    def answer_the_stop(self) -> bool:
        return False


def test_a_retiring_service_waits_for_its_requests_until_a_stop_limits_the_wait(config):
    reactor = MemoryReactorClock()
    service = GemfcgiService(config, listen=["tcp:1965:interface=127.0.0.1"], reactor=reactor)
    service.startService()
    straggler = Straggler()
    service.connections.add(straggler)
    service.drain_timeout = None  # retired by a reload
    done = []
    service.stopService().addBoth(done.append)
    reactor.advance(3600)
    assert (done, straggler.aborted) == ([], False)
    service.limit_the_drain(5)  # the server stops meanwhile
    reactor.advance(4.9)
    assert not straggler.aborted
    reactor.advance(0.2)
    assert straggler.aborted
    service.connections.remove(straggler)
    reactor.advance(1)
    assert len(done) == 1 and not isinstance(done[0], Failure)


def test_a_worker_starting_up_is_not_ended_by_a_sigusr2():
    # The parent passes SIGUSR2 on to workers that have written a line,
    # which may come before the service has its handler.
    import subprocess
    import sys
    import time

    worker = subprocess.Popen([sys.executable, "-m", "gemfcgi.worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        ignored = 0
        while not ignored & (1 << (signal.SIGUSR2 - 1)):
            assert time.monotonic() < deadline and worker.poll() is None, "SIGUSR2 never ignored"
            status = open(f"/proc/{worker.pid}/status").read()
            ignored = int(status.split("SigIgn:")[1].split()[0], 16)
            time.sleep(0.01)
        worker.send_signal(signal.SIGUSR2)
        time.sleep(0.2)
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait()


def test_a_request_in_flight_through_a_reload_is_logged_as_its_configuration_says(config, tmp_path):
    from copy import deepcopy

    from gemfcgi import accesslog

    config.log = model.LogSettings(access=str(tmp_path / "a.log"), style="legacy", syslog=False)
    service = GemfcgiService(config, listen=["tcp:1965:interface=127.0.0.1"], reactor=MemoryReactorClock())
    service.startService()
    try:
        class InFlight:
            site = service.site

        old_site, in_flight = service.site, InFlight()
        service.connections.add(in_flight)
        changed = deepcopy(config)
        changed.log = model.LogSettings(access=str(tmp_path / "b.log"), style="condensed", syslog=False)
        service.reload(changed)

        def logged(site, url: str) -> None:
            record = accesslog.AccessRecord(client_ip="127.0.0.1", client_port=1, url=url,
                                            status=20, meta="text/gemini", started=0.0)
            accesslog.emit(record, 0.1, service, site)

        logged(old_site, "gemini://localhost/begun-before")
        logged(service.site, "gemini://localhost/begun-after")
        service.connections.remove(in_flight)
        # Its last request done, the old file is closed: nothing more goes there.
        logged(old_site, "gemini://localhost/late")
    finally:
        service.stopService()
    before, after = (tmp_path / "a.log").read_text(), (tmp_path / "b.log").read_text()
    assert before.startswith("127.0.0.1:1 GET gemini://localhost/begun-before 20 text/gemini")
    assert "begun-after" not in before and "late" not in before
    assert "begun-before" not in after and "gemini://localhost/begun-after" in after


class _SignalledTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)


def _workers(pool, generation: int, pids: list[int]):
    from gemfcgi.prefork import WorkerProcess

    processes = []
    for number, pid in enumerate(pids):
        process = WorkerProcess(pool, number, generation)
        process.transport = _SignalledTransport(pid)
        process.pid = pid
        processes.append(process)
    return processes


def test_a_reload_whose_new_workers_never_listen_keeps_the_old_ones_serving(config):
    # New workers that die at start (and are restarted with a back-off) must
    # not leave the port with nobody accepting once RETIRE_AFTER has passed.
    from twisted.logger import capturedLogs

    from gemfcgi.prefork import RETIRE_AFTER, WorkerPool

    clock = MemoryReactorClock()
    pool = WorkerPool(config, 2, reactor=clock)
    old = _workers(pool, 0, [101, 102])
    new = _workers(pool, 1, [201, 202])
    for process in old:
        process.serving = True
    pool.workers = dict(enumerate(new))
    pool._to_retire = list(old)
    pool._retire_timer = clock.callLater(RETIRE_AFTER, pool._retire_when_due)
    with capturedLogs() as logs:
        clock.advance(RETIRE_AFTER + 1)
    assert [p.transport.signals for p in old] == [[], []]
    assert [e["log_level"].name for e in logs if "serves on until one does" in e["log_format"]] == ["warn"]
    # The first new worker to listen retires them, its sibling still starting.
    new[1].serving = True
    pool.worker_serving(new[1])
    assert [p.transport.signals for p in old] == [[signal.SIGHUP], [signal.SIGHUP]]


def test_a_reload_retires_the_old_workers_after_a_while_once_some_new_one_listens(config):
    from gemfcgi.prefork import RETIRE_AFTER, WorkerPool

    clock = MemoryReactorClock()
    pool = WorkerPool(config, 2, reactor=clock)
    old = _workers(pool, 0, [101, 102])
    new = _workers(pool, 1, [201, 202])
    pool.workers = dict(enumerate(new))
    pool._to_retire = list(old)
    pool._retire_timer = clock.callLater(RETIRE_AFTER, pool._retire_when_due)
    new[0].serving = True
    pool.worker_serving(new[0])
    assert [p.transport.signals for p in old] == [[], []]
    clock.advance(RETIRE_AFTER)
    assert [p.transport.signals for p in old] == [[signal.SIGHUP], [signal.SIGHUP]]


class _CallingReactor:
    def callFromThread(self, action, *args) -> None:
        action(*args)


@pytest.mark.parametrize("order", ["first-first", "last-first"])
def test_services_sharing_a_signal_may_stop_in_any_order_and_leave_the_handler_from_before(order):
    from gemfcgi.service import on_signal

    seen: list[str] = []
    before = signal.signal(signal.SIGUSR1, lambda number, frame: seen.append("program"))
    try:
        undo_a = on_signal(signal.SIGUSR1, lambda: seen.append("a"), _CallingReactor())
        undo_b = on_signal(signal.SIGUSR1, lambda: seen.append("b"), _CallingReactor())
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
        assert seen == ["program", "a", "b"]
        first, second = (undo_a, undo_b) if order == "first-first" else (undo_b, undo_a)
        first()
        seen.clear()
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
        assert seen == ["program", "b" if first is undo_a else "a"]
        second()
        seen.clear()
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
        assert seen == ["program"]  # the program's own handler is back, not one of ours
        # A service started again takes the signal once, not twice.
        undo_c = on_signal(signal.SIGUSR1, lambda: seen.append("c"), _CallingReactor())
        seen.clear()
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
        assert seen == ["program", "c"]
        undo_c()
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_a_reply_handed_to_the_kernel_whole_is_not_said_to_be_cut_by_the_drain():
    # An 8 MiB reply, all of it and its close_notify in the socket's
    # buffers, reached the client whole, and was logged as cut.
    from twisted.logger import capturedLogs

    from gemfcgi.accesslog import AccessRecord
    from gemfcgi.service import _cut_by_drain

    class Transport:
        def __init__(self, buffered: bool) -> None:
            self.buffered = buffered

        def _nothing_buffered(self) -> bool:
            return not self.buffered

    class Connection:
        def __init__(self, finished, buffered) -> None:
            self.record = AccessRecord(url="gemini://localhost/big.bin", finished=finished)
            self.transport = Transport(buffered)

    with capturedLogs() as logs:
        assert _cut_by_drain(Connection(finished=1.0, buffered=False), timeout=5) is False
    assert list(logs) == []
    for finished, buffered in [(None, False), (1.0, True)]:
        connection = Connection(finished, buffered)
        with capturedLogs() as logs:
            _cut_by_drain(connection, timeout=5)
        assert [e["cut"] for e in logs] == ["cut by the drain timeout"]
        assert connection.record.meta == "cut by the drain timeout"


def test_a_request_line_cut_by_the_drain_is_named_and_a_connection_without_one_is_not(config):
    # README: each request cut is logged; one whose line had not all come
    # got 41 with only its access line.
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi.server import Timeouts
    from gemfcgi.service import _cut_by_drain, build_site
    from tests.unit.test_protocol import connect

    site = build_site(config, Timeouts(handshake=10, request=10, linger=2))
    for sent, said in [(b"gemini://localhost/ind", ["127.0.0.1:40000 gemini://localhost/ind: cut by the "
                                                    "drain timeout (3 s) as the server stops: answered "
                                                    "41, its request line had not all come"]),
                       (b"", [])]:
        protocol, transport, _ = connect(site)
        protocol.dataReceived(sent)
        with capturedLogs() as logs:
            assert _cut_by_drain(protocol, timeout=3) is True
        assert transport.value() == b"41 server is stopping\r\n"
        assert [formatEvent(e) for e in logs] == said


def test_connections_shed_at_the_hard_limit_are_said_once_every_ten_seconds():
    # A long flood gave two lines each time: the window's count, and the
    # next window's first refusal in a line of its own the same second.
    from twisted.internet.task import Clock
    from twisted.logger import capturedLogs

    from gemfcgi.connections import REFUSALS_EVERY, ConnectionTracker

    clock = Clock()
    tracker = ConnectionTracker()
    with capturedLogs() as logs:
        for _ in range(31):  # 30 s of a refusal every 0.1 s
            for _ in range(10):
                tracker.refuse(64, clock)
                clock.advance(0.1)
        clock.advance(REFUSALS_EVERY)
    said = [e["count"] for e in logs if "closed before TLS" in e["log_format"]]
    # The first of the spell at once, then one line per window, every
    # refusal counted once.
    assert said == [1, 100, 100, 100, 9]


def test_a_handler_set_after_ours_is_left_in_place_when_ours_goes():
    from gemfcgi.service import on_signal

    seen: list[str] = []
    before = signal.getsignal(signal.SIGUSR2)
    try:
        undo = on_signal(signal.SIGUSR2, lambda: seen.append("ours"), _CallingReactor())
        theirs = lambda number, frame: seen.append("theirs")  # noqa: E731
        signal.signal(signal.SIGUSR2, theirs)
        undo()
        assert signal.getsignal(signal.SIGUSR2) is theirs
        # A service asking again shares no stale handler: it chains theirs.
        undo = on_signal(signal.SIGUSR2, lambda: seen.append("again"), _CallingReactor())
        signal.getsignal(signal.SIGUSR2)(signal.SIGUSR2, None)
        assert seen == ["theirs", "again"]
        undo()
        assert signal.getsignal(signal.SIGUSR2) is theirs
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_a_failed_start_removes_only_a_pidfile_that_names_this_process(tmp_path):
    from twisted.application.service import Service

    from gemfcgi.tap import StartOrExit

    pidfile = tmp_path / "twistd.pid"
    pidfile.write_text(f"{os.getpid() + 1_000_000}\n")  # another server's
    StartOrExit(Service(), True, str(pidfile))._remove_pidfile()
    assert pidfile.exists()
    pidfile.write_text(f"{os.getpid()}\n")
    StartOrExit(Service(), True, str(pidfile))._remove_pidfile()
    assert not pidfile.exists()
    StartOrExit(Service(), True, str(pidfile))._remove_pidfile()  # gone already: nothing to do


def test_a_daemons_failed_start_fits_twistds_hundred_bytes_with_its_line_and_reason():
    from gemfcgi.tap import status_message

    what = "cannot listen on tcp:1965:interface=203.0.113.254:backlog=64: Address already in use"
    assert status_message("", "cannot open /var/log/gemini.log") == b"cannot open /var/log/gemini.log"
    short = status_message("/etc/gmid.conf:12: ", what)
    assert len(short) <= 98
    assert short.startswith(b"/etc/gmid.conf:12: cannot listen on tcp:1965:")
    assert short.endswith(b"...Address already in use")
    deep = status_message(f"/srv/{'capsules/' * 20}gmid.conf:7: ", what)
    assert len(deep) <= 98
    assert b"capsules/gmid.conf:7: cannot listen on tcp:" in deep
    assert deep.endswith(b"Address already in use")
    assert status_message("/etc/gmid.conf:1: ", "no such file: caf\u00e9").endswith(b"caf\\xe9")


def test_a_daemon_whose_parent_cannot_be_told_leaves_the_report_to_twistd():
    # A status pipe that is no open descriptor (one far past any this
    # process holds): the start's exception goes to twistd's own report.
    from twisted.application.service import Service

    from gemfcgi.tap import StartOrExit

    closed = 1_000_000
    options = {"statusPipe": closed}
    starter = StartOrExit(Service(), False, "", options)
    assert starter._tell_the_waiting_parent("gmid.conf:2: ", "cannot listen on x: in use") is False
    assert options["statusPipe"] == closed


def test_a_worker_pool_opens_its_sockets_before_twistd_gives_up_its_privileges(config):
    # With workers, the sockets were opened in startService, after twistd's
    # --uid: a unix socket in a directory only root may write failed.
    import socket

    from gemfcgi.prefork import WorkerPool

    pool = WorkerPool(config, 2, listen=["tcp:0:interface=127.0.0.1"])
    pool.privilegedStartService()
    try:
        [opened] = pool.sockets.values()
        assert not pool.running
        with socket.socket(fileno=socket.dup(opened.fd)) as probe:
            port = probe.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        for opened in pool.sockets.values():
            opened.close()


def test_the_service_trims_after_its_start_after_connections_and_after_a_reload(config):
    from gemfcgi.memorytrim import TRIM_AFTER

    reactor = MemoryReactorClock()
    service = GemfcgiService(config, listen=["tcp:1965:interface=127.0.0.1"], reactor=reactor)
    trims = Trims()
    service.memory.trim = trims
    service.startService()
    reactor.advance(0)
    assert trims.count == 1

    connection = object()
    service.connections.add(connection)
    service.connections.remove(connection)
    reactor.advance(TRIM_AFTER)
    assert trims.count == 2

    service.reload(config)
    reactor.advance(0)
    assert trims.count == 3

    # Once stopping, connections that end plan no trim.
    service.connections.add(connection)
    service.stopService()
    service.connections.remove(connection)
    reactor.advance(TRIM_AFTER)
    assert trims.count == 3


def test_the_prefork_parent_trims_after_its_start_and_each_reload(config, monkeypatch):
    from gemfcgi import prefork

    reactor = MemoryReactorClock()
    pool = prefork.WorkerPool(config, 2, listen=["tcp:1965:interface=127.0.0.1"], reactor=reactor)
    trims = Trims()
    pool.memory.trim = trims
    spawned = []
    monkeypatch.setattr(pool, "_open_sockets", lambda config: None)
    monkeypatch.setattr(pool, "_spawn_generation", lambda: spawned.append(pool.generation))
    pool.startService()
    reactor.advance(0)
    assert trims.count == 1
    pool.reload(config)
    reactor.advance(0)
    assert (trims.count, spawned) == (2, [0, 1])


@pytest.mark.parametrize("user_only", [True, False])
def test_a_worker_opens_the_access_file_inside_the_chroot_it_will_enter(config, tmp_path, user_only):
    # A ``user`` without ``chroot`` is chrooted into its home: the access
    # file is opened there too, as roots and FastCGI sockets are read there
    # (it was opened on the host's "/logs", which did not exist: every
    # worker died at start).
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    config.log = model.LogSettings(access="/logs/access.log", syslog=False)
    if not user_only:
        config.chroot = str(home)
    service = GemfcgiService(config, listen=["tcp:1965:interface=127.0.0.1"], reactor=MemoryReactorClock())
    service.becomes = Identity(os.getuid(), os.getgid(), "someone", str(home))
    service.startService()
    try:
        assert service.access_log.path == str(home / "logs" / "access.log")
        service.entered_chroot(str(home))
        # Inside, SIGUSR1 reopens it by its own path.
        assert service.access_log.path == "/logs/access.log"
    finally:
        service.stopService()


def test_a_reload_keeps_the_handlers_a_program_put_in_place_of_gemfcgi_s(config):
    # The README's visitor check replaced "static"; a certificate renewal's
    # reload gave the capsule back to gemfcgi's own handler, unguarded.
    def greet(client, request, settings):
        client.respond(60, "a client certificate is required")

    def extra(client, request, settings):
        client.respond(20, "text/plain")

    service = GemfcgiService(config, listen=["tcp:1965:interface=127.0.0.1"], reactor=MemoryReactorClock())
    service.startService()
    try:
        own_block = service.site.handlers["block"]
        service.site.handlers["static"] = greet
        service.site.handlers["extra"] = extra
        service.reload(config)
        handlers = service.site.handlers
        assert handlers["static"] is greet and handlers["extra"] is extra
        # gemfcgi's own are those of the new configuration.
        assert handlers["block"] is own_block  # a plain function, the same in each
        assert handlers["fastcgi"].keywords["backends"] is service.fastcgi
        # And again at the next reload; one the program takes out stays out.
        service.reload(config)
        assert service.site.handlers["static"] is greet
        service.site.handlers.pop("extra")
        service.reload(config)
        assert "extra" not in service.site.handlers
        # A wrapper that calls through ``own_handlers`` follows reloads, and
        # putting gemfcgi's own back gives the kind back to gemfcgi: the next
        # reload installs the new configuration's (put back a saved one of
        # an earlier configuration, it was kept, stale, for ever).
        service.site.handlers["static"] = service.own_handlers["static"]
        before = service.own_handlers["static"]
        service.reload(config)
        assert service.site.handlers["static"] is service.own_handlers["static"] is not before
        with pytest.raises(TypeError):
            service.own_handlers["static"] = greet  # read only
    finally:
        service.stopService()


def test_sigusr2_while_draining_says_the_listeners_are_closed(config):
    # A retiring prefork worker lists no socket: its line said nothing of why.
    from twisted.logger import capturedLogs, formatEvent

    service = GemfcgiService(config, listen=["tcp:1965:interface=127.0.0.1"], reactor=MemoryReactorClock())
    service.startService()
    held = StringTransport()
    service.connections.add(held)
    try:
        service.stopService()
        with capturedLogs() as logs:
            service.report_clients()
        assert [formatEvent(e) for e in logs] == ["1 connected clients (listeners closed: stopping)"]
    finally:
        service.connections.remove(held)
