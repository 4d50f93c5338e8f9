"""twistd's text log through gemfcgi's observer: the same lines as twistd's own."""

import io
import os
import signal
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application.service import Application, Service
from twisted.logger import ILogObserver, Logger, formatEventAsClassicLogText, formatTime
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from twisted.scripts.twistd import ServerOptions

from gemfcgi import accesslog, tap, textlog

RFC3339 = "%Y-%m-%dT%H:%M:%S%z"


@pytest.fixture(scope="module")
def berlin():
    """A zone with daylight saving time, so the offset changes under the formatter."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def access_event(url: str = "gemini://example.com/", meta: str = "text/gemini") -> dict:
    seen = []
    record = accesslog.AccessRecord(
        client_ip="192.0.2.7", client_port=40001, url=url, status=20, meta=meta,
        bytes_sent=1234, started=time.time(),
    )
    observer = accesslog.log.observer
    accesslog.log.observer = seen.append
    try:
        accesslog.emit(record, record.started + 0.25)
    finally:
        accesslog.log.observer = observer
    return seen[0]


def twistds_text(event: dict) -> str:
    return formatEventAsClassicLogText(event, formatTime=lambda when: formatTime(when, RFC3339))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-2e9, max_value=4e9, allow_nan=False),
            st.integers(min_value=1711846790, max_value=1711846810).map(lambda s: s + 0.5),
            st.integers(min_value=-5, max_value=1711846810).map(lambda s: s - 4e-7),
            st.integers(min_value=-5, max_value=1711846810).map(lambda s: s - 6e-7),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_timestamps_in_any_order_format_as_twisted_formats_them(berlin, stamps):
    formatter = textlog.SecondsFormatter()
    assert [formatter(when) for when in stamps] == [formatTime(when, RFC3339) for when in stamps]


def test_the_offset_follows_a_daylight_saving_switch_within_the_cache(berlin):
    formatter = textlog.SecondsFormatter()
    switch = 1711846800  # 2024-03-31 01:00 UTC: Berlin goes from +0100 to +0200
    texts = [formatter(switch - 0.5), formatter(switch - 0.25), formatter(switch), formatter(switch + 0.75)]
    assert texts == [formatTime(when, RFC3339) for when in (switch - 0.5, switch - 0.25, switch, switch + 0.75)]
    assert texts[0].endswith("+0100") and texts[2].endswith("+0200")


def test_no_timestamp_or_no_format_gives_twisteds_placeholder():
    assert textlog.SecondsFormatter()(None) == "-"
    assert textlog.SecondsFormatter(None)(1700000000.0) == "-"


@pytest.mark.parametrize(
    "url, meta",
    [
        ("gemini://example.com/", "text/gemini"),
        ("gemini://example.com/{x}?{0}", "text/gemini"),
        ("gemini://example.com/%7B", "an error\nover two lines"),
    ],
)
def test_an_access_line_is_the_line_twistd_writes(url, meta):
    event = access_event(url, meta)
    assert textlog.format_event(textlog.SecondsFormatter())(event) == twistds_text(event)


def test_other_events_are_formatted_by_twisted_fields_and_tracebacks_included():
    seen = []
    logger = Logger(namespace="gemfcgi.test", observer=seen.append)
    logger.info("listening on {port} for {names!r}", port=1965, names=["a", "b"])
    try:
        1 / 0
    except ZeroDivisionError:
        logger.failure("backend {name} failed", Failure(), name="app")
    logger.warn("no format fields at all")
    format_event = textlog.format_event(textlog.SecondsFormatter())
    for event in seen:
        assert format_event(event) == twistds_text(event)
    assert "ZeroDivisionError" in format_event(seen[1])


def test_the_observer_writes_what_twisteds_text_observer_writes():
    from twisted.logger import textFileLogObserver

    ours, theirs = io.StringIO(), io.StringIO()
    events = [access_event(), access_event("gemini://example.com/a{b}")]
    Logger(namespace="gemfcgi.test", observer=events.append).info("started {n}", n=2)
    for observer, out in ((textlog.text_observer(ours), ours), (textFileLogObserver(theirs), theirs)):
        for event in events:
            observer(event)
    assert ours.getvalue() == theirs.getvalue()
    assert ours.getvalue().count("\n") == 3


def twistd_options(*argv: str, state_dir: str = ".") -> ServerOptions:
    options = ServerOptions()
    options.parseOptions([*argv, "gemfcgi", "--root", ".", "--state-dir", state_dir])
    return options


@pytest.fixture
def usr1():
    """SIGUSR1's handler as it was before the test, and again after it."""
    before = signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGUSR1, before)


def test_twistd_with_a_log_file_gets_our_observer_on_that_file(tmp_path, usr1):
    path = tmp_path / "twistd.log"
    observer = textlog.twistd_observer(twistd_options("-n", "--logfile", str(path)))
    assert isinstance(observer._outFile, LogFile)
    observer(access_event("gemini://example.com/in-the-file"))
    observer._outFile.close()
    assert "GET gemini://example.com/in-the-file 20 text/gemini 1234" in path.read_text()


def test_twistd_in_the_foreground_without_a_file_writes_to_standard_output(capsys):
    observer = textlog.twistd_observer(twistd_options("-n"))
    observer(access_event("gemini://example.com/on-stdout"))
    assert "GET gemini://example.com/on-stdout" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ("-n", "--syslog"),
        ("-n", "--logger", "twisted.logger.textFileLogObserver"),
        ("--logfile", "-"),
    ],
)
def test_syslog_a_chosen_logger_and_a_daemon_on_stdout_stay_twistds(argv):
    assert textlog.twistd_observer(twistd_options(*argv)) is None


def test_under_twist_the_log_is_twists_own(tmp_path, monkeypatch, usr1):
    # ``twist gemfcgi`` logs where its own options say; the twistd default
    # (a twistd.log in the current directory) left a stray file, or failed
    # where that directory is not writable.
    from twisted.application.twist._options import TwistOptions

    monkeypatch.chdir(tmp_path)
    assert textlog.twistd_observer(TwistOptions()) is None
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def send_usr1() -> None:
    """What SIGUSR1 does: the handler runs, and the rotation it hands to the reactor's thread."""
    from twisted.internet import reactor

    signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
    reactor.runUntilCurrent()


def test_sigusr1_rotates_the_log_file_as_twistd_would(tmp_path, usr1):
    path = tmp_path / "twistd.log"
    observer = textlog.twistd_observer(twistd_options("-n", "--logfile", str(path)))
    observer(access_event("gemini://example.com/before"))
    send_usr1()
    observer(access_event("gemini://example.com/after"))
    observer._outFile.close()
    assert "example.com/before" in (tmp_path / "twistd.log.1").read_text()
    assert "example.com/after" in path.read_text()
    assert "example.com/before" not in path.read_text()


def test_a_log_file_cut_by_copytruncate_is_written_from_its_start(tmp_path, usr1):
    # logrotate's copytruncate, as the README advises: the next line went in
    # at the old offset, after that many NUL bytes.
    path = tmp_path / "twistd.log"
    observer = textlog.twistd_observer(twistd_options("-n", "--logfile", str(path)))
    observer(access_event("gemini://example.com/before"))
    with open(path, "r+") as cut:
        cut.truncate(0)
    observer(access_event("gemini://example.com/after"))
    observer._outFile.close()
    text = path.read_text()
    assert "\0" not in text and "example.com/after" in text and "example.com/before" not in text


def test_a_log_file_cut_by_copytruncate_is_rotated_by_its_size_not_by_what_was_written(tmp_path):
    # twistd's rotation at 1 MB counted every byte written since the open:
    # after a cut, it renamed a file of a few lines.
    path = tmp_path / "twistd.log"
    log_file = textlog.AppendingLogFile.fromFullPath(str(path), rotateLength=1000)
    log_file.write("x" * 900 + "\n")
    with open(path, "r+") as cut:
        cut.truncate(0)
    log_file.write("y" * 200 + "\n")
    log_file.write("z" * 700 + "\n")
    # 1,803 bytes written since the open, a file of 902: no rotation.
    assert not (tmp_path / "twistd.log.1").exists()
    log_file.write("w" * 200 + "\n")
    log_file.write("v\n")
    log_file.close()
    # Past 1,000 in the file: rotated, the lines before the cut not in it.
    assert "y" * 200 in (tmp_path / "twistd.log.1").read_text() and path.read_text() == "v\n"


def test_a_log_file_removed_is_made_anew_at_sigusr1(tmp_path, usr1):
    # twistd's rotation needs the file there: its lines went on to the
    # removed file, through any number of SIGUSR1s.
    path = tmp_path / "twistd.log"
    observer = textlog.twistd_observer(twistd_options("-n", "--logfile", str(path)))
    observer(access_event("gemini://example.com/before"))
    path.unlink()
    send_usr1()
    observer(access_event("gemini://example.com/after"))
    observer._outFile.close()
    assert "example.com/after" in path.read_text()
    assert not (tmp_path / "twistd.log.1").exists()


def test_a_log_fifo_no_process_reads_stops_the_start_with_a_line_not_a_hang(tmp_path, usr1):
    # The open waited for a reader, the start with it, saying nothing.
    import os

    import pytest

    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    options = twistd_options("-n", "--logfile", str(fifo), state_dir=str(tmp_path))
    with pytest.raises(SystemExit) as raised:
        tap.makeService(options.subOptions)
    assert raised.value.code == f"gemfcgi: --logfile {fifo}: a FIFO that no process reads"
    with pytest.raises(SystemExit) as raised:
        tap.makeService(twistd_options("-n", "--logfile", str(tmp_path / "none" / "x.log"),
                                       state_dir=str(tmp_path)).subOptions)
    assert raised.value.code == f"gemfcgi: --logfile {tmp_path / 'none' / 'x.log'}: No such file or directory"
    # With a reader, lines reach it.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    observer = textlog.twistd_observer(twistd_options("-n", "--logfile", str(fifo)))
    observer(access_event("gemini://example.com/read"))
    assert b"example.com/read" in os.read(reader, 4096)
    observer._outFile.close()
    os.close(reader)


def test_a_sigusr1_handler_already_there_is_kept(tmp_path, usr1):
    chosen = lambda number, frame: None  # noqa: E731
    signal.signal(signal.SIGUSR1, chosen)
    observer = textlog.twistd_observer(twistd_options("-n", "--logfile", str(tmp_path / "twistd.log")))
    observer._outFile.close()
    assert signal.getsignal(signal.SIGUSR1) is chosen


def test_the_plugin_hands_its_observer_to_twistds_application(tmp_path, usr1):
    options = twistd_options("-n", "--logfile", str(tmp_path / "twistd.log"), state_dir=str(tmp_path))
    service = tap.makeService(options.subOptions)
    application = Application("gemfcgi")
    service.setServiceParent(application)
    observer = application.getComponent(ILogObserver)
    assert observer is service.observer
    assert observer._outFile.path == str(tmp_path / "twistd.log")
    observer._outFile.close()


def test_an_observer_already_on_the_application_is_kept():
    application = Application("gemfcgi")
    chosen = []
    application.setComponent(ILogObserver, chosen.append)
    textlog.WithTwistdLog(Service(), textlog.text_observer(io.StringIO())).setServiceParent(application)
    assert application.getComponent(ILogObserver) == chosen.append


@pytest.mark.parametrize("text", ["plain", "with {braces} and {0}", "two\nlines", ""])
def test_a_text_event_reads_the_same_to_any_observer(text):
    logger = Logger(namespace="gemfcgi.test")
    event = textlog.text_event(logger, text)
    seen = []
    Logger(namespace="gemfcgi.test", observer=seen.append).info(text.replace("{", "{{").replace("}", "}}"))
    theirs = twistds_text(seen[0])
    assert twistds_text(event) == theirs
    assert textlog.format_event(textlog.SecondsFormatter())(event) == theirs
    assert event["log_system"] == "gemfcgi.test#info"


def relayed_by_the_parent(number: int, *chunks: bytes) -> list:
    """The events the parent logs for what worker ``number`` writes, in ``chunks``."""
    from twisted.internet.task import Clock

    from gemfcgi import prefork

    class Pool:
        reactor = Clock()

    seen: list = []
    observer = prefork.log.observer
    prefork.log.observer = seen.append
    try:
        worker = prefork.WorkerProcess(Pool(), number, 1)
        for chunk in chunks:
            worker.outReceived(chunk)
        # The last message waits a moment for further lines of its own.
        Pool.reactor.advance(prefork.HELD_MESSAGE_WAIT)
    finally:
        prefork.log.observer = observer
    return seen


def test_a_workers_message_split_between_two_reads_stays_one_event():
    # A FastCGI application's STDERR record of several lines, read by the
    # parent in two pieces: its further lines were events of their own.
    from twisted.logger import formatEvent

    seen = relayed_by_the_parent(
        3,
        b"2026-11-27T01:00:00+0000 [gemfcgi.fastcgi.backends#warn] 127.0.0.1:1 gemini://h/ stderr: L0\n",
        b"\tL1\n\tL2\n2026-11-27T01:00:00+0000 [gemfcgi.access#info] 127.0.0.1:1 GET gemini://h/ 20 x\n",
    )
    assert [formatEvent(event) for event in seen] == [
        "[worker 3] 127.0.0.1:1 gemini://h/ stderr: L0\nL1\nL2",
        "[worker 3] 127.0.0.1:1 GET gemini://h/ 20 x",
    ]


def test_a_workers_line_reaches_the_parents_log_with_its_number_as_before():
    from twisted.logger import formatEvent

    seen = relayed_by_the_parent(3, b"first {line}\nsecond ", b"half\n")
    assert [formatEvent(event) for event in seen] == ["[worker 3] first {line}", "[worker 3] second half"]
    assert all(event["log_system"] == "gemfcgi.prefork#info" for event in seen)


def test_a_workers_line_keeps_the_namespace_and_level_the_worker_logged_it_with():
    from twisted.logger import LogLevel, formatEvent

    seen = relayed_by_the_parent(
        0,
        b"2026-11-27T01:00:00+0000 [gemfcgi.accesslog#error] cannot reopen the access log\n"
        b"2026-11-27T01:00:00+0000 [gemfcgi.fastcgi.client#warn] x: FastCGI backend y: cannot connect\n"
        b"2026-11-27T01:00:00+0000 [gemfcgi.accesslog#info] 127.0.0.1:1 GET gemini://h/ 20 text/gemini\n"
        b"Traceback (most recent call last):\n",
    )
    assert [event["log_level"] for event in seen] == [
        LogLevel.error, LogLevel.warn, LogLevel.info, LogLevel.info,
    ]
    assert seen[0]["log_system"] == "gemfcgi.accesslog#error"
    assert [formatEvent(event) for event in seen][:2] == [
        "[worker 0] cannot reopen the access log",
        "[worker 0] x: FastCGI backend y: cannot connect",
    ]


def test_a_workers_message_of_several_lines_stays_one_event_with_its_level():
    from twisted.logger import LogLevel, formatEvent

    seen = relayed_by_the_parent(
        1,
        b"2026-11-27T01:00:00+0000 [gemfcgi.fastcgi.backends#warn] x stderr: PHP Fatal error: boom\n"
        b"\tStack trace:\n\t#0 {main}\n",
        b"\t  thrown in /srv/x.php on line 8\n"
        b"2026-11-27T01:00:00+0000 [-] GeminiFactory starting on 1965\n",
    )
    # Its last line came in a later read: it still joins the message.
    assert [(event["log_namespace"], event["log_level"]) for event in seen] == [
        ("gemfcgi.fastcgi.backends", LogLevel.warn),
        ("-", LogLevel.info),
    ]
    assert [formatEvent(event) for event in seen] == [
        "[worker 1] x stderr: PHP Fatal error: boom\nStack trace:\n#0 {main}\n  thrown in /srv/x.php on line 8",
        "[worker 1] GeminiFactory starting on 1965",
    ]
    assert [event["log_system"] for event in seen] == ["gemfcgi.fastcgi.backends#warn", "-"]
    # Written by the parent's log, the further lines are indented once, as in one process.
    assert textlog.format_event(textlog.SecondsFormatter())(seen[0]).endswith(
        "boom\n\tStack trace:\n\t#0 {main}\n\t  thrown in /srv/x.php on line 8\n")


# -- printable: what a client or an application sends cannot steer the log ------


def test_escape_sequences_line_feeds_and_overrides_are_shown_as_escapes():
    assert textlog.printable("/a\x1b[31mred\nX") == "/a\\x1b[31mred\\x0aX"
    assert textlog.printable("/a\u202eevil") == "/a\\u202eevil"
    assert textlog.printable("/a\x85b\u2028c\x7f") == "/a\\x85b\\u2028c\\x7f"
    assert textlog.printable("\U000e0041") == "\\U000e0041"


def test_a_backslash_is_doubled_so_that_no_text_passes_for_an_escape():
    assert textlog.printable("/a\\x1b") == "/a\\\\x1b"


def test_ordinary_text_is_kept_as_it_is_unicode_and_spaces_included():
    text = "gemini://example.org/café?Zoë 🙂 a&b=c {0}"
    assert textlog.printable(text) is text


def test_kept_characters_stay():
    assert textlog.printable("one\ttwo\nthree\x1b", keep="\n\t") == "one\ttwo\nthree\\x1b"


@settings(max_examples=300)
@given(st.text())
def test_any_text_becomes_one_printable_line_that_can_be_read_back(text):
    shown = textlog.printable(text)
    assert shown.isprintable()
    assert "\n" not in shown and "\r" not in shown
    assert shown.encode("latin-1", "backslashreplace").decode("unicode_escape") == text


@pytest.mark.parametrize("options, terminal", [
    ({"nodaemon": True, "logfile": None}, True),  # twistd -n
    ({"nodaemon": True, "logfile": "-"}, True),
    ({"nodaemon": True, "logfile": "/var/log/gemfcgi.log"}, False),
    ({"nodaemon": False, "logfile": None}, False),  # a daemon's twistd.log
    ({"nodaemon": True, "syslog": True}, False),
    ({"logFile": "stdout"}, True),  # twist
    ({"logFile": "stderr"}, True),
    ({"logFile": io.StringIO()}, False),  # twist --log-file=FILE
    (None, True),
], ids=["twistd-n", "twistd-n-dash", "twistd-logfile", "daemon", "syslog", "twist", "twist-stderr",
        "twist-log-file", "no-runner"])
def test_a_start_knows_whether_its_log_is_where_standard_error_goes(options, terminal, monkeypatch):
    # A start's configuration warnings go to the log too where it is not:
    # twist's --log-file had none of them.
    from gemfcgi.textlog import logs_to_the_terminal

    monkeypatch.setattr(sys, "stdout", sys.stderr)  # one terminal for both
    if options and options.get("logFile") in ("stdout", "stderr"):
        options = {"logFile": getattr(sys, options["logFile"])}
    assert logs_to_the_terminal(options) is terminal


def test_a_log_file_that_is_standard_errors_file_is_the_terminal(tmp_path, monkeypatch):
    # --logfile=/dev/stderr, or the file standard error is sent to: what is
    # printed there at the start is in the log already.
    from gemfcgi.textlog import logs_to_the_terminal

    shared, other = tmp_path / "shared.log", tmp_path / "other.log"
    other.write_text("")
    with shared.open("w") as standard_error, other.open("a") as other_file:
        monkeypatch.setattr(sys, "stderr", standard_error)
        assert logs_to_the_terminal({"nodaemon": True, "logfile": str(shared)})
        assert not logs_to_the_terminal({"nodaemon": True, "logfile": str(other)})
        assert not logs_to_the_terminal({"nodaemon": True, "logfile": str(tmp_path / "new.log")})
        assert not logs_to_the_terminal({"nodaemon": False, "logfile": str(shared)})
        with shared.open("a") as same_file:
            assert logs_to_the_terminal({"logFile": same_file})  # twist --log-file
        assert not logs_to_the_terminal({"logFile": other_file})
        # twistd -n logs to standard output: sent apart (>out 2>err), the
        # warnings printed to standard error never reached the log.
        monkeypatch.setattr(sys, "stdout", other_file)
        assert not logs_to_the_terminal({"nodaemon": True, "logfile": "-"})
        monkeypatch.setattr(sys, "stdout", standard_error)
        assert logs_to_the_terminal({"nodaemon": True, "logfile": "-"})


@pytest.mark.parametrize("where", ["/dev/stderr", "/dev/fd/2", "/proc/self/fd/2", "link", "fifo"])
def test_a_log_file_that_is_no_regular_file_is_never_rotated(where, tmp_path):
    # twistd's file renamed /dev/stderr itself at SIGUSR1 (and at 1 MB),
    # and sought in a pipe: a traceback at the start under 2>&1 | cat.
    from gemfcgi.textlog import rotatable

    if where == "link":
        (tmp_path / "mystderr").symlink_to("/proc/self/fd/2")
        where = str(tmp_path / "mystderr")
    elif where == "fifo":
        os.mkfifo(tmp_path / "fifo")
        where = str(tmp_path / "fifo")
    assert not rotatable(where)


def test_a_regular_log_file_or_one_not_made_yet_is_rotated(tmp_path):
    from gemfcgi.textlog import rotatable

    (tmp_path / "twistd.log").write_text("")
    (tmp_path / "current.log").symlink_to(tmp_path / "twistd.log")
    for path in ("twistd.log", "current.log", "new.log"):
        assert rotatable(str(tmp_path / path)), path


def test_one_of_a_kind_is_said_in_the_singular():
    from gemfcgi.textlog import LogLimiter

    assert LogLimiter.dropped_note(1) == " (1 more such failure not logged)"
    assert LogLimiter.dropped_note(2) == " (2 more such failures not logged)"
    assert LogLimiter.dropped_note(0) == ""


def test_a_log_file_naming_standard_error_that_is_a_socket_writes_to_it(tmp_path, monkeypatch):
    # systemd's journal as standard error is a socket, which Linux does not
    # open again through /proc/self/fd: the start ended in a traceback.
    import socket

    from gemfcgi.textlog import twistd_observer

    ours, journal = socket.socketpair()
    with ours, journal, ours.makefile("w") as standard_error:
        monkeypatch.setattr(sys, "stderr", standard_error)
        link = tmp_path / "stderr"
        link.symlink_to(f"/proc/self/fd/{ours.fileno()}")
        observer = twistd_observer({"nodaemon": True, "logfile": str(link)})
        observer({"log_format": "hello journal", "log_time": 0.0, "log_level": None,
                  "log_namespace": "test", "log_system": "-"})
        standard_error.flush()
        journal.settimeout(5)
        assert b"hello journal" in journal.recv(4096)


def test_a_removed_log_file_is_made_anew_only_where_nothing_took_its_place(tmp_path, usr1):
    # A link put where it was: the log was written wherever it led; one that
    # led nowhere that could be made ended all logging, without a word.
    import os

    path = tmp_path / "twistd.log"
    observer = textlog.twistd_observer(twistd_options("-n", "--logfile", str(path)))
    observer(access_event("gemini://example.com/before"))
    path.unlink()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere" / "planted.txt", path)
    send_usr1()
    observer(access_event("gemini://example.com/kept"))
    assert not (tmp_path / "elsewhere" / "planted.txt").exists()
    os.symlink(tmp_path / "none" / "x.log", tmp_path / "dangling")
    path.unlink()
    os.rename(tmp_path / "dangling", path)
    send_usr1()
    path.unlink()
    send_usr1()
    observer(access_event("gemini://example.com/after"))
    observer._outFile.close()
    assert "example.com/after" in path.read_text()


def rotate_with_a_link_planted(log_file, path, target) -> None:
    """``log_file.rotate()``, another user putting a link to ``target`` at ``path`` right after its rename."""
    import os

    real_rename = os.rename

    def rename_then_plant(source, destination):
        real_rename(source, destination)
        if str(source) == str(path):
            os.symlink(target, path)

    os.rename = rename_then_plant
    try:
        log_file.rotate()
    finally:
        os.rename = real_rename


def test_a_rotation_never_opens_the_new_log_file_through_a_link_put_in_its_place(tmp_path, usr1):
    # Between twistd's rename and its open, another user's link at the
    # name had the file it led to truncated and the log written into it.
    path = tmp_path / "twistd.log"
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    log_file = textlog.AppendingLogFile.fromFullPath(str(path))
    log_file.write("before\n")
    rotate_with_a_link_planted(log_file, path, precious)
    log_file.write("after\n")
    log_file.close()
    assert precious.read_text() == "keep me\n"
    assert (tmp_path / "twistd.log.1").read_text() == "before\nafter\n"


def test_a_link_leading_nowhere_put_at_the_log_files_name_does_not_stop_its_rotations(tmp_path):
    # It won the race after a rename: every rotation after it returned at
    # once, and the file renamed before it grew without bound.
    import os

    path = tmp_path / "twistd.log"
    log_file = textlog.AppendingLogFile.fromFullPath(str(path))
    log_file.write("first\n")
    rotate_with_a_link_planted(log_file, path, tmp_path / "nowhere" / "x")
    log_file.write("second\n")
    log_file.rotate()
    log_file.write("third\n")
    log_file.close()
    assert not os.path.islink(path) and path.read_text() == "third\n"
    assert (tmp_path / "twistd.log.1").read_text() == "first\nsecond\n"
