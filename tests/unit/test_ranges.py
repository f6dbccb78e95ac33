"""HTTP Range headers (RFC 9110 section 14): parse, clamp, refuse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import InvalidRange, RemoteProtocolError
from protocols.ranges import MAX_RANGE_HEADER, ByteRange, Unsatisfiable, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "size", "start", "end"),
    [
        ("bytes=0-99", SIZE, 0, 99),
        ("bytes=0-0", SIZE, 0, 0),
        ("bytes=999-999", SIZE, 999, 999),
        ("bytes=100-", SIZE, 100, 999),
        ("bytes=0-", SIZE, 0, 999),
        ("bytes=999-", SIZE, 999, 999),
        ("bytes=-100", SIZE, 900, 999),
        ("bytes=-1", SIZE, 999, 999),
        ("bytes=-1000", SIZE, 0, 999),
        ("bytes=-5000", SIZE, 0, 999),  # suffix longer than the content
        ("bytes=500-5000", SIZE, 500, 999),  # end beyond the content clamps
        ("bytes=0-999", SIZE, 0, 999),
        ("bytes=0-1000", SIZE, 0, 999),
        ("bytes=0-9999999999999999999", SIZE, 0, 999),  # 19 digits
        ("bytes=0-0", 1, 0, 0),
        ("bytes=-1", 1, 0, 0),
        ("bytes=00010-00020", SIZE, 10, 20),  # leading zeros are still digits
        ("  bytes=0-99  ", SIZE, 0, 99),
    ],
)
def test_satisfiable_ranges(header: str, size: int, start: int, end: int) -> None:
    r = parse_range(header, size)
    assert r == ByteRange(start, end)
    assert r.length == end - start + 1


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=1000-", SIZE),  # start at the size
        ("bytes=1000-2000", SIZE),
        ("bytes=5000-", SIZE),
        ("bytes=9999999999999999999-", SIZE),
        ("bytes=-0", SIZE),  # a zero-length suffix selects nothing
        ("bytes=-0", 0),
        ("bytes=0-", 0),  # empty content: nothing is satisfiable
        ("bytes=0-0", 0),
        ("bytes=0-99", 0),
        ("bytes=-1", 0),
        ("bytes=-100", 0),
        ("bytes=1-", 1),
    ],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


def test_unsatisfiable_is_not_a_protocol_error() -> None:
    # 416 is a normal answer to a well-formed request, not malformed input.
    assert not issubclass(Unsatisfiable, RemoteProtocolError)
    assert issubclass(InvalidRange, RemoteProtocolError)


@pytest.mark.parametrize(
    "header",
    [
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=1-b",
        "bytes=a-1",
        "items=0-1",
        "bytes 0-1",
        "bytes:0-1",
        "bytes=0:1",
        "bytes=5-1",  # end precedes start
        "bytes=1-0",
        "bytes=0x10-0x20",
        "bytes=+1-2",
        "bytes=--1",
        "bytes=1--2",
        "bytes=0-1-2",
        "bytes=1.5-2",
        "bytes=0-99;x",
        "=0-1",
        "",
        "bytes",
        "bytes=99999999999999999999-",  # 20 digits
        "bytes=-99999999999999999999",
        "bytes=" + "1" * (MAX_RANGE_HEADER - 6) + "-",  # overlong
        "bytes=0-1" + " " * MAX_RANGE_HEADER,  # overlong only through padding
    ],
)
def test_malformed_headers_raise_invalid_range(header: str) -> None:
    with pytest.raises(InvalidRange):
        parse_range(header, SIZE)


@pytest.mark.parametrize("length", [MAX_RANGE_HEADER + 1, 10_000])
def test_overlong_header_is_rejected_before_parsing(length: int) -> None:
    header = ("bytes=0-1," * length)[:length]
    assert len(header) > MAX_RANGE_HEADER
    with pytest.raises(InvalidRange, match="too long"):
        parse_range(header, SIZE)


def test_header_at_the_length_limit_is_parsed() -> None:
    header = "bytes=0-99".ljust(MAX_RANGE_HEADER)
    assert len(header) == MAX_RANGE_HEADER
    assert parse_range(header, SIZE) == ByteRange(0, 99)


@pytest.mark.parametrize(
    "header",
    ["bytes=0-1,5-6", "bytes=0-1, 5-6", "bytes=-5,0-1", "bytes=0-,10-20,30-40", "bytes=0-1,"],
)
def test_multiple_ranges_serve_the_whole_body(header: str) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize("size", [0, 1, SIZE])
def test_no_header_serves_the_whole_body(size: int) -> None:
    assert parse_range(None, size) is None


@pytest.mark.parametrize("header", ["bytes=\u0660-\u0669", "bytes=\uff10-\uff19", "bytes=-\u0661"])
def test_non_ascii_digits_are_malformed(header: str) -> None:
    # RFC 9110 DIGIT is ASCII 0-9; Python's \d also matches other scripts' digits.
    with pytest.raises(InvalidRange):
        parse_range(header, SIZE)


def test_range_unit_is_case_insensitive() -> None:
    # RFC 9110 section 14.1: "All range unit names are case-insensitive".
    assert parse_range("Bytes=0-99", SIZE) == ByteRange(0, 99)
    assert parse_range("BYTES=-10", SIZE) == ByteRange(990, 999)


def test_content_range_and_length() -> None:
    r = ByteRange(10, 19)
    assert r.length == 10
    assert r.content_range(SIZE) == "bytes 10-19/1000"
    assert parse_range("bytes=-1", SIZE).content_range(SIZE) == "bytes 999-999/1000"  # type: ignore[union-attr]


@given(st.integers(min_value=0, max_value=2**62), st.data())
def test_first_last_ranges_lie_inside_the_content(size: int, data: st.DataObject) -> None:
    start = data.draw(st.integers(min_value=0, max_value=2**63))
    end = data.draw(st.integers(min_value=start, max_value=2**63))
    header = f"bytes={start}-{end}"
    if start >= size:
        with pytest.raises(Unsatisfiable):
            parse_range(header, size)
        return
    r = parse_range(header, size)
    assert r is not None
    assert r.start == start
    assert r.end == min(end, size - 1)
    assert 0 <= r.start <= r.end < size
    assert r.length == min(end, size - 1) - start + 1


@given(st.integers(min_value=0, max_value=2**62), st.integers(min_value=0, max_value=2**63))
def test_open_ended_ranges_reach_the_end(size: int, start: int) -> None:
    if start >= size:
        with pytest.raises(Unsatisfiable):
            parse_range(f"bytes={start}-", size)
        return
    r = parse_range(f"bytes={start}-", size)
    assert r == ByteRange(start, size - 1)
    assert r.length == size - start


@given(st.integers(min_value=0, max_value=2**62), st.integers(min_value=0, max_value=2**63))
def test_suffix_ranges_select_the_last_bytes(size: int, n: int) -> None:
    if n == 0 or size == 0:
        with pytest.raises(Unsatisfiable):
            parse_range(f"bytes=-{n}", size)
        return
    r = parse_range(f"bytes=-{n}", size)
    assert r is not None
    assert r.end == size - 1
    assert r.length == min(n, size)
    assert 0 <= r.start <= r.end < size


@given(st.integers(min_value=0, max_value=2**62), st.integers(min_value=0, max_value=2**63), st.data())
def test_reversed_ranges_are_malformed(size: int, end: int, data: st.DataObject) -> None:
    start = data.draw(st.integers(min_value=end + 1, max_value=2**63 + 1))
    with pytest.raises(InvalidRange):
        parse_range(f"bytes={start}-{end}", size)


@given(st.text(max_size=300), st.integers(min_value=0, max_value=2**40))
def test_arbitrary_headers_never_crash(header: str, size: int) -> None:
    try:
        r = parse_range(header, size)
    except (InvalidRange, Unsatisfiable):
        return
    if r is not None:
        assert 0 <= r.start <= r.end < size
