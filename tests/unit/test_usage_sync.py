"""Signed quota messages: round trips, forgeries, limits, and the ledger."""

from __future__ import annotations

import contextlib

import coincurve
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.quota import Policy, Window, window_bounds
from protocols.usage_sync import (
    Entry,
    InvalidUsageMessage,
    Ledger,
    PolicyRecord,
    Receipt,
    ReceiptRecord,
    UsageUpdate,
    decode_lease_reply,
    decode_lease_request,
    decode_message,
    encode_lease_reply,
    encode_lease_request,
)

KEY = coincurve.PrivateKey(b"\x01" * 32).secret
OTHER = coincurve.PrivateKey(b"\x02" * 32).secret
NOW = 1_700_000_000
HOUR = window_bounds(Window.HOUR, NOW)[0]


def entry(b: int, r: int = 1, rid: str = "r-1") -> Entry:
    return Entry(rid, Window.HOUR, HOUR, b, r)


def test_usage_update_round_trips_and_verifies() -> None:
    u = UsageUpdate.create(
        KEY, 7, 3, True, [entry(100), Entry("r-2", Window.MONTH, window_bounds(Window.MONTH, NOW)[0], 5, 2)]
    )
    assert decode_message(u.encode()) == u


def test_policy_and_receipt_records_round_trip() -> None:
    policy = Policy(
        "gold", bytes_per_hour=10**9, requests_per_day=100, max_bandwidth_mbps=2.5, allowed_content_types=("video/*",)
    )
    p = PolicyRecord.create(KEY, 12, policy, "for agents")
    assert decode_message(p.encode()) == p
    r = ReceiptRecord.create(KEY, 13, Receipt("r-1", "gold", "02" + "ab" * 32, "premium", 3, '{"q": 1}', NOW))
    assert decode_message(r.encode()) == r


def test_a_tampered_or_resigned_message_is_refused() -> None:
    u = UsageUpdate.create(KEY, 1, 1, False, [entry(100)])
    data = bytearray(u.encode())
    data[data.index(b"r-1") + 3] ^= 1  # change a count byte after the receipt id
    with pytest.raises(InvalidUsageMessage):
        decode_message(bytes(data))
    # A node signing entries under another origin's key: the signature is its own.
    forged = UsageUpdate(
        UsageUpdate.create(OTHER, 1, 1, False, []).origin, 1, 1, False, (entry(10**12),), signature=u.signature
    )
    with pytest.raises(InvalidUsageMessage, match="signature"):
        decode_message(forged.encode())


def test_limits_and_shapes_are_enforced() -> None:
    bad_window = UsageUpdate.create(KEY, 1, 1, False, [Entry("r-1", Window.HOUR, HOUR + 1, 1, 1)])
    with pytest.raises(InvalidUsageMessage, match="boundary"):
        decode_message(bad_window.encode())
    with pytest.raises(InvalidUsageMessage, match="receipt"):
        decode_message(UsageUpdate.create(KEY, 1, 1, False, [entry(1, rid="bad id!")]).encode())
    with pytest.raises(InvalidUsageMessage, match="exceeds"):
        decode_message(b"\x91" + b"\x00" * (300 * 1024))


@given(st.binary(max_size=512))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(InvalidUsageMessage):
        decode_message(data)


def test_lease_frames_round_trip_and_reject_junk() -> None:
    assert decode_lease_request(encode_lease_request("r-1", 5, 1, True)) == ("r-1", 5, 1, True)
    assert decode_lease_request(msgpack.packb(["r-1", 5, 1])) == ("r-1", 5, 1, False)  # before the agent flag
    assert decode_lease_reply(encode_lease_reply(5, 1, "ok", 0.0)) == (5, 1, "ok", 0.0)
    with pytest.raises(InvalidUsageMessage):
        decode_lease_request(encode_lease_request("r-1", -5, 1, False))
    with pytest.raises(InvalidUsageMessage, match="agent"):
        decode_lease_request(msgpack.packb(["r-1", 5, 1, 1]))


def test_ledger_keeps_only_messages_that_supply_a_current_maximum() -> None:
    ledger = Ledger()
    first = UsageUpdate.create(KEY, 1, 1, False, [entry(100, 1)])
    second = UsageUpdate.create(KEY, 1, 2, False, [entry(200, 2)])
    other = UsageUpdate.create(OTHER, 1, 1, False, [entry(50, 1)])
    assert ledger.offer(first, first.encode()) == [entry(100, 1)]
    assert ledger.offer(second, second.encode()) == [entry(200, 2)]
    assert ledger.offer(first, first.encode()) == []  # stale: nothing raised, not kept
    ledger.offer(other, other.encode())
    assert sorted(ledger.messages()) == sorted([second.encode(), other.encode()])
    ledger.prune([(Window.HOUR, HOUR)])
    assert ledger.messages() == [] and len(ledger) == 0


def test_a_policy_price_round_trips_and_a_priceless_record_keeps_its_old_encoding() -> None:
    import msgpack

    priced = PolicyRecord.create(KEY, 1, Policy("gold", bytes_per_hour=10, price_per_gb_satoshis=500))
    decoded = decode_message(priced.encode())
    assert decoded == priced  # decoding checks the signature
    plain = PolicyRecord.create(KEY, 1, Policy("gold", bytes_per_hour=10))
    assert len(msgpack.unpackb(plain.encode())[5]) == 14  # as records signed before prices existed
    assert decode_message(plain.encode()) == plain


def test_regions_and_blocked_ranges_round_trip_and_a_record_without_them_keeps_its_shape() -> None:
    placed = Policy("gold", allowed_regions=("US", "DE"), blocked_ip_ranges=("10.0.0.0/8", "2001:db8::/32"))
    record = PolicyRecord.create(KEY, 1, placed)
    assert decode_message(record.encode()) == record
    assert len(msgpack.unpackb(record.encode())) == 10
    assert len(msgpack.unpackb(PolicyRecord.create(KEY, 1, Policy("gold")).encode())) == 8  # as before them

    for regions, ranges in ((("usa",), ()), ((), ("10.0.0.0/33",)), ((), ("not a block",)), ((1,), ())):
        signed = PolicyRecord.create(KEY, 1, Policy("gold", allowed_regions=regions, blocked_ip_ranges=ranges))  # type: ignore[arg-type]
        with pytest.raises(InvalidUsageMessage, match=r"region|range"):
            decode_message(signed.encode())


def test_a_policy_blocks_addresses_in_its_ranges_and_allows_its_regions() -> None:
    p = Policy("p", allowed_regions=("US",), blocked_ip_ranges=("10.0.0.0/8", "2001:db8::/32"))
    assert p.blocks("10.1.2.3") and p.blocks("::ffff:10.0.0.1") and p.blocks("2001:db8::7")
    assert not p.blocks("11.0.0.1") and not p.blocks("2001:db9::1") and not p.blocks("a-unix-socket")
    assert p.allows_region("US") and p.allows_region("us") and p.allows_region("")  # "" = not known
    assert not p.allows_region("DE")
    assert Policy("open").allows_region("DE") and not Policy("open").blocks("10.0.0.1")
    edges = Policy("e", blocked_ip_ranges=("0.0.0.0/0", "2001:db8::7/128"))
    assert edges.blocks("198.51.100.1") and edges.blocks("2001:db8::7") and not edges.blocks("2001:db8::8")
