"""gmid's access-log styles, field by field."""

import os
import pwd
import re
import stat
import time

import pytest

from gemfcgi.accesslog import format_line

EVENT = {
    "log_time": 1700000000.0,
    "client": "192.0.2.7:40001",
    "client_ip": "192.0.2.7",
    "client_port": 40001,
    "url": "gemini://example.com/page?q",
    "host": "example.com",
    "status": 20,
    "meta": "text/gemini",
    "request_bytes": 29,
    "bytes_sent": 1234,
    "duration_ms": 12.34,
    "common_name": "alice",
}

def emitted(record) -> dict:
    """The access event ``accesslog.emit`` publishes for ``record``, ended at 100.5."""
    from gemfcgi import accesslog

    seen = []
    observer = accesslog.log.observer
    accesslog.log.observer = seen.append
    try:
        accesslog.emit(record, 100.5)
    finally:
        accesslog.log.observer = observer
    [event] = seen
    return event


TIME = r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}"


def test_legacy_style_is_gmids_line():
    assert format_line("legacy", EVENT) == "192.0.2.7:40001 GET gemini://example.com/page?q 20 text/gemini"


def test_common_style_has_host_ip_cn_time_url_code_and_bytes():
    line = format_line("common", EVENT)
    assert re.fullmatch(
        rf'example\.com 192\.0\.2\.7 - alice {TIME} "gemini://example\.com/page\?q" 20 1234 12\.3ms',
        line,
    ), line


def test_combined_style_brackets_the_time_and_ends_with_referer_and_agent():
    line = format_line("combined", EVENT)
    assert re.fullmatch(
        rf'192\.0\.2\.7 - alice \[{TIME}\] "gemini://example\.com/page\?q" 20 1234 "-" "" 12\.3ms',
        line,
    ), line


def test_condensed_style_has_rfc3339_time_and_both_sizes():
    line = format_line("condensed", EVENT)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d 192\.0\.2\.7 alice example\.com "
        r"gemini://example\.com/page\?q 29 1234 20 text/gemini 12\.3ms",
        line,
    ), line


@pytest.mark.parametrize("style", ["common", "combined", "condensed"])
def test_a_long_downloads_line_is_dated_when_it_was_asked_for_not_when_it_ended(style):
    """Written at the end of a ten-minute download, the line shows when the request came."""
    from gemfcgi import accesslog

    asked = 1700000000.0
    event = emitted(accesslog.AccessRecord(
        client_ip="192.0.2.7", client_port=40001, url="gemini://example.com/big", status=20,
        meta="application/octet-stream", bytes_sent=10, started=asked, finished=asked + 600,
    ))
    event["log_time"] = asked + 600
    line = format_line(style, event)
    if style == "condensed":
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(asked))
    else:
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(asked))
    assert stamp in line, line
    assert "600000.0ms" in line


def test_the_twistd_log_shows_the_line_as_is_braces_included():
    from twisted.logger import formatEventAsClassicLogText

    from gemfcgi import accesslog

    text = formatEventAsClassicLogText(emitted(accesslog.AccessRecord(
        client_ip="192.0.2.7", client_port=40001, url="gemini://example.com/{x}?{0}", status=20,
        meta="text/gemini", bytes_sent=1234, started=100.0,
    )))
    assert text.endswith(
        " [gemfcgi.access#info] 192.0.2.7:40001 GET gemini://example.com/{x}?{0} 20 text/gemini "
        "1234 500.0ms\n"
    )


def test_an_applications_meta_and_a_certificates_name_cannot_write_controls_into_the_log():
    from gemfcgi import accesslog

    event = emitted(accesslog.AccessRecord(
        client_ip="192.0.2.7", client_port=40001, url="gemini://example.com/", status=20,
        meta="text/gemini\x1b[2J", bytes_sent=3, started=100.0, common_name="Mallory\n192.0.2.8",
    ))
    assert event["line"] == "192.0.2.7:40001 GET gemini://example.com/ 20 text/gemini\\x1b[2J 3 500.0ms"
    assert format_line("common", event).startswith("- 192.0.2.7 - Mallory\\x0a192.0.2.8 ")


def access_event(url: str) -> dict:
    from gemfcgi import accesslog

    return emitted(accesslog.AccessRecord(
        client_ip="192.0.2.7", client_port=40001, url=url, status=20, meta="text/gemini",
        started=100.0,
    ))


def test_a_file_that_cannot_be_reopened_is_named_in_one_error_and_the_old_one_kept(tmp_path):
    from twisted.logger import LogLevel, capturedLogs, formatEvent

    from gemfcgi import accesslog
    from gemfcgi.config import model

    logs = tmp_path / "logs"
    logs.mkdir()
    writer = accesslog.AccessLogWriter(
        model.LogSettings(access=str(logs / "access.log"), syslog=False)
    )
    writer(access_event("gemini://example.com/before"))
    # Rotated away with its directory: the path can no longer be created,
    # as for a worker without the right to create files in the directory.
    logs.rename(tmp_path / "rotated")
    with capturedLogs() as seen:
        reopened = writer.reopen()
    writer(access_event("gemini://example.com/after"))
    writer.close()
    errors = [formatEvent(e) for e in seen if e["log_level"] >= LogLevel.warn]
    assert reopened is False
    assert errors == [
        f"cannot reopen the access log {logs / 'access.log'}: No such file or directory; "
        "still writing to the file opened before"
    ]
    kept = (tmp_path / "rotated" / "access.log").read_text()
    assert "example.com/before" in kept and "example.com/after" in kept


def test_reopen_moves_to_the_new_file(tmp_path):
    from gemfcgi import accesslog
    from gemfcgi.config import model

    path = tmp_path / "access.log"
    writer = accesslog.AccessLogWriter(model.LogSettings(access=str(path), syslog=False))
    writer(access_event("gemini://example.com/before"))
    path.rename(tmp_path / "access.log.1")
    assert writer.reopen() is True
    writer(access_event("gemini://example.com/after"))
    writer.close()
    assert "example.com/after" in path.read_text()
    assert "example.com/after" not in (tmp_path / "access.log.1").read_text()


def listening_syslog(path):
    import socket

    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    daemon.bind(str(path))
    daemon.settimeout(5)
    return daemon


def test_syslog_lines_carry_gemfcgis_name_and_facility_and_leave_the_programs_alone(
    tmp_path, monkeypatch
):
    import os
    import syslog

    from gemfcgi import accesslog
    from gemfcgi.config import model

    # The C library's identity is the whole process's: the embedding
    # program's own syslog lines keep their name.
    touched = []
    for name in ("openlog", "syslog", "closelog"):
        monkeypatch.setattr(syslog, name, lambda *args, name=name: touched.append(name))
    daemon = listening_syslog(tmp_path / "log")
    writer = accesslog.AccessLogWriter(
        model.LogSettings(syslog=True, facility="local3"), syslog_socket=str(tmp_path / "log")
    )
    writer(access_event("gemini://example.com/page"))
    assert touched == []
    line = daemon.recv(4096).decode()
    priority = syslog.LOG_LOCAL3 | syslog.LOG_NOTICE
    assert re.fullmatch(
        rf"<{priority}>[A-Z][a-z]{{2}} [ \d]\d \d\d:\d\d:\d\d gemfcgi\[{os.getpid()}\]: "
        r"192\.0\.2\.7:40001 GET gemini://example\.com/page 20 text/gemini",
        line,
    ), line
    writer.close()
    daemon.close()


def test_a_syslog_daemon_that_restarted_gets_the_next_line(tmp_path):
    import syslog

    from twisted.logger import LogLevel, capturedLogs, formatEvent

    from gemfcgi.syslogsend import RECONNECT_EVERY, SyslogSender

    now = [0.0]
    path = tmp_path / "log"
    daemon = listening_syslog(path)
    sender = SyslogSender("gemfcgi", syslog.LOG_DAEMON, str(path), clock=lambda: now[0])
    daemon.close()
    path.unlink()
    with capturedLogs() as seen:
        sender.send(syslog.LOG_NOTICE, "lost")
        daemon = listening_syslog(path)
        sender.send(syslog.LOG_NOTICE, "lost too: the next try is a second away")
        now[0] += RECONNECT_EVERY
        sender.send(syslog.LOG_NOTICE, "after")
    assert daemon.recv(4096).decode().endswith(": after")
    assert [formatEvent(e) for e in seen if e["log_level"] >= LogLevel.info] == [
        f"syslog: access lines do not reach {path} (No such file or directory); "
        "they are dropped until it takes them again",
        f"syslog: access lines reach {path} again; 2 lines dropped",
    ]
    sender.close()
    daemon.close()


def test_without_a_syslog_daemon_a_connect_is_tried_once_a_second_not_per_line(tmp_path, monkeypatch):
    import socket
    import syslog
    import types

    from gemfcgi import syslogsend

    sockets = []

    def counted(*args):
        sockets.append(args)
        return socket.socket(*args)

    monkeypatch.setattr(syslogsend, "socket", types.SimpleNamespace(
        socket=counted, AF_UNIX=socket.AF_UNIX, SOCK_DGRAM=socket.SOCK_DGRAM))
    now = [0.0]
    sender = syslogsend.SyslogSender("gemfcgi", syslog.LOG_DAEMON, str(tmp_path / "none"),
                                     clock=lambda: now[0])
    for _ in range(100):
        sender.send(syslog.LOG_NOTICE, "nobody listens")
    now[0] += syslogsend.RECONNECT_EVERY
    sender.send(syslog.LOG_NOTICE, "nobody listens")
    assert len(sockets) == 2 and sender.dropped == 101


def test_each_service_writes_its_own_requests_only(tmp_path):
    from gemfcgi import accesslog
    from gemfcgi.config import model

    one, two = object(), object()
    writers = {
        name: accesslog.AccessLogWriter(
            model.LogSettings(access=str(tmp_path / f"{name}.log"), syslog=False), service=service
        )
        for name, service in (("one", one), ("two", two))
    }
    for service, url in ((one, "gemini://one.example/"), (two, "gemini://two.example/")):
        event = access_event(url)
        event["service"] = service
        for writer in writers.values():
            writer(event)
    for writer in writers.values():
        writer.close()
    assert "one.example" in (tmp_path / "one.log").read_text()
    assert "two.example" not in (tmp_path / "one.log").read_text()
    assert "two.example" in (tmp_path / "two.log").read_text()
    assert "one.example" not in (tmp_path / "two.log").read_text()


def test_a_file_that_cannot_take_lines_is_said_once_not_per_request(tmp_path):
    import os

    import pytest
    from twisted.logger import LogLevel, capturedLogs, formatEvent

    from gemfcgi import accesslog
    from gemfcgi.config import model

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    # /dev/full answers every write as a full disk does.
    writer = accesslog.AccessLogWriter(model.LogSettings(access="/dev/full", syslog=False))
    with capturedLogs() as seen:
        for number in range(3):
            writer(access_event(f"gemini://example.com/{number}"))
        writer.path = str(tmp_path / "access.log")
        assert writer.reopen()
        writer(access_event("gemini://example.com/after"))
    writer.close()
    assert [formatEvent(e) for e in seen if e["log_level"] >= LogLevel.info] == [
        "cannot write to the access log /dev/full: No space left on device; "
        "its lines are lost until it can be written again",
        f"the access log {tmp_path / 'access.log'} is written again; 3 lines could not be",
    ]
    assert "example.com/after" in (tmp_path / "access.log").read_text()


def test_a_fifo_reader_that_stalls_costs_lines_not_the_server(tmp_path):
    # The file was written blocking: once a stopped reader's pipe was full
    # (64 KiB), the next line stopped the whole server, handshakes too.
    from twisted.internet.task import Clock
    from twisted.logger import LogLevel, capturedLogs, formatEvent

    from gemfcgi import accesslog
    from gemfcgi.config import model

    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    clock = Clock()
    writer = accesslog.AccessLogWriter(model.LogSettings(access=str(fifo), syslog=False), reactor=clock)
    line = len(format_line("legacy", access_event("gemini://example.com/0000")).encode()) + 1
    fits = 65536 // line
    with capturedLogs() as seen:
        # What the pipe takes, then as much again, held: nothing waits.
        for number in range(2 * fits):
            writer(access_event(f"gemini://example.com/{number:04}"))
        taken = b""
        while len(taken) < 2 * fits * line:
            try:
                taken += os.read(reader, 65536)
            except BlockingIOError:
                clock.advance(accesslog.OFFER_AGAIN)
        assert [int(row.split()[2][-4:]) for row in taken.decode().splitlines()] == list(range(2 * fits))
        # A reader that takes nothing: past what is held for it, lines are
        # lost, and counted once it reads again.
        for number in range(40 * fits):
            writer(access_event(f"gemini://example.com/{number:04}"))
        for _ in range(1000):
            try:
                os.read(reader, 1 << 20)
            except BlockingIOError:
                clock.advance(accesslog.OFFER_AGAIN)
        writer(access_event("gemini://example.com/after"))
        assert os.read(reader, 4096).decode().endswith("gemini://example.com/after 20 text/gemini\n")
    writer.close()
    os.close(reader)
    said = [formatEvent(e) for e in seen if e["log_level"] >= LogLevel.info]
    assert len(said) == 2, said
    assert said[0].startswith(f"cannot write to the access log {fifo}: its reader has not taken the last ")
    lost = int(re.search(r"; (\d+) lines could not be$", said[1]).group(1))
    assert said[1].startswith(f"the access log {fifo} is written again") and 0 < lost < 40 * fits


def test_lines_held_for_a_fifo_reader_are_offered_once_more_at_the_close_and_the_rest_counted(tmp_path):
    # A stop or a reload dropped the held lines without a word.
    from twisted.internet.task import Clock
    from twisted.logger import LogLevel, capturedLogs, formatEvent

    from gemfcgi import accesslog
    from gemfcgi.config import model

    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = accesslog.AccessLogWriter(model.LogSettings(access=str(fifo), syslog=False), reactor=Clock())
    line = len(format_line("legacy", access_event("gemini://example.com/0000")).encode()) + 1
    count = 3 * (65536 // line)
    with capturedLogs() as seen:
        for number in range(count):
            writer(access_event(f"gemini://example.com/{number:04}"))
        taken = os.read(reader, 1 << 20)  # the reader takes one pipe's worth, then stalls
        writer.close()
    taken += os.read(reader, 1 << 20)  # what the last offer put in the pipe
    os.close(reader)
    said = [formatEvent(e) for e in seen if e["log_level"] >= LogLevel.info]
    arrived = taken.count(b"\n")
    assert said[-1] == (f"the access log {fifo} is closed with {count - arrived} lines not "
                        "written: its reader took no more, or it could not be written")
    assert arrived > 65536 // line  # the last offer was taken


def test_syslog_lines_still_arrive_once_the_socket_path_is_out_of_reach(tmp_path):
    # Workers enter their chroot after the writer is made, and find no
    # /dev/log there: the socket is connected before, and stays.
    import syslog

    from gemfcgi.syslogsend import SyslogSender

    path = tmp_path / "log"
    daemon = listening_syslog(path)
    sender = SyslogSender("gemfcgi", syslog.LOG_DAEMON, str(path))
    path.unlink()
    sender.send(syslog.LOG_NOTICE, "from inside the chroot")
    assert daemon.recv(4096).decode().endswith(": from inside the chroot")
    sender.close()
    daemon.close()


def test_a_line_too_long_for_a_datagram_is_dropped_and_the_connection_kept(tmp_path):
    import syslog

    from twisted.logger import LogLevel, capturedLogs, formatEvent

    from gemfcgi.syslogsend import SyslogSender

    path = tmp_path / "log"
    daemon = listening_syslog(path)
    sender = SyslogSender("gemfcgi", syslog.LOG_DAEMON, str(path))
    path.unlink()  # as in a chroot: a new connection could not be made
    with capturedLogs() as seen:
        sender.send(syslog.LOG_NOTICE, "x" * (8 * 1024 * 1024))
        assert sender.dropped == 1
        sender.send(syslog.LOG_NOTICE, "the next line")
    assert daemon.recv(4096).decode().endswith(": the next line")
    assert [formatEvent(e) for e in seen if e["log_level"] >= LogLevel.info] == [
        f"syslog: access lines do not reach {path} (Message too long); they are dropped "
        "until it takes them again",
        f"syslog: access lines reach {path} again; 1 line dropped",
    ]
    sender.close()
    daemon.close()


def test_syslog_short_of_descriptors_drops_the_line_and_says_so_once(tmp_path, monkeypatch):
    import socket
    import syslog
    import types

    from twisted.logger import LogLevel, capturedLogs, formatEvent

    from gemfcgi import syslogsend

    def no_descriptor(*args):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(syslogsend, "socket", types.SimpleNamespace(
        socket=no_descriptor, AF_UNIX=socket.AF_UNIX, SOCK_DGRAM=socket.SOCK_DGRAM))
    now = [0.0]
    with capturedLogs() as seen:
        sender = syslogsend.SyslogSender("gemfcgi", syslog.LOG_DAEMON, str(tmp_path / "log"),
                                         clock=lambda: now[0])
        for _ in range(3):
            now[0] += syslogsend.RECONNECT_EVERY
            sender.send(syslog.LOG_NOTICE, "a line")
    assert sender.dropped == 3
    assert [formatEvent(e) for e in seen if e["log_level"] >= LogLevel.info] == [
        f"syslog: access lines do not reach {tmp_path / 'log'} (Too many open files); "
        "they are dropped until it takes them again",
    ]


def test_syslog_timestamps_have_the_c_librarys_form_with_english_months():
    import time

    from gemfcgi.syslogsend import timestamp

    when = time.mktime((2026, 3, 5, 7, 8, 9, 0, 0, -1))
    assert timestamp(when) == "Mar  5 07:08:09"


def test_a_line_that_went_in_partly_leaves_the_next_on_a_line_of_its_own(tmp_path, monkeypatch):
    import os

    from gemfcgi import accesslog
    from gemfcgi.config import model

    path = tmp_path / "access.log"
    writer = accesslog.AccessLogWriter(model.LogSettings(access=str(path), syslog=False))
    real_write = os.write
    calls = []

    def disk_fills_up(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[:10])  # part of the line, then the disk is full
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(accesslog.os, "write", disk_fills_up)
    writer(access_event("gemini://example.com/torn"))
    writer(access_event("gemini://example.com/whole"))
    writer.close()
    lines = path.read_text().splitlines()
    assert lines[0] == "192.0.2.7:"
    assert lines[1].startswith("192.0.2.7:40001 GET gemini://example.com/whole ")


def test_a_reload_keeps_the_syslog_connection_and_says_an_outage_once(tmp_path):
    from twisted.logger import LogLevel, capturedLogs, formatEvent

    from gemfcgi import accesslog
    from gemfcgi.config import model

    settings = model.LogSettings(syslog=True)
    with capturedLogs() as seen:
        for reload in range(3):  # each reload makes a writer anew
            writer = accesslog.AccessLogWriter(settings, syslog_socket=str(tmp_path / "none"))
            writer(access_event(f"gemini://example.com/{reload}"))
            writer.close()
    assert [formatEvent(e) for e in seen if e["log_level"] >= LogLevel.warn] == [
        f"syslog: access lines do not reach {tmp_path / 'none'} (No such file or directory); "
        "they are dropped until it takes them again"
    ]


@pytest.mark.parametrize(
    "name, logged",
    [
        ("Zoë", "Zoë"),
        ("x\x1b[31mred", "x\\x1b[31mred"),
        ("x\\x1B[31mred", "x\\\\x1B[31mred"),  # the text of an escape: not the same line
        ("a/CN=b,O=c", "a/CN=b,O=c"),
        ("x+CN=admin", "x+CN=admin"),
        ("Alice Smith", "Alice\\x20Smith"),
        ('say "hi"', "say\\x20\\x22hi\\x22"),
    ],
)
def test_a_client_certificates_name_is_logged_as_written_escaped_once_in_one_field(name, logged):
    from gemfcgi import accesslog
    from gemfcgi.certificates import ClientCertificate
    from tests.certs import issue

    certificate = ClientCertificate.from_certificate(issue(name)[0])
    event = emitted(accesslog.AccessRecord(
        client_ip="192.0.2.7", client_port=40001, url="gemini://example.com/", status=20,
        meta="text/gemini", bytes_sent=3, started=100.0, common_name=certificate.common_name,
    ))
    assert event["common_name"] == logged
    assert format_line("condensed", event).split(" ")[2] == logged


def test_a_daemon_falling_behind_again_and_again_is_said_once_a_minute(tmp_path):
    import syslog

    from twisted.logger import LogLevel, capturedLogs, formatEvent

    from gemfcgi.syslogsend import REPORT_EVERY, SyslogSender

    now = [0.0]
    sender = SyslogSender("gemfcgi", syslog.LOG_DAEMON, str(tmp_path / "log"), clock=lambda: now[0])
    outcomes = iter([False, True] * 50)
    sender._deliver = lambda data: next(outcomes)  # behind, caught up, fifty times in a second
    with capturedLogs() as seen:
        for _ in range(100):
            sender.send(syslog.LOG_NOTICE, "a line")
        now[0] += REPORT_EVERY
        sender._deliver = lambda data: True
        sender.send(syslog.LOG_NOTICE, "a line")
    path = tmp_path / "log"
    assert [formatEvent(e) for e in seen if e["log_level"] >= LogLevel.info] == [
        f"syslog: access lines do not reach {path} (No such file or directory); they are dropped "
        "until it takes them again",
        f"syslog: access lines reach {path} again; 1 line dropped",
        f"syslog: access lines reach {path} again; 49 lines dropped",
    ]


def test_an_access_file_that_is_a_fifo_nobody_reads_is_refused_at_once(tmp_path):
    # Opening it waited for a reader: the server froze as it started.
    import os

    from gemfcgi import accesslog
    from gemfcgi.config import model

    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    settings = model.LogSettings(access=str(fifo), syslog=False)
    with pytest.raises(OSError) as raised:
        accesslog.AccessLogWriter(settings)
    assert raised.value.strerror == "a FIFO that no process reads"
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        writer = accesslog.AccessLogWriter(settings)
        writer(access_event("gemini://example.com/through-the-fifo"))
        writer.close()
        assert b"through-the-fifo" in os.read(reader, 4096)
    finally:
        os.close(reader)


def test_an_access_file_that_is_a_unix_socket_is_said_to_be_one(tmp_path):
    # /dev/stdout under systemd's journal: it was "a FIFO that no process reads".
    import socket

    from gemfcgi import accesslog
    from gemfcgi.check import access_log_problem
    from gemfcgi.config import model

    path = tmp_path / "log.sock"
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(path))
    try:
        with pytest.raises(OSError) as raised:
            accesslog.AccessLogWriter(model.LogSettings(access=str(path), syslog=False))
        assert raised.value.strerror == accesslog.UNIX_SOCKET_LOG
        assert access_log_problem(str(path)) == accesslog.UNIX_SOCKET_LOG
    finally:
        listening.close()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file away needs root (CI runs as root)")
def test_an_access_file_made_for_a_worker_is_its_user_s_and_one_that_was_there_keeps_its_owner(tmp_path):
    # A worker opens the file as root, then reopens it at SIGUSR1 as its
    # user: a file root made with mode 0600 could not be reopened.
    from gemfcgi.accesslog import open_for_lines

    nobody = pwd.getpwnam("nobody")
    owner = (nobody.pw_uid, nobody.pw_gid)
    made = tmp_path / "made.log"
    os.close(open_for_lines(str(made), owner))
    assert (made.stat().st_uid, made.stat().st_gid) == owner
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    there = tmp_path / "there.log"
    there.write_text("")
    os.close(open_for_lines(str(there), owner))
    assert there.stat().st_uid == 0


def test_an_access_file_that_cannot_be_given_away_is_still_opened_and_said(tmp_path, monkeypatch):
    # Not root, say: lines go to the file all the same, and the warning says
    # why a SIGUSR1 as the worker's user may fail to reopen it.
    from twisted.logger import capturedLogs, formatEvent

    from gemfcgi.accesslog import open_for_lines

    def refused(fd, uid, gid):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", refused)
    made = tmp_path / "made.log"
    with capturedLogs() as logs:
        fd = open_for_lines(str(made), (12345, 12345))
    os.write(fd, b"a line\n")
    os.close(fd)
    assert made.read_bytes() == b"a line\n"
    assert [formatEvent(e) for e in logs] == [
        f"cannot give the access log {made} to uid 12345: Operation not permitted"]
