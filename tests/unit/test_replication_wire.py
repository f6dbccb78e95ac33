"""Replica requests and replies on the wire; who repairs; whom to ask."""

from __future__ import annotations

import contextlib
import dataclasses
import os

import coincurve
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.advert import Advert, OverlayAdvert
from protocols.advert_cache import AdvertCache
from protocols.replication import InvalidReplication, ReplicaReply, ReplicaRequest, candidates, responsible

SECRET = os.urandom(32)
ME = coincurve.PrivateKey(SECRET).public_key.format(compressed=True)
PUBLISHER = coincurve.PrivateKey(os.urandom(32)).public_key.format(compressed=True)
DIGEST = os.urandom(32)


def test_a_request_round_trips_and_names_its_signer() -> None:
    request = ReplicaRequest.create(SECRET, PUBLISHER, DIGEST, 3, 1_800_000_000)
    decoded = ReplicaRequest.decode(request.encode())
    assert decoded == request and decoded.requester_key == ME


def test_a_leased_request_round_trips_and_one_without_keeps_the_first_shape() -> None:
    leased = ReplicaRequest.create(SECRET, PUBLISHER, DIGEST, 1, 1_800_000_000, lease_until=1_800_003_600)
    assert ReplicaRequest.decode(leased.encode()) == leased
    plain = ReplicaRequest.create(SECRET, PUBLISHER, DIGEST, 3, 1_800_000_000)
    assert len(msgpack.unpackb(plain.encode())) == 6
    for forged in (dataclasses.replace(leased, lease_until=1_900_000_000), dataclasses.replace(leased, lease_until=0)):
        with pytest.raises(InvalidReplication, match="signature"):
            ReplicaRequest.decode(forged.encode())


@pytest.mark.parametrize(
    "change",
    [
        {"factor": 4},
        {"content_hash": os.urandom(32)},
        {"publisher_key": ME},
        {"expiry": 1_800_000_001},
    ],
)
def test_a_changed_field_breaks_the_signature(change: dict[str, object]) -> None:
    request = dataclasses.replace(ReplicaRequest.create(SECRET, PUBLISHER, DIGEST, 3, 1_800_000_000), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidReplication, match="signature"):
        ReplicaRequest.decode(request.encode())


@pytest.mark.parametrize(
    "obj",
    [
        [ME, PUBLISHER, DIGEST, 3, 1],  # too short
        [ME, PUBLISHER, DIGEST, 0, 1, b"sig"],  # factor 0
        [ME, PUBLISHER, DIGEST, 65, 1, b"sig"],  # factor past the bound
        [ME, PUBLISHER, DIGEST[:31], 3, 1, b"sig"],
        [ME, PUBLISHER, DIGEST, "3", 1, b"sig"],
        [ME, PUBLISHER, DIGEST, 3, 1, b"sig", 0],  # a lease of 0 is no lease: it is left out
        [ME, PUBLISHER, DIGEST, 3, 1, b"sig", 2**41],
        [ME, PUBLISHER, DIGEST, 3, 1, b"sig", 5, 6],
        {"a": 1},
    ],
)
def test_malformed_requests_are_refused(obj: object) -> None:
    with pytest.raises(InvalidReplication):
        ReplicaRequest.decode(msgpack.packb(obj, use_bin_type=True))


def test_an_oversized_request_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidReplication, match="exceeds"):
        ReplicaRequest.decode(b"\x96" + b"\x00" * 600)


@given(st.binary(max_size=600))
def test_any_bytes_decode_or_raise_the_typed_error(data: bytes) -> None:
    for decode in (ReplicaRequest.decode, ReplicaReply.decode):
        with contextlib.suppress(InvalidReplication):
            decode(data)


def test_a_reply_round_trips_with_its_reason_bounded() -> None:
    assert ReplicaReply.decode(ReplicaReply(False, "no room").encode()) == ReplicaReply(False, "no room")
    assert len(ReplicaReply.decode(ReplicaReply(True, "x" * 1000).encode()).reason) == 160


def test_the_publisher_repairs_while_it_is_live_then_the_lowest_live_holder() -> None:
    a, b, c = b"\x02" + b"\x01" * 32, b"\x02" + b"\x02" * 32, b"\x03" + b"\x00" * 32
    assert responsible(c, c, {a, b, c}) and not responsible(a, c, {a, b, c})
    assert responsible(a, c, {a, b}) and not responsible(b, c, {a, b})
    assert not responsible(a, c, set())


def test_candidates_skip_holders_and_keep_a_stable_order_per_content() -> None:
    peers = [bytes([2]) + os.urandom(32) for _ in range(20)]
    order = candidates(DIGEST, peers, peers[:5])
    assert set(order) == set(peers[5:]) and order == candidates(DIGEST, reversed(peers), peers[:5])
    assert candidates(os.urandom(32), peers, ()) != candidates(DIGEST, peers, ())  # spread per content


def test_the_advert_cache_knows_every_node_with_a_live_advert_and_where_it_listens() -> None:
    now = 1_000_000.0
    cache = AdvertCache()
    live_key, gone_key = os.urandom(32), os.urandom(32)
    for secret, expiry, addrs in ((live_key, now + 60, ("/ip4/127.0.0.1/tcp/1",)), (gone_key, now - 1, ())):
        advert = Advert.create(secret, DIGEST, "uhrp-overlay://x/y", int(expiry), 1)
        cache.offer(OverlayAdvert.create(secret, advert, addrs, 1), now - 10)
    public = coincurve.PrivateKey(live_key).public_key.format(compressed=True)
    assert cache.nodes(now) == {public: ("/ip4/127.0.0.1/tcp/1",)}


def test_the_advert_cache_finds_the_nodes_of_a_region_by_their_newest_advert() -> None:
    now = 1_000_000.0
    cache = AdvertCache()
    keys = {name: os.urandom(32) for name in ("de", "us", "moved", "silent")}
    placed = [("de", "DE", 1), ("us", "US", 1), ("moved", "US", 1), ("moved", "DE", 2), ("silent", "", 1)]
    for name, region, sequence in placed:
        advert = Advert.create(
            keys[name], os.urandom(32) if sequence == 1 else DIGEST, "uhrp-overlay://x/y", int(now + 60), 1
        )
        cache.offer(
            OverlayAdvert.create(keys[name], advert, (f"/ip4/127.0.0.1/tcp/{sequence}",), sequence, region), now
        )

    def public(name: str) -> bytes:
        return coincurve.PrivateKey(keys[name]).public_key.format(compressed=True)

    assert set(cache.nodes(now, "DE")) == {public("de"), public("moved")}
    assert set(cache.nodes(now, "US")) == {public("us")}
    assert len(cache.nodes(now)) == 4
