"""BRC-42/43/3 and BRC-26 adverts against reference vectors.

BRC-42 vectors: @bsv/sdk ``src/primitives/__tests/BRC42.{private,public}.vectors.ts``
(the values every SDK tests against; one stored copy of the BRC-42 text lists
stale ones). Advert and handshake vectors: ``shared/reference/brc.md`` §6.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib

import coincurve
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay_client import brc42
from overlay_client.brc104 import varint
from protocols.advert import (
    MAX_MESSAGE_BYTES,
    Advert,
    InvalidAdvert,
    OverlayAdvert,
    Withdrawal,
    decode_message,
    pushdrop_script,
)
from protocols.errors import LocalProtocolError

PRIVATE_VECTORS = [
    (
        "033f9160df035156f1c48e75eae99914fa1a1546bec19781e8eddb900200bff9d1",
        "6a1751169c111b4667a6539ee1be6b7cd9f6e9c8fe011a5f2fe31e03a15e0ede",
        "f3WCaUmnN9U=",
        "761656715bbfa172f8f9f58f5af95d9d0dfd69014cfdcacc9a245a10ff8893ef",
    ),
    (
        "027775fa43959548497eb510541ac34b01d5ee9ea768de74244a4a25f7b60fae8d",
        "cab2500e206f31bc18a8af9d6f44f0b9a208c32d5cca2b22acfe9d1a213b2f36",
        "2Ska++APzEc=",
        "09f2b48bd75f4da6429ac70b5dce863d5ed2b350b6f2119af5626914bdb7c276",
    ),
    (
        "0338d2e0d12ba645578b0955026ee7554889ae4c530bd7a3b6f688233d763e169f",
        "7a66d0896f2c4c2c9ac55670c71a9bc1bdbdfb4e8786ee5137cea1d0a05b6f20",
        "cN/yQ7+k7pg=",
        "7114cd9afd1eade02f76703cc976c241246a2f26f5c4b7a3a0150ecc745da9f0",
    ),
    (
        "02830212a32a47e68b98d477000bde08cb916f4d44ef49d47ccd4918d9aaabe9c8",
        "6e8c3da5f2fb0306a88d6bcd427cbfba0b9c7f4c930c43122a973d620ffa3036",
        "m2/QAsmwaA4=",
        "f1d6fb05da1225feeddd1cf4100128afe09c3c1aadbffbd5c8bd10d329ef8f40",
    ),
    (
        "03f20a7e71c4b276753969e8b7e8b67e2dbafc3958d66ecba98dedc60a6615336d",
        "e9d174eff5708a0a41b32624f9b9cc97ef08f8931ed188ee58d5390cad2bf68e",
        "jgpUIjWFlVQ=",
        "c5677c533f17c30f79a40744b18085632b262c0c13d87f3848c385f1389f79a6",
    ),
]
PUBLIC_VECTORS = [
    (
        "583755110a8c059de5cd81b8a04e1be884c46083ade3f779c1e022f6f89da94c",
        "02c0c1e1a1f7d247827d1bcf399f0ef2deef7695c322fd91a01a91378f101b6ffc",
        "IBioA4D/OaE=",
        "03c1bf5baadee39721ae8c9882b3cf324f0bf3b9eb3fc1b8af8089ca7a7c2e669f",
    ),
    (
        "2c378b43d887d72200639890c11d79e8f22728d032a5733ba3d7be623d1bb118",
        "039a9da906ecb8ced5c87971e9c2e7c921e66ad450fd4fc0a7d569fdb5bede8e0f",
        "PWYuo9PDKvI=",
        "0398cdf4b56a3b2e106224ff3be5253afd5b72de735d647831be51c713c9077848",
    ),
    (
        "d5a5f70b373ce164998dff7ecd93260d7e80356d3d10abf928fb267f0a6c7be6",
        "02745623f4e5de046b6ab59ce837efa1a959a8f28286ce9154a4781ec033b85029",
        "X9pnS+bByrM=",
        "0273eec9380c1a11c5a905e86c2d036e70cbefd8991d9a0cfca671f5e0bbea4a3c",
    ),
    (
        "46cd68165fd5d12d2d6519b02feb3f4d9c083109de1bfaa2b5c4836ba717523c",
        "031e18bb0bbd3162b886007c55214c3c952bb2ae6c33dd06f57d891a60976003b1",
        "+ktmYRHv3uQ=",
        "034c5c6bf2e52e8de8b2eb75883090ed7d1db234270907f1b0d1c2de1ddee5005d",
    ),
    (
        "7c98b8abd7967485cfb7437f9c56dd1e48ceb21a4085b8cdeb2a647f62012db4",
        "03c8885f1e1ab4facd0f3272bb7a48b003d2e608e1619fb38b8be69336ab828f37",
        "PPfDTTcl1ao=",
        "03304b41cfa726096ffd9d8907fe0835f888869eda9653bca34eb7bcab870d3779",
    ),
]

HOST = bytes.fromhex("11" * 32)
HELLO = hashlib.sha256(b"hello world").digest()
SCRIPT = bytes.fromhex(
    "210229aaf57c3295099e66405c6548500909739ef4624886793a5f8d5d8e1fd30062ac21034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa20b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde91c68747470733a2f2f6e6f64652e6578616d706c652f63646e2f61626305fe00b33f715b473045022100bd3e9d29bfda6472e052a00dd76b95667db5ac2135c8556bc7ee9f2c72b6fc9b02203e3cf15ade3e469387badab0e1107a7b716910da36114420d472fab8e59f5b546d6d6d"
)


@pytest.mark.parametrize(("sender_pub", "recipient_priv", "invoice", "expected"), PRIVATE_VECTORS)
def test_brc42_private_derivation(sender_pub: str, recipient_priv: str, invoice: str, expected: str) -> None:
    child = brc42.derive_private(bytes.fromhex(recipient_priv), bytes.fromhex(sender_pub), invoice)
    assert child.hex() == expected


@pytest.mark.parametrize(("sender_priv", "recipient_pub", "invoice", "expected"), PUBLIC_VECTORS)
def test_brc42_public_derivation(sender_priv: str, recipient_pub: str, invoice: str, expected: str) -> None:
    child = brc42.derive_public(bytes.fromhex(sender_priv), bytes.fromhex(recipient_pub), invoice)
    assert child.hex() == expected


def test_anyone_is_the_generator() -> None:
    assert brc42.ANYONE_PUBLIC.hex() == "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"


def test_uhrp_advert_lock_key_vector() -> None:
    child = brc42.derive_private(HOST, brc42.ANYONE_PUBLIC, "2-uhrp advertisement-1")
    pub = coincurve.PrivateKey(child).public_key.format(compressed=True)
    assert pub.hex() == "0229aaf57c3295099e66405c6548500909739ef4624886793a5f8d5d8e1fd30062"


def test_initial_response_signature_vector() -> None:
    a_pub = coincurve.PrivateKey(bytes.fromhex("aa" * 32)).public_key.format(compressed=True)

    na, nb = bytes([1]) * 48, bytes([2]) * 48
    key_id = base64.b64encode(na).decode() + " " + base64.b64encode(nb).decode()
    invoice = brc42.invoice_number(2, "auth message signature", key_id)
    sig = brc42.sign(bytes.fromhex("bb" * 32), na + nb, invoice, counterparty=a_pub)
    assert sig.hex() == (
        "3045022100ee6081e06903abd6a90bea25a83e3d9aedcb4ac9751eb804d1fbd24014e4aa1b"
        "02202a30bc9f51e6bd604a8e39dd0e26fc49ac79b2f5cf37ad05b36f150e3b011c6b"
    )
    b_pub = coincurve.PrivateKey(bytes.fromhex("bb" * 32)).public_key.format(compressed=True)
    assert brc42.verify(b_pub, na + nb, sig, invoice, my_private=bytes.fromhex("aa" * 32))
    swapped = brc42.invoice_number(2, "auth message signature", " ".join(reversed(key_id.split())))
    assert not brc42.verify(b_pub, na + nb, sig, swapped, my_private=bytes.fromhex("aa" * 32))


@pytest.mark.parametrize(
    ("level", "protocol", "key_id"),
    [
        (3, "uhrp advertisement", "1"),
        (2, "abcd", "1"),
        (2, "bad_chars!", "1"),
        (2, "two  spaces", "1"),
        (2, "my protocol", "1"),
        (2, "valid name", ""),
    ],
)
def test_invoice_rules(level: int, protocol: str, key_id: str) -> None:
    with pytest.raises(LocalProtocolError):
        brc42.invoice_number(level, protocol, key_id)


def test_advert_script_is_byte_identical_to_the_reference() -> None:
    advert = Advert.create(HOST, HELLO, "https://node.example/cdn/abc", 1900000000, 11)
    assert advert.verify()
    assert pushdrop_script(advert, HOST) == SCRIPT
    assert advert.as_json()["signature"] == SCRIPT[-74:-3].hex()


def test_tampered_adverts_fail() -> None:
    advert = Advert.create(HOST, HELLO, "https://node.example/cdn/abc", 1900000000, 11)
    other_key = coincurve.PrivateKey(b"\x22" * 32).public_key.format(compressed=True)
    for bad in (
        Advert(advert.identity_key, HELLO, "https://evil.example/", advert.expiry, advert.size, advert.signature),
        Advert(advert.identity_key, HELLO, advert.url, advert.expiry + 1, advert.size, advert.signature),
        Advert(advert.identity_key, HELLO, advert.url, advert.expiry, 12, advert.signature),
        Advert(other_key, HELLO, advert.url, advert.expiry, advert.size, advert.signature),
        Advert(advert.identity_key, HELLO, advert.url, advert.expiry, advert.size, b"\x30\x00"),
    ):
        assert not bad.verify()


def test_varint() -> None:
    assert [varint(n).hex() for n in (0, 0xFC, 0xFD, 0xFFFF, 0x10000, 2**32)] == [
        "00",
        "fc",
        "fdfd00",
        "fdffff",
        "fe00000100",
        "ff0000000001000000",
    ]


def test_overlay_messages_round_trip_and_verify() -> None:
    advert = Advert.create(HOST, HELLO, "https://node.example/cdn/abc", 1900000000, 11)
    message = OverlayAdvert.create(HOST, advert, ("/ip4/127.0.0.1/tcp/4001/p2p/16Uiu2",), 7)
    assert decode_message(message.encode()) == message
    withdrawal = Withdrawal.create(HOST, HELLO, 8)
    assert decode_message(withdrawal.encode()) == withdrawal


def test_overlay_advert_addresses_are_signed() -> None:
    advert = Advert.create(HOST, HELLO, "https://node.example/cdn/abc", 1900000000, 11)
    message = OverlayAdvert.create(HOST, advert, ("/ip4/127.0.0.1/tcp/4001",), 1)
    forged = OverlayAdvert(advert, ("/ip4/6.6.6.6/tcp/1",), 1, message.signature)
    with pytest.raises(InvalidAdvert, match="signature"):
        decode_message(forged.encode())
    replayed_seq = OverlayAdvert(advert, message.addrs, 2, message.signature)
    with pytest.raises(InvalidAdvert, match="signature"):
        decode_message(replayed_seq.encode())


def test_a_region_is_signed_and_an_advert_without_one_keeps_the_first_shape() -> None:
    advert = Advert.create(HOST, HELLO, "https://node.example/cdn/abc", 1900000000, 11)
    plain = OverlayAdvert.create(HOST, advert, ("/ip4/127.0.0.1/tcp/4001",), 1)
    assert len(msgpack.unpackb(plain.encode())) == 10  # what nodes before regions read
    placed = OverlayAdvert.create(HOST, advert, ("/ip4/127.0.0.1/tcp/4001",), 1, "DE")
    assert decode_message(placed.encode()) == placed and placed.region == "DE"
    moved = dataclasses.replace(placed, region="US")
    with pytest.raises(InvalidAdvert, match="signature"):
        decode_message(moved.encode())
    dropped = dataclasses.replace(placed, region="")
    with pytest.raises(InvalidAdvert, match="signature"):
        decode_message(dropped.encode())
    for bad in ("de", "DEU", 7):
        fields = msgpack.unpackb(plain.encode())
        with pytest.raises(InvalidAdvert):
            decode_message(msgpack.packb([*fields, bad], use_bin_type=True))


def test_a_withdrawal_by_another_key_fails() -> None:
    w = Withdrawal.create(HOST, HELLO, 1)
    other = coincurve.PrivateKey(b"\x33" * 32).public_key.format(compressed=True)
    with pytest.raises(InvalidAdvert):
        decode_message(Withdrawal(other, HELLO, 1, w.signature).encode())


def test_oversize_message_is_rejected_before_decoding() -> None:
    with pytest.raises(InvalidAdvert, match="exceeds"):
        decode_message(b"\x00" * (MAX_MESSAGE_BYTES + 1))


@given(st.binary(max_size=600))
def test_decoder_never_crashes(data: bytes) -> None:
    with contextlib.suppress(InvalidAdvert):
        decode_message(data)
