"""
Long coverage-guided fuzzing of the three parsers, with atheris.

    pip install atheris
    python tests/fuzz/run.py request -max_total_time=600
    python tests/fuzz/run.py config -max_total_time=600
    python tests/fuzz/run.py fastcgi -max_total_time=600

Each target feeds arbitrary bytes to one parser and fails on anything but
the parser's own error, on an answer that breaks the parser's promises, or
(through libFuzzer's -timeout) on a loop. The test suite runs the same
properties with hypothesis, bounded; this is the long run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris  # noqa: E402

with atheris.instrument_imports():
    from gemfcgi.config import ConfigError, parse_config
    from gemfcgi.fastcgi.records import FastCGIProtocolError, RecordDecoder, decode_pairs, encode_pairs
    from gemfcgi.fastcgi.reply import ReplyHeaderReader
    from gemfcgi.gemini.request import RequestError, parse_request_line


def request_target(data: bytes) -> None:
    try:
        request = parse_request_line(data)
    except RequestError as error:
        assert error.code in (53, 59)
        return
    assert request.path.startswith("/")
    assert "\x00" not in request.path and "/../" not in request.path + "/"


def config_target(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        parse_config(text, filename="fuzz.conf")
    except ConfigError as error:
        assert all(d.line >= 1 for d in error.diagnostics)


def fastcgi_target(data: bytes) -> None:
    decoder = RecordDecoder()
    middle = len(data) // 2
    try:
        records = decoder.feed(data[:middle]) + decoder.feed(data[middle:])
    except FastCGIProtocolError:
        return
    for record in records:
        assert len(record.content) <= 65535
    try:
        pairs = decode_pairs(data)
    except FastCGIProtocolError:
        pass
    else:
        assert decode_pairs(encode_pairs(pairs)) == pairs
    reader = ReplyHeaderReader()
    if reader.feed(data) is None:
        reader.end()


TARGETS = {"request": request_target, "config": config_target, "fastcgi": fastcgi_target}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
