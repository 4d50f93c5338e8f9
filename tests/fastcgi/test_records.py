"""FastCGI 1.0 record codec: bytes in, records out, and back."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemfcgi.fastcgi.records import (
    KEEP_CONN,
    MAX_CONTENT_LENGTH,
    BeginRequest,
    EndRequest,
    FastCGIProtocolError,
    ParamTooLong,
    ProtocolStatus,
    Record,
    RecordDecoder,
    RecordType,
    Role,
    decode_pairs,
    decode_unknown_type,
    encode_abort,
    encode_begin_request,
    encode_end_request,
    encode_get_values,
    encode_get_values_result,
    encode_pairs,
    encode_request,
    encode_stream,
    encode_unknown_type,
)

BOUNDED = settings(max_examples=200, deadline=None)


def header(record_type: int, request_id: int, length: int, padding: int) -> bytes:
    return struct.pack(">BBHHBx", 1, record_type, request_id, length, padding)


def decode_all(data: bytes) -> list[Record]:
    decoder = RecordDecoder()
    records = decoder.feed(data)
    assert decoder.buffered == 0
    return records


def stream_content(records: list[Record], record_type: int) -> bytes:
    return b"".join(r.content for r in records if r.type == record_type)


# Constants -------------------------------------------------------------------


def test_constants_have_the_values_of_the_specification():
    assert [t.value for t in RecordType] == list(range(1, 12))
    assert (Role.RESPONDER, Role.AUTHORIZER, Role.FILTER) == (1, 2, 3)
    assert (
        ProtocolStatus.REQUEST_COMPLETE,
        ProtocolStatus.CANT_MPX_CONN,
        ProtocolStatus.OVERLOADED,
        ProtocolStatus.UNKNOWN_ROLE,
    ) == (0, 1, 2, 3)
    assert KEEP_CONN == 1


# Single records --------------------------------------------------------------


def test_record_header_is_version_type_id_length_padding_reserved():
    assert Record(RecordType.STDOUT, 0x0102, b"abc").encode() == (
        b"\x01\x06\x01\x02\x00\x03\x05\x00" + b"abc" + bytes(5)
    )


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 65535])
def test_records_are_padded_to_eight_byte_alignment(length):
    encoded = Record(RecordType.STDOUT, 1, b"x" * length).encode()
    assert len(encoded) % 8 == 0
    assert encoded[6] == -length % 8


def test_record_content_over_65535_bytes_is_refused():
    with pytest.raises(ValueError, match="65536 bytes"):
        Record(RecordType.STDOUT, 1, bytes(65536)).encode()


def test_record_request_id_over_16_bits_is_refused():
    with pytest.raises(ValueError, match="request id"):
        Record(RecordType.STDOUT, 65536).encode()


def test_begin_request_encodes_role_and_flags():
    assert encode_begin_request(3, Role.FILTER, KEEP_CONN) == (
        header(RecordType.BEGIN_REQUEST, 3, 8, 0) + b"\x00\x03\x01" + bytes(5)
    )


def test_begin_request_body_decodes_to_role_and_keep_conn():
    (record,) = decode_all(encode_begin_request(1, Role.AUTHORIZER, KEEP_CONN))
    body = BeginRequest.decode(record.content)
    assert body == BeginRequest(Role.AUTHORIZER, KEEP_CONN)
    assert body.keep_conn
    assert not BeginRequest(Role.RESPONDER, 0).keep_conn


def test_begin_request_body_of_wrong_length_is_a_protocol_error():
    with pytest.raises(
        FastCGIProtocolError, match="BEGIN_REQUEST body must be 8 bytes, got 7"
    ):
        BeginRequest.decode(bytes(7))


def test_abort_request_is_an_empty_record_for_the_request():
    assert encode_abort(5) == header(RecordType.ABORT_REQUEST, 5, 0, 0)
    assert decode_all(encode_abort()) == [Record(RecordType.ABORT_REQUEST, 1)]


def test_end_request_encodes_app_status_and_protocol_status():
    encoded = encode_end_request(2, 0x01020304, ProtocolStatus.OVERLOADED)
    assert encoded == (
        header(RecordType.END_REQUEST, 2, 8, 0) + b"\x01\x02\x03\x04\x02" + bytes(3)
    )
    (record,) = decode_all(encoded)
    assert EndRequest.decode(record.content) == EndRequest(
        0x01020304, ProtocolStatus.OVERLOADED
    )


def test_end_request_defaults_to_request_complete_with_status_zero():
    (record,) = decode_all(encode_end_request())
    assert EndRequest.decode(record.content) == EndRequest(
        0, ProtocolStatus.REQUEST_COMPLETE
    )


@pytest.mark.parametrize("length", [0, 7, 9, 16])
def test_end_request_body_of_wrong_length_is_a_protocol_error(length):
    with pytest.raises(
        FastCGIProtocolError, match=f"END_REQUEST body must be 8 bytes, got {length}$"
    ):
        EndRequest.decode(bytes(length))


@pytest.mark.parametrize(
    "record_type",
    [RecordType.STDIN, RecordType.STDOUT, RecordType.STDERR, RecordType.DATA],
)
def test_byte_streams_round_trip_with_their_type(record_type):
    encoded = encode_stream(record_type, b"hello", request_id=9, close=True)
    assert decode_all(encoded) == [
        Record(record_type, 9, b"hello"),
        Record(record_type, 9),
    ]


def test_empty_stream_data_without_close_produces_no_record():
    assert encode_stream(RecordType.STDOUT, b"") == b""


def test_stream_over_65535_bytes_is_split_into_full_records():
    data = bytes(range(256)) * 600  # 153600 bytes
    records = decode_all(encode_stream(RecordType.STDOUT, data, close=True))
    assert [len(r.content) for r in records] == [65535, 65535, 22530, 0]
    assert stream_content(records, RecordType.STDOUT) == data


def test_stream_of_exactly_65535_bytes_is_one_record():
    records = decode_all(encode_stream(RecordType.STDERR, b"e" * 65535))
    assert [len(r.content) for r in records] == [65535]


def test_get_values_asks_with_empty_values_on_request_id_zero():
    (record,) = decode_all(encode_get_values([b"FCGI_MAX_CONNS", b"FCGI_MPXS_CONNS"]))
    assert record.type == RecordType.GET_VALUES
    assert record.request_id == 0
    assert decode_pairs(record.content) == [
        (b"FCGI_MAX_CONNS", b""),
        (b"FCGI_MPXS_CONNS", b""),
    ]


def test_get_values_result_carries_the_values():
    (record,) = decode_all(encode_get_values_result([(b"FCGI_MPXS_CONNS", b"0")]))
    assert (record.type, record.request_id) == (RecordType.GET_VALUES_RESULT, 0)
    assert decode_pairs(record.content) == [(b"FCGI_MPXS_CONNS", b"0")]


def test_unknown_type_names_the_type_it_did_not_understand():
    encoded = encode_unknown_type(42)
    assert encoded == header(RecordType.UNKNOWN_TYPE, 0, 8, 0) + b"\x2a" + bytes(7)
    (record,) = decode_all(encoded)
    assert decode_unknown_type(record.content) == 42


def test_unknown_type_body_of_wrong_length_is_a_protocol_error():
    with pytest.raises(FastCGIProtocolError, match="got 1"):
        decode_unknown_type(b"\x01")


# Name-value pairs ------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "prefix"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x00\x00\x80"),
        (65535, b"\x80\x00\xff\xff"),
        (70000, b"\x80\x01\x11\x70"),
    ],
)
def test_pair_lengths_use_one_byte_below_128_and_four_bytes_above(length, prefix):
    encoded = encode_pairs([(b"N", b"v" * length)])
    assert encoded == b"\x01" + prefix + b"N" + b"v" * length
    assert decode_pairs(encoded) == [(b"N", b"v" * length)]


def test_long_name_uses_the_four_byte_form_for_the_name():
    name = b"n" * 200
    encoded = encode_pairs([(name, b"")])
    assert encoded[:5] == b"\x80\x00\x00\xc8\x00"
    assert decode_pairs(encoded) == [(name, b"")]


@pytest.mark.parametrize(
    "data",
    [b"\x05", b"\x80\x00", b"\x01\x80\x00", b"\x03\x01ab", b"\x80\x00\x00\x10\x00abc"],
)
def test_truncated_pairs_are_a_protocol_error(data):
    with pytest.raises(FastCGIProtocolError, match="truncated|needs"):
        decode_pairs(data)


# Requests as a web server sends them ------------------------------------------


def test_request_is_begin_params_empty_params_empty_stdin():
    params = [(b"SCRIPT_NAME", b"/x"), (b"QUERY_STRING", b"")]
    records = decode_all(encode_request(params))
    assert [(r.type, r.request_id) for r in records] == [
        (RecordType.BEGIN_REQUEST, 1),
        (RecordType.PARAMS, 1),
        (RecordType.PARAMS, 1),
        (RecordType.STDIN, 1),
    ]
    assert BeginRequest.decode(records[0].content) == BeginRequest(Role.RESPONDER, 0)
    assert records[1].content == encode_pairs(params)
    assert records[2].content == records[3].content == b""


def test_request_with_keep_conn_sets_the_flag_and_its_request_id():
    records = decode_all(encode_request([], request_id=7, keep_conn=True))
    assert BeginRequest.decode(records[0].content).flags == KEEP_CONN
    assert {r.request_id for r in records} == {7}
    # No parameters: only the empty PARAMS that ends the stream.
    assert [r.type for r in records[1:]] == [RecordType.PARAMS, RecordType.STDIN]


def test_large_params_are_packed_into_records_of_whole_pairs():
    # flup decodes each PARAMS record's pairs on its own: a record that began
    # inside a value would lose parameters and make up others from its bytes.
    params = [(b"NAME%d" % i, b"v" * 10000) for i in range(20)]
    records = decode_all(encode_request(params))
    params_records = [r for r in records if r.type == RecordType.PARAMS]
    assert len(params_records) == 4 + 1  # six 10 KB pairs fit in a record, then the empty one
    decoded = [pair for record in params_records for pair in decode_pairs(record.content)]
    assert decoded == params


def test_a_pair_no_record_can_hold_is_refused_not_split():
    fits = b"v" * (MAX_CONTENT_LENGTH - 8 - 4)  # two 4-byte lengths and a 4-byte name
    assert decode_pairs(stream_content(decode_all(encode_request(
        [(b"NAME", fits), (b"B", b"c" * 35000)])), RecordType.PARAMS)) == [
        (b"NAME", fits), (b"B", b"c" * 35000)]
    with pytest.raises(ParamTooLong) as refused:
        encode_request([(b"A", b"1"), (b"REMOTE_USER", fits + b"vv")])
    assert refused.value.name == b"REMOTE_USER"
    assert str(refused.value) == (
        "parameter 'REMOTE_USER' is 65541 bytes encoded, more than a record holds (65535)"
    )


@BOUNDED
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=300), st.integers(0, 40000)), max_size=12))
def test_every_params_record_holds_whole_pairs(shape):
    params = [(name, b"x" * length) for name, length in shape]
    records = [r for r in decode_all(encode_request(params)) if r.type == RecordType.PARAMS]
    assert records[-1].content == b""
    assert all(len(r.content) <= MAX_CONTENT_LENGTH for r in records)
    assert [pair for r in records for pair in decode_pairs(r.content)] == params


# Decoder -----------------------------------------------------------------------


def test_decoder_returns_nothing_until_a_record_is_complete_and_keeps_the_rest():
    encoded = encode_stream(RecordType.STDOUT, b"hello world", close=True)
    decoder = RecordDecoder()
    assert decoder.feed(encoded[:5]) == []
    assert decoder.feed(encoded[5:20]) == []
    assert decoder.buffered == 20
    assert decoder.feed(encoded[20:27]) == [
        Record(RecordType.STDOUT, 1, b"hello world")
    ]
    assert decoder.buffered == 3
    assert decoder.feed(encoded[27:]) == [Record(RecordType.STDOUT, 1)]
    assert decoder.buffered == 0


def test_padding_and_following_bytes_never_leak_into_content():
    # Padding filled with junk, then the first bytes of the next record.
    record = header(RecordType.STDOUT, 1, 3, 5) + b"abc" + b"JUNKJ"
    following = encode_stream(RecordType.STDOUT, b"next")
    decoder = RecordDecoder()
    assert decoder.feed(record + following[:10]) == [
        Record(RecordType.STDOUT, 1, b"abc")
    ]
    assert decoder.buffered == 10
    assert decoder.feed(following[10:]) == [Record(RecordType.STDOUT, 1, b"next")]


def test_record_with_non_standard_padding_is_accepted():
    data = header(RecordType.STDOUT, 1, 2, 255) + b"ok" + bytes(255)
    assert decode_all(data) == [Record(RecordType.STDOUT, 1, b"ok")]


def test_unknown_record_type_is_returned_with_its_number():
    data = header(99, 0, 2, 6) + b"zz" + bytes(6)
    assert decode_all(data) == [Record(99, 0, b"zz")]


def test_a_bad_header_after_a_record_says_that_record_may_have_lied_about_its_length():
    # Four bytes of content announced, eight sent: the rest reads as a header.
    short = b"\x01\x06\x00\x01\x00\x04\x00\x00" + b"20 text/gemini\r\n"
    decoder = RecordDecoder()
    with pytest.raises(FastCGIProtocolError) as raised:
        decoder.feed(short + bytes(8))
    assert str(raised.value) == (
        "unsupported FastCGI version 101 in record type 120 (length 26469): out of step, "
        "the record before may have given a wrong length"
    )


def test_wrong_version_is_a_protocol_error_naming_type_and_length():
    data = b"\x02\x06\x00\x01\x00\x0c\x04\x00" + bytes(16)
    decoder = RecordDecoder()
    with pytest.raises(
        FastCGIProtocolError,
        match=r"^unsupported FastCGI version 2 in record type 6 \(length 12\)$",
    ):
        decoder.feed(data)


def test_decoder_keeps_failing_after_a_protocol_error():
    decoder = RecordDecoder()
    with pytest.raises(FastCGIProtocolError):
        decoder.feed(b"\x00" * 8)
    with pytest.raises(FastCGIProtocolError, match="version 0"):
        decoder.feed(encode_abort())


def test_records_before_a_bad_version_in_the_same_feed_come_with_the_error():
    decoder = RecordDecoder()
    with pytest.raises(FastCGIProtocolError) as caught:
        decoder.feed(encode_end_request() + b"\x00" * 8)
    assert caught.value.records == [Record(RecordType.END_REQUEST, 1, bytes(8))]
    with pytest.raises(FastCGIProtocolError) as again:
        decoder.feed(b"")
    assert again.value.records == []


def test_records_before_a_bad_version_are_not_lost_by_an_earlier_feed():
    decoder = RecordDecoder()
    assert decoder.feed(encode_abort()) == [Record(RecordType.ABORT_REQUEST, 1)]
    with pytest.raises(FastCGIProtocolError):
        decoder.feed(b"\x09" + bytes(7))


# Properties ------------------------------------------------------------------

record_types = st.integers(min_value=0, max_value=255)
request_ids = st.integers(min_value=0, max_value=0xFFFF)
records = st.builds(Record, record_types, request_ids, st.binary(max_size=300))


def random_split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@BOUNDED
@given(st.lists(records, max_size=8), st.lists(st.integers(min_value=0), max_size=20))
def test_records_round_trip_through_any_fragmentation(sent, cuts):
    data = b"".join(r.encode() for r in sent)
    decoder = RecordDecoder()
    received = []
    for piece in random_split(data, cuts):
        received += decoder.feed(piece)
    assert received == sent
    assert decoder.buffered == 0


@BOUNDED
@given(
    st.lists(st.tuples(st.binary(max_size=200), st.binary(max_size=300)), max_size=10)
)
def test_pairs_round_trip(pairs):
    assert decode_pairs(encode_pairs(pairs)) == pairs


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.tuples(st.binary(max_size=70000), st.binary(max_size=70000)), max_size=3
    )
)
def test_params_stream_round_trips_through_records_of_the_request(pairs):
    records_ = decode_all(encode_request(pairs))
    assert all(len(r.content) <= MAX_CONTENT_LENGTH for r in records_)
    assert decode_pairs(stream_content(records_, RecordType.PARAMS)) == pairs


def decode_outcome(pieces: list[bytes]) -> tuple[list[Record], str | None]:
    decoder = RecordDecoder()
    received: list[Record] = []
    try:
        for piece in pieces:
            received += decoder.feed(piece)
    except FastCGIProtocolError as error:
        return received + error.records, str(error)
    return received, None


@BOUNDED
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=10))
def test_random_bytes_give_the_same_records_or_error_in_any_fragmentation(data, cuts):
    # Anything but FastCGIProtocolError escapes decode_outcome and fails the test.
    assert decode_outcome(random_split(data, cuts)) == decode_outcome([data])


padded_records = st.tuples(
    records, st.binary(max_size=255)  # any padding, of any content
)


@BOUNDED
@given(
    st.lists(padded_records, max_size=6),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_padding_of_any_length_and_content_never_leaks_into_records(sent, cuts):
    data = b"".join(
        header(r.type, r.request_id, len(r.content), len(junk)) + r.content + junk
        for r, junk in sent
    )
    assert decode_outcome(random_split(data, cuts)) == ([r for r, _ in sent], None)


@BOUNDED
@given(st.binary(max_size=500))
def test_pair_decoder_raises_only_protocol_errors_on_random_bytes(data):
    try:
        decode_pairs(data)
    except FastCGIProtocolError:
        pass
