"""
FastCGI 1.0 records, encoded and decoded without any I/O.

The web-server side (our client) and the application side (our test and demo
applications) share this one codec, so both ends of every test speak exactly
the bytes the specification describes and nothing here can drift between them.

A record is an 8-byte header (version, type, request id, content length,
padding length, reserved) followed by the content and the padding. Streams
(PARAMS, STDIN, STDOUT, STDERR, DATA) are sequences of records of the same
type and request id, ended by one with empty content; their content is one
byte stream, so record boundaries carry no meaning inside it.

``RecordDecoder`` is a state machine in the manner of h11: feed it bytes in
any fragmentation and it returns the complete records, keeping the rest. Only
``FastCGIProtocolError`` ever escapes it, so a caller can turn whatever a
backend sends into one error path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Iterable

VERSION_1 = 1
HEADER_LENGTH = 8
MAX_CONTENT_LENGTH = 0xFFFF
MAX_NV_LENGTH = 0x7FFFFFFF
NULL_REQUEST_ID = 0
KEEP_CONN = 1  # FCGI_KEEP_CONN, the only flag of BEGIN_REQUEST

# Names a GET_VALUES record may ask for (specification section 4.1).
MAX_CONNS = b"FCGI_MAX_CONNS"
MAX_REQS = b"FCGI_MAX_REQS"
MPXS_CONNS = b"FCGI_MPXS_CONNS"

_HEADER = struct.Struct(">BBHHBx")
_BEGIN_REQUEST_BODY = struct.Struct(">HB5x")
_END_REQUEST_BODY = struct.Struct(">IB3x")
_UNKNOWN_TYPE_BODY = struct.Struct(">B7x")
_LONG_LENGTH = struct.Struct(">I")
_LONG_LENGTH_FLAG = 0x80000000


class RecordType(IntEnum):
    BEGIN_REQUEST = 1
    ABORT_REQUEST = 2
    END_REQUEST = 3
    PARAMS = 4
    STDIN = 5
    STDOUT = 6
    STDERR = 7
    DATA = 8
    GET_VALUES = 9
    GET_VALUES_RESULT = 10
    UNKNOWN_TYPE = 11


_KNOWN_TYPES = {member.value: member for member in RecordType}


class Role(IntEnum):
    RESPONDER = 1
    AUTHORIZER = 2
    FILTER = 3


class ProtocolStatus(IntEnum):
    REQUEST_COMPLETE = 0
    CANT_MPX_CONN = 1
    OVERLOADED = 2
    UNKNOWN_ROLE = 3


class ParamTooLong(ValueError):
    """
    A name-value pair that no PARAMS record can hold whole (over 65535
    bytes encoded). It is not split across records: some applications
    (flup) decode each record's pairs on their own, and would read the
    rest of a value, which a client may choose, as pairs of its own.
    """

    def __init__(self, name: bytes, length: int) -> None:
        super().__init__(
            f"parameter {name.decode('latin-1')!r} is {length} bytes encoded, "
            f"more than a record holds ({MAX_CONTENT_LENGTH})"
        )
        self.name = name
        self.length = length


class FastCGIProtocolError(Exception):
    """
    Bytes from a peer that do not follow the FastCGI specification.

    ``records`` holds the complete records the failing ``feed`` decoded
    before the error, so a caller can still act on an END_REQUEST that
    arrived in the same chunk as the garbage after it.
    """

    def __init__(self, message: str, records: list[Record] | None = None) -> None:
        super().__init__(message)
        self.records = records or []


@dataclass(frozen=True)
class Record:
    """
    One record: its type, request id and content, without padding.

    ``type`` is a ``RecordType`` when the type is one the specification
    defines and a plain ``int`` otherwise: the decoder accepts unknown types
    so that an application can answer them with UNKNOWN_TYPE, as section 4.2
    asks, and a client can name them in its error.
    """

    type: int
    request_id: int
    content: bytes = b""

    def encode(self) -> bytes:
        """The record on the wire, padded so the next header is 8-byte aligned."""
        return _encode_record(self.type, self.request_id, self.content)


# The padding a record may need (0 to 7 bytes), made once.
_PADDING = [bytes(count) for count in range(8)]


def _encode_record(record_type: int, request_id: int, content: bytes) -> bytes:
    if not 0 <= request_id <= 0xFFFF:
        raise ValueError(f"request id {request_id} does not fit in 16 bits")
    if not 0 <= record_type <= 0xFF:
        raise ValueError(f"record type {record_type} does not fit in 8 bits")
    length = len(content)
    if length > MAX_CONTENT_LENGTH:
        raise ValueError(f"record content is {length} bytes, more than {MAX_CONTENT_LENGTH}")
    padding = -length % 8
    header = _HEADER.pack(VERSION_1, record_type, request_id, length, padding)
    return header + content + _PADDING[padding]


@dataclass(frozen=True)
class BeginRequest:
    """The body of BEGIN_REQUEST: which role the application plays, and flags."""

    role: int
    flags: int = 0

    @property
    def keep_conn(self) -> bool:
        return bool(self.flags & KEEP_CONN)

    def encode(self) -> bytes:
        return _BEGIN_REQUEST_BODY.pack(self.role, self.flags)

    @classmethod
    def decode(cls, content: bytes) -> BeginRequest:
        if len(content) != _BEGIN_REQUEST_BODY.size:
            raise FastCGIProtocolError(
                f"BEGIN_REQUEST body must be 8 bytes, got {len(content)}"
            )
        role, flags = _BEGIN_REQUEST_BODY.unpack(content)
        return cls(role, flags)


@dataclass(frozen=True)
class EndRequest:
    """The body of END_REQUEST: the application's exit status and the protocol's."""

    app_status: int = 0
    protocol_status: int = ProtocolStatus.REQUEST_COMPLETE

    def encode(self) -> bytes:
        return _END_REQUEST_BODY.pack(self.app_status, self.protocol_status)

    @classmethod
    def decode(cls, content: bytes) -> EndRequest:
        if len(content) != _END_REQUEST_BODY.size:
            raise FastCGIProtocolError(
                f"END_REQUEST body must be 8 bytes, got {len(content)}"
            )
        app_status, protocol_status = _END_REQUEST_BODY.unpack(content)
        return cls(app_status, protocol_status)


def decode_unknown_type(content: bytes) -> int:
    """The record type an UNKNOWN_TYPE record says its peer did not understand."""
    if len(content) != _UNKNOWN_TYPE_BODY.size:
        raise FastCGIProtocolError(
            f"UNKNOWN_TYPE body must be 8 bytes, got {len(content)}"
        )
    return _UNKNOWN_TYPE_BODY.unpack(content)[0]


# Name-value pairs (section 3.4) ---------------------------------------------


def _encode_length(length: int) -> bytes:
    """One byte below 128; else four bytes with the high bit set."""
    if length < 0x80:
        return bytes((length,))
    if length > MAX_NV_LENGTH:
        raise ValueError(f"name or value of {length} bytes exceeds {MAX_NV_LENGTH}")
    return _LONG_LENGTH.pack(length | _LONG_LENGTH_FLAG)


# The one-byte lengths, made once: every request encodes some forty of them.
_SHORT_LENGTHS = [bytes((length,)) for length in range(0x80)]


def encode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Name-value pairs as one byte stream, ready to be cut into records."""
    parts: list[bytes] = []
    append = parts.append
    short = _SHORT_LENGTHS
    for name, value in pairs:
        name_length, value_length = len(name), len(value)
        append(short[name_length] if name_length < 0x80 else _encode_length(name_length))
        append(short[value_length] if value_length < 0x80 else _encode_length(value_length))
        append(name)
        append(value)
    return b"".join(parts)


def _decode_length(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise FastCGIProtocolError("name-value pair truncated in its length")
    if data[offset] < 0x80:
        return data[offset], offset + 1
    if offset + 4 > len(data):
        raise FastCGIProtocolError("name-value pair truncated in a 4-byte length")
    (length,) = _LONG_LENGTH.unpack_from(data, offset)
    return length & MAX_NV_LENGTH, offset + 4


def decode_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """
    The pairs of a whole PARAMS stream (or GET_VALUES content).

    A PARAMS stream must be joined before decoding, since a pair may be split
    across records.
    """
    pairs = []
    offset = 0
    size = len(data)
    while offset < size:
        # One-byte lengths (names and most values) are read inline.
        name_length = data[offset]
        if name_length < 0x80:
            offset += 1
        else:
            name_length, offset = _decode_length(data, offset)
        if offset < size and data[offset] < 0x80:
            value_length = data[offset]
            offset += 1
        else:
            value_length, offset = _decode_length(data, offset)
        end = offset + name_length + value_length
        if end > size:
            raise FastCGIProtocolError(
                f"name-value pair needs {name_length + value_length} bytes, "
                f"only {len(data) - offset} left"
            )
        pairs.append(
            (data[offset : offset + name_length], data[offset + name_length : end])
        )
        offset = end
    return pairs


# Encoders --------------------------------------------------------------------


def encode_stream(
    record_type: int, data: bytes, request_id: int = 1, close: bool = False
) -> bytes:
    """
    ``data`` as records of ``record_type`` of at most 65535 content bytes.

    Empty ``data`` produces no record, because an empty record ends a stream;
    ``close`` appends that empty record.
    """
    if len(data) <= MAX_CONTENT_LENGTH:
        # Nearly every stream (a request's parameters, a reply's chunk) is
        # one record: no slicing, no list.
        encoded = _encode_record(record_type, request_id, data) if data else b""
    else:
        encoded = b"".join(
            _encode_record(record_type, request_id, data[start : start + MAX_CONTENT_LENGTH])
            for start in range(0, len(data), MAX_CONTENT_LENGTH)
        )
    if close:
        encoded += _encode_record(record_type, request_id, b"")
    return encoded


def encode_begin_request(
    request_id: int = 1, role: int = Role.RESPONDER, flags: int = 0
) -> bytes:
    body = BeginRequest(role, flags).encode()
    return Record(RecordType.BEGIN_REQUEST, request_id, body).encode()


@lru_cache(maxsize=64)
def _request_frame(request_id: int, keep_conn: bool) -> tuple[bytes, bytes]:
    """The records around a request's parameters, the same for every request."""
    begin = encode_begin_request(request_id, Role.RESPONDER, KEEP_CONN if keep_conn else 0)
    end = Record(RecordType.PARAMS, request_id).encode() + Record(RecordType.STDIN, request_id).encode()
    return begin, end


def encode_request(
    params: list[tuple[bytes, bytes]], request_id: int = 1, keep_conn: bool = False
) -> bytes:
    """
    Everything a web server sends for one RESPONDER request without a body.

    BEGIN_REQUEST, the parameters packed into as few PARAMS records as fit,
    the empty PARAMS that ends them, and an empty STDIN, since a Gemini
    request has no body. A record holds whole pairs only (``ParamTooLong``
    for a pair that fits in none): the specification lets a stream's bytes
    fall anyhow across records, but flup decodes each record on its own.
    """
    begin, end = _request_frame(request_id, keep_conn)
    stream = encode_pairs(params)
    if len(stream) <= MAX_CONTENT_LENGTH:
        return b"".join((begin, encode_stream(RecordType.PARAMS, stream, request_id), end))
    return b"".join((begin, *_params_records(params, request_id), end))


def _params_records(params: list[tuple[bytes, bytes]], request_id: int) -> list[bytes]:
    """Pairs packed into PARAMS records of at most 65535 bytes, never split."""
    records: list[bytes] = []
    packed: list[bytes] = []
    size = 0
    for name, value in params:
        pair = encode_pairs(((name, value),))
        if len(pair) > MAX_CONTENT_LENGTH:
            raise ParamTooLong(name, len(pair))
        if size + len(pair) > MAX_CONTENT_LENGTH:
            records.append(_encode_record(RecordType.PARAMS, request_id, b"".join(packed)))
            packed, size = [], 0
        packed.append(pair)
        size += len(pair)
    if packed:
        records.append(_encode_record(RecordType.PARAMS, request_id, b"".join(packed)))
    return records


def encode_abort(request_id: int = 1) -> bytes:
    """ABORT_REQUEST: the client went away; the application should stop."""
    return Record(RecordType.ABORT_REQUEST, request_id).encode()


def encode_end_request(
    request_id: int = 1,
    app_status: int = 0,
    protocol_status: int = ProtocolStatus.REQUEST_COMPLETE,
) -> bytes:
    body = EndRequest(app_status, protocol_status).encode()
    return Record(RecordType.END_REQUEST, request_id, body).encode()


def encode_get_values(names: Iterable[bytes]) -> bytes:
    """GET_VALUES asks for the named variables; values are sent empty."""
    content = encode_pairs((name, b"") for name in names)
    return Record(RecordType.GET_VALUES, NULL_REQUEST_ID, content).encode()


def encode_get_values_result(values: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The answer to GET_VALUES; a management record, so it must fit in one record."""
    content = encode_pairs(values)
    return Record(RecordType.GET_VALUES_RESULT, NULL_REQUEST_ID, content).encode()


def encode_unknown_type(unknown_type: int) -> bytes:
    """The answer to a management record whose type the application does not know."""
    content = _UNKNOWN_TYPE_BODY.pack(unknown_type)
    return Record(RecordType.UNKNOWN_TYPE, NULL_REQUEST_ID, content).encode()


# Decoder ---------------------------------------------------------------------


class RecordDecoder:
    """
    Bytes in, records out, in any fragmentation.

    Each record's content is copied out exactly (padding is skipped, never
    returned); what is left of an incomplete record stays buffered for the
    next ``feed``. After a protocol error the stream has no trustworthy
    framing left, so every later ``feed`` raises the same error again.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._error: FastCGIProtocolError | None = None
        # Whether a record came before: a bad header after one most often
        # means that record's length was not its content's.
        self._decoded_any = False

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete record held; non-zero at EOF means a cut record."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Record]:
        if self._error is not None:
            raise self._error
        self._buffer += data
        records = []
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= HEADER_LENGTH:
            version, record_type, request_id, length, padding = _HEADER.unpack_from(
                buffer, offset
            )
            if version != VERSION_1:
                message = (
                    f"unsupported FastCGI version {version} in record type "
                    f"{record_type} (length {length})"
                )
                if self._decoded_any or records:
                    message += ": out of step, the record before may have given a wrong length"
                self._error = FastCGIProtocolError(message)
                raise FastCGIProtocolError(message, records)
            end = offset + HEADER_LENGTH + length
            if len(buffer) < end + padding:
                break
            content = bytes(buffer[offset + HEADER_LENGTH : end])
            records.append(
                Record(_KNOWN_TYPES.get(record_type, record_type), request_id, content)
            )
            offset = end + padding
        del buffer[:offset]
        if records:
            self._decoded_any = True
        return records
