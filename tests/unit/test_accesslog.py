"""gmid's access-log styles, field by field."""

import re

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
