"""UHRP URLs (BRC-26): the vectors of docs reference brc.md section 1.1, and properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay_client.uhrp import MAX_URL_CHARS, hash_from_url, normalize, parse_content_id, url_for_hash
from protocols.errors import InvalidUhrpUrl, ProtocolError, RemoteProtocolError

# --- Independent reference: the stdlib-only snippet of brc.md section 1.1 ---

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def ref_b58(b: bytes) -> str:
    n, s = int.from_bytes(b, "big"), ""
    while n:
        n, r = divmod(n, 58)
        s = B58[r] + s
    return "1" * (len(b) - len(b.lstrip(b"\0"))) + s


def ref_uhrp_url(sha256_digest: bytes) -> str:
    p = b"\xce\x00" + sha256_digest
    return ref_b58(p + hashlib.sha256(hashlib.sha256(p).digest()).digest()[:4])


def base58check(payload: bytes) -> str:
    return ref_b58(payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4])


def _big_file() -> bytes:
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(200000))[: 5 * 2**20 + 7]


# (file bytes, expected SHA-256 hex, expected URL)
FILE_VECTORS = [
    pytest.param(
        b"",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "XUUd4J26mdRjnb7iYUdYWN3XR59w8zBWaGVdWnPU8MWvECe3tqCq",
        id="empty",
    ),
    pytest.param(
        b"hello world",
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
        "XUUJPXCDnKd2iwUGSFTfTFyhQyxXjvg1ArF7byo58k7cyP5PYT6z",
        id="hello-world",
    ),
    pytest.param(
        b"abc",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "XUUJuMCC2qDVeZtq2yJKg4z5ztfdoSCmKE3BF6BconmUjpoPMoNh",
        id="abc",
    ),
    pytest.param(
        bytes.fromhex("687da27f04a112aa48f1cab2e7949f1eea4f7ba28319c1e999910cd561a634a05a3516e6db"),
        "1a5ec49a3f32cd56d19732e89bde5d81755ddc0fd8515dc8b226d47654139dca",
        "XUT6PqWb3GP3LR7dmBMCJwZ3oo5g1iGCF3CrpzyuJCemkGu1WGoq",
        id="sdk-hex-input",
    ),
    pytest.param(
        None,  # generated lazily: 5 MiB + 7 B
        "ac6301b1d75dab85a5cce866dca9fae7e76d6c273a15090d7fb93867e2b4372f",
        "XUUChdjd7fbxDSPz8eVaLTGxwWT1GPZeVyWNRwooo5giPUR5F8qb",
        id="5MiB+7B",
    ),
]

GIVEN_HASH = "a0d4c2cb69837827bae6ad6c717218d6f53708e2ebcaefaebac2639ac27ccbb7"
GIVEN_URL = "XUU7cTfy6fA6q2neLDmzPqJnGB6o18PXKoGaWLPrH1SeWLKgdCKp"
BAD_CHECKSUM_URL = "XUU7cTfy6fA6q2neLDmzPqJnGB6o18PXKoGaWLPrH1SeWLKgdCKq"


@pytest.mark.parametrize(("data", "sha_hex", "url"), FILE_VECTORS)
def test_file_vector_url_for_hash(data: bytes | None, sha_hex: str, url: str) -> None:
    if data is None:
        data = _big_file()
    digest = hashlib.sha256(data).digest()
    assert digest.hex() == sha_hex
    assert url_for_hash(digest) == url
    assert ref_uhrp_url(digest) == url


@pytest.mark.parametrize(("data", "sha_hex", "url"), FILE_VECTORS)
def test_file_vector_hash_from_url(data: bytes | None, sha_hex: str, url: str) -> None:
    assert hash_from_url(url) == bytes.fromhex(sha_hex)
    assert parse_content_id(url) == bytes.fromhex(sha_hex)
    assert parse_content_id(sha_hex) == bytes.fromhex(sha_hex)


def test_given_hash_vector() -> None:
    digest = bytes.fromhex(GIVEN_HASH)
    assert url_for_hash(digest) == GIVEN_URL
    assert hash_from_url(GIVEN_URL) == digest


def test_all_zero_hash_starts_with_XUStnFEK() -> None:
    url = url_for_hash(bytes(32))
    assert url.startswith("XUStnFEK")
    assert len(url) == 52
    assert hash_from_url(url) == bytes(32)


def test_all_ff_hash_starts_with_XUUqXRTm() -> None:
    url = url_for_hash(b"\xff" * 32)
    assert url.startswith("XUUqXRTm")
    assert len(url) == 52
    assert hash_from_url(url) == b"\xff" * 32


def test_bad_checksum_vector_is_rejected() -> None:
    with pytest.raises(InvalidUhrpUrl):
        hash_from_url(BAD_CHECKSUM_URL)
    with pytest.raises(InvalidUhrpUrl):
        parse_content_id(BAD_CHECKSUM_URL)


def test_invalid_uhrp_url_is_a_remote_protocol_error() -> None:
    assert issubclass(InvalidUhrpUrl, RemoteProtocolError)
    assert issubclass(InvalidUhrpUrl, ProtocolError)


@pytest.mark.parametrize("prefix", ["", "uhrp:", "uhrp://", "UHRP://", "UHRP:", "Uhrp://", "uHrP:"])
def test_accepted_prefixes(prefix: str) -> None:
    assert hash_from_url(prefix + GIVEN_URL) == bytes.fromhex(GIVEN_HASH)
    assert parse_content_id(prefix + GIVEN_URL) == bytes.fromhex(GIVEN_HASH)
    assert normalize(prefix + GIVEN_URL) == GIVEN_URL


@pytest.mark.parametrize("prefix", ["web+uhrp://", "http://", "uhrp:/", "uhrp:///", "uhrp//", "urhp:", "uhrp: "])
def test_other_prefixes_are_rejected(prefix: str) -> None:
    with pytest.raises(InvalidUhrpUrl):
        hash_from_url(prefix + GIVEN_URL)


def test_url_for_hash_emits_bare_form() -> None:
    url = url_for_hash(bytes.fromhex(GIVEN_HASH))
    assert not url.lower().startswith("uhrp:")
    assert url.startswith("XU")


@pytest.mark.parametrize("prefix", [b"\xce\x01", b"\xcf\x00", b"\xcd\x00", b"\xce\xff"])
def test_wrong_prefix_with_valid_checksum_is_rejected(prefix: bytes) -> None:
    forged = base58check(prefix + bytes.fromhex(GIVEN_HASH))
    assert len(forged) == 52  # so only the prefix check can reject it
    with pytest.raises(InvalidUhrpUrl, match="prefix"):
        hash_from_url(forged)


@pytest.mark.parametrize("payload_len", [33, 35, 36, 40])
def test_wrong_payload_length_with_valid_checksum_is_rejected(payload_len: int) -> None:
    payload = b"\xce\x00" + bytes(range(payload_len - 2))
    with pytest.raises(InvalidUhrpUrl):
        hash_from_url(base58check(payload))


@pytest.mark.parametrize("url", [GIVEN_URL[:-1], GIVEN_URL + "1", GIVEN_URL[:10], "XU", "", "uhrp://", "1" + GIVEN_URL])
def test_wrong_length_is_rejected(url: str) -> None:
    with pytest.raises(InvalidUhrpUrl):
        hash_from_url(url)


def test_52_chars_decoding_to_39_bytes_is_rejected() -> None:
    # 'z' * 52 is 58**52 - 1, which needs 39 bytes.
    with pytest.raises(InvalidUhrpUrl):
        hash_from_url("z" * 52)


def test_52_chars_with_leading_ones_is_rejected() -> None:
    with pytest.raises(InvalidUhrpUrl):
        hash_from_url("1" * 52)


@pytest.mark.parametrize("bad", ["0", "O", "l", "I", "+", "/", "=", " ", "é"])
def test_non_base58_characters_are_rejected(bad: str) -> None:
    for pos in (0, 10, 51):
        url = GIVEN_URL[:pos] + bad + GIVEN_URL[pos + 1 :]
        assert len(url) == 52
        with pytest.raises(InvalidUhrpUrl):
            hash_from_url(url)


@pytest.mark.parametrize("length", [MAX_URL_CHARS + 1, 1000, 100_000])
def test_overlong_input_is_rejected(length: int) -> None:
    with pytest.raises(InvalidUhrpUrl, match="too long"):
        hash_from_url("1" * length)
    with pytest.raises(InvalidUhrpUrl):
        parse_content_id("X" * length)


def test_overlong_input_padded_with_whitespace_is_rejected_before_stripping() -> None:
    with pytest.raises(InvalidUhrpUrl, match="too long"):
        hash_from_url(" " * MAX_URL_CHARS + GIVEN_URL)


@pytest.mark.parametrize("bad_len", [0, 1, 31, 33, 64])
def test_url_for_hash_requires_32_bytes(bad_len: int) -> None:
    with pytest.raises(ValueError):
        url_for_hash(bytes(bad_len))


@pytest.mark.parametrize("text", [GIVEN_HASH, GIVEN_HASH.upper(), GIVEN_HASH[:32] + GIVEN_HASH[32:].upper()])
def test_parse_content_id_accepts_64_hex_in_any_case(text: str) -> None:
    assert parse_content_id(text) == bytes.fromhex(GIVEN_HASH)


@pytest.mark.parametrize(
    "text",
    [
        GIVEN_HASH[:-1],  # 63 hex
        GIVEN_HASH + "0",  # 65 hex
        GIVEN_HASH[:-1] + "g",  # non-hex
        "0x" + GIVEN_HASH[2:],
        "",
    ],
)
def test_parse_content_id_rejects_near_hex(text: str) -> None:
    with pytest.raises(InvalidUhrpUrl):
        parse_content_id(text)


@given(st.binary(min_size=32, max_size=32))
def test_round_trip_and_shape(digest: bytes) -> None:
    url = url_for_hash(digest)
    assert len(url) == 52
    assert url.startswith("XU")
    assert hash_from_url(url) == digest
    assert hash_from_url("uhrp://" + url) == digest
    assert parse_content_id(url) == digest
    assert parse_content_id(digest.hex()) == digest


@given(st.binary(min_size=32, max_size=32))
def test_matches_reference_implementation(digest: bytes) -> None:
    assert url_for_hash(digest) == ref_uhrp_url(digest)


@given(st.binary(min_size=32, max_size=32), st.integers(min_value=0, max_value=51), st.sampled_from(B58))
def test_any_single_character_change_is_rejected(digest: bytes, pos: int, char: str) -> None:
    url = url_for_hash(digest)
    mutated = url[:pos] + char + url[pos + 1 :]
    if mutated == url:
        return
    with pytest.raises(InvalidUhrpUrl):
        hash_from_url(mutated)


@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_invalid_uhrp_url(text: str) -> None:
    try:
        digest = hash_from_url(text)
    except InvalidUhrpUrl:
        return
    assert len(digest) == 32
    assert url_for_hash(digest) == normalize(text.strip())
