"""Manifests: build, canonical encoding, strict decoding, segments."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocols.manifest as manifest_mod
from protocols.errors import InvalidManifest, RemoteProtocolError
from protocols.manifest import (
    DEFAULT_CONTENT_TYPE,
    MANIFEST_VERSION,
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    MAX_MANIFEST_BYTES,
    MIN_CHUNK_SIZE,
    Manifest,
    chunk_count,
    valid_content_type,
)
from protocols.merkle import merkle_root

CS = MIN_CHUNK_SIZE


def hashes(n: int, seed: int = 0) -> tuple[bytes, ...]:
    return tuple(hashlib.sha256(b"chunk" + seed.to_bytes(8, "big") + i.to_bytes(8, "big")).digest() for i in range(n))


def make(size: int, chunk_size: int = CS, content_type: str = DEFAULT_CONTENT_TYPE, seed: int = 0) -> Manifest:
    return Manifest.build(
        hashlib.sha256(b"content" + size.to_bytes(8, "big")).digest(),
        size,
        chunk_size,
        hashes(chunk_count(size, chunk_size), seed),
        content_type,
    )


def fields_of(m: Manifest) -> list[Any]:
    return [
        MANIFEST_VERSION,
        m.content_hash,
        m.size,
        m.chunk_size,
        b"".join(m.chunk_hashes),
        m.merkle_root,
        m.content_type,
    ]


def pack(fields: Any) -> bytes:
    out: bytes = msgpack.packb(fields, use_bin_type=True)
    return out


def encoded_fields(m: Manifest) -> list[bytes]:
    """Each field's canonical encoding, so one can be swapped for another form."""
    return [pack(f) for f in fields_of(m)]


def assemble(parts: list[bytes], header: bytes = b"\x97") -> bytes:
    return header + b"".join(parts)


CONTENT_TYPES = [
    DEFAULT_CONTENT_TYPE,
    "text/plain",
    "text/plain; charset=utf-8",
    "application/vnd.api+json",
    "image/svg+xml",
    "a/" + "b" * 253,  # exactly 255 bytes
]


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    chunk_size = draw(
        st.one_of(
            st.sampled_from([MIN_CHUNK_SIZE, 65536, 1 << 20, MAX_CHUNK_SIZE]),
            st.integers(min_value=MIN_CHUNK_SIZE, max_value=MAX_CHUNK_SIZE),
        )
    )
    n = draw(st.integers(min_value=0, max_value=40))
    if n == 0:
        size = 0
    else:
        last = draw(st.one_of(st.just(chunk_size), st.just(1), st.integers(min_value=1, max_value=chunk_size)))
        size = (n - 1) * chunk_size + last
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    seed = draw(st.integers(min_value=0, max_value=2**32))
    return make(size, chunk_size, content_type, seed)


# --- Build, encode, decode ---


def test_invalid_manifest_is_a_remote_protocol_error() -> None:
    assert issubclass(InvalidManifest, RemoteProtocolError)


def test_build_computes_merkle_root() -> None:
    m = make(3 * CS + 1)
    assert len(m.chunk_hashes) == 4
    assert m.merkle_root == merkle_root(m.chunk_hashes)


def test_empty_content_has_no_chunks() -> None:
    m = make(0)
    assert m.chunk_hashes == ()
    assert m.merkle_root == hashlib.sha256(b"").digest()
    assert Manifest.decode(m.encode()) == m


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 2 * CS, 7 * CS, 7 * CS + 3])
def test_round_trip_sizes(size: int) -> None:
    m = make(size)
    assert len(m.chunk_hashes) == -(-size // CS)
    decoded = Manifest.decode(m.encode())
    assert decoded == m
    assert decoded.encode() == m.encode()


@given(manifests())
def test_round_trip(m: Manifest) -> None:
    data = m.encode()
    decoded = Manifest.decode(data)
    assert decoded == m
    assert decoded.encode() == data
    assert decoded.manifest_hash == m.manifest_hash
    assert len(decoded.chunk_hashes) == chunk_count(m.size, m.chunk_size)


@given(manifests())
def test_manifest_hash_is_sha256_of_encoding(m: Manifest) -> None:
    assert m.manifest_hash == hashlib.sha256(m.encode()).digest()


def test_encoding_layout() -> None:
    m = make(CS + 5, content_type="text/plain")
    assert msgpack.unpackb(m.encode(), raw=False) == fields_of(m)


def test_manifest_hash_changes_with_any_field() -> None:
    base = make(2 * CS)
    others = [
        make(2 * CS, content_type="text/plain"),
        make(2 * CS, seed=1),
        make(2 * CS - 1),
        make(2 * CS, chunk_size=2 * CS),
    ]
    assert len({base.manifest_hash, *(o.manifest_hash for o in others)}) == 5


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_valid_content_types_round_trip(content_type: str) -> None:
    assert valid_content_type(content_type)
    assert Manifest.decode(make(10, content_type=content_type).encode()).content_type == content_type


def test_largest_manifest_fits_the_byte_limit() -> None:
    # MAX_CHUNKS chunks of MAX_CHUNK_SIZE, the longest content type: the
    # encoding must stay within MAX_MANIFEST_BYTES (root not computed: too slow).
    m = Manifest(
        bytes(32), MAX_CHUNKS * MAX_CHUNK_SIZE, MAX_CHUNK_SIZE, (bytes(32),) * MAX_CHUNKS, bytes(32), "a/" + "b" * 253
    )
    m.validate()
    assert len(m.encode()) <= MAX_MANIFEST_BYTES


def test_largest_manifest_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Merkle root stubbed (a million leaf hashes cost seconds); limits are real.
    h = hashlib.sha256(b"x").digest()
    root = hashlib.sha256(b"root").digest()
    monkeypatch.setattr(manifest_mod, "merkle_root", lambda hs: root if len(hs) == MAX_CHUNKS else bytes(32))
    data = pack([1, bytes(32), MAX_CHUNKS * MAX_CHUNK_SIZE, MAX_CHUNK_SIZE, h * MAX_CHUNKS, root, "a/" + "b" * 253])
    m = Manifest.decode(data)
    assert len(m.chunk_hashes) == MAX_CHUNKS


def test_too_many_chunks_is_rejected_before_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_: object) -> bytes:
        raise AssertionError("merkle_root must not run on an over-limit manifest")

    monkeypatch.setattr(manifest_mod, "merkle_root", boom)
    n = MAX_CHUNKS + 1
    data = pack([1, bytes(32), n * MIN_CHUNK_SIZE, MIN_CHUNK_SIZE, bytes(32) * n, bytes(32), "a/b"])
    assert len(data) <= MAX_MANIFEST_BYTES
    with pytest.raises(InvalidManifest, match="exceeds"):
        Manifest.decode(data)


def test_size_implying_too_many_chunks_is_rejected() -> None:
    data = pack([1, bytes(32), (MAX_CHUNKS + 1) * MIN_CHUNK_SIZE, MIN_CHUNK_SIZE, b"", bytes(32), "a/b"])
    with pytest.raises(InvalidManifest):
        Manifest.decode(data)


# --- Build rejects inconsistent input ---


@pytest.mark.parametrize(
    ("size", "chunk_size", "n_hashes"),
    [
        (0, CS, 1),
        (1, CS, 0),
        (CS, CS, 2),
        (CS + 1, CS, 1),
        (10 * CS, CS, 9),
        (-1, CS, 0),
        (10, MIN_CHUNK_SIZE - 1, 1),
        (10, 0, 1),
        (10, -CS, 1),
        (10, MAX_CHUNK_SIZE + 1, 1),
    ],
)
def test_build_rejects_inconsistent_fields(size: int, chunk_size: int, n_hashes: int) -> None:
    with pytest.raises(InvalidManifest):
        Manifest.build(bytes(32), size, chunk_size, hashes(n_hashes))


@pytest.mark.parametrize("content_hash", [b"", bytes(31), bytes(33)])
def test_build_rejects_bad_content_hash(content_hash: bytes) -> None:
    with pytest.raises(InvalidManifest):
        Manifest.build(content_hash, 10, CS, hashes(1))


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33)])
def test_build_rejects_bad_chunk_hash(bad: bytes) -> None:
    with pytest.raises(InvalidManifest):
        Manifest.build(bytes(32), 2 * CS, CS, (hashes(1)[0], bad))


BAD_CONTENT_TYPES = [
    "",
    "text",
    "text/",
    "/plain",
    "text/plain\n",
    "text/plain\x00",
    "text /plain",
    "text/pla in",
    "tëxt/plain",
    "a/" + "b" * 254,  # 256 bytes
    "text/plain; x=" + "é" * 125,  # 264 bytes, fewer than 256 characters
]


@pytest.mark.parametrize("content_type", BAD_CONTENT_TYPES)
def test_build_rejects_bad_content_type(content_type: str) -> None:
    assert not valid_content_type(content_type)
    with pytest.raises(InvalidManifest):
        make(10, content_type=content_type)


@pytest.mark.parametrize("content_type", BAD_CONTENT_TYPES)
def test_decode_rejects_bad_content_type(content_type: str) -> None:
    f = fields_of(make(10))
    f[6] = content_type
    with pytest.raises(InvalidManifest):
        Manifest.decode(pack(f))


# --- Decode rejects malformed input ---


@given(st.binary(max_size=600))
def test_decode_arbitrary_bytes_raises_only_invalid_manifest(data: bytes) -> None:
    try:
        m = Manifest.decode(data)
    except InvalidManifest:
        return
    assert m.encode() == data


_leaf_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=80),
)
_values = st.recursive(_leaf_values, lambda inner: st.lists(inner, max_size=4), max_leaves=10)


@given(st.lists(_values, min_size=0, max_size=9))
def test_decode_arbitrary_msgpack_arrays_raises_only_invalid_manifest(obj: list[Any]) -> None:
    data = pack(obj)
    try:
        m = Manifest.decode(data)
    except InvalidManifest:
        return
    assert m.encode() == data


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(manifests(), st.data())
def test_decode_mutated_encoding_raises_only_invalid_manifest(m: Manifest, data: st.DataObject) -> None:
    enc = bytearray(m.encode())
    if len(enc) > 4096:
        enc = enc[:4096]
    pos = data.draw(st.integers(min_value=0, max_value=len(enc) - 1))
    op = data.draw(st.sampled_from(["flip", "insert", "delete", "set"]))
    byte = data.draw(st.integers(min_value=0, max_value=255))
    if op == "flip":
        enc[pos] ^= 1 << (byte % 8)
    elif op == "insert":
        enc.insert(pos, byte)
    elif op == "delete":
        del enc[pos]
    else:
        enc[pos] = byte
    mutated = bytes(enc)
    try:
        decoded = Manifest.decode(mutated)
    except InvalidManifest:
        return
    assert decoded.encode() == mutated


def test_every_truncation_is_rejected() -> None:
    data = make(3 * CS + 17, content_type="text/plain").encode()
    for cut in range(len(data)):
        with pytest.raises(InvalidManifest):
            Manifest.decode(data[:cut])


@pytest.mark.parametrize("extra", [b"\x00", b"\xc0", b"\x97", b"\x01\x02\x03"])
def test_trailing_bytes_are_rejected(extra: bytes) -> None:
    with pytest.raises(InvalidManifest):
        Manifest.decode(make(CS).encode() + extra)


@pytest.mark.parametrize("version", [0, 2, -1, 255, 2**32, None, "1", b"\x01", [1], 1.0, True])
def test_wrong_version_is_rejected(version: Any) -> None:
    f = fields_of(make(CS))
    f[0] = version
    with pytest.raises(InvalidManifest):
        Manifest.decode(pack(f))


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (1, "a" * 32),  # content hash as str
        (1, None),
        (1, list(range(32))),
        (2, float(CS)),  # size as float
        (2, True),  # size as bool
        (2, str(CS)),
        (2, None),
        (3, float(CS)),  # chunk size as float
        (3, b"\x10\x00"),
        (3, False),
        (4, "x" * 32),  # chunk hashes as str
        (4, [bytes(32)]),  # chunk hashes as a list
        (5, "r" * 32),  # root as str
        (5, 0),
        (6, b"text/plain"),  # content type as bytes
        (6, None),
        (6, 1),
    ],
)
def test_wrong_field_type_is_rejected(index: int, value: Any) -> None:
    f = fields_of(make(CS))
    f[index] = value
    with pytest.raises(InvalidManifest):
        Manifest.decode(pack(f))


@pytest.mark.parametrize("n_fields", [0, 1, 6, 8, 16])
def test_wrong_array_length_is_rejected(n_fields: int) -> None:
    f = fields_of(make(CS))
    f = (f + [0] * 16)[:n_fields]
    with pytest.raises(InvalidManifest):
        Manifest.decode(pack(f))


@pytest.mark.parametrize("obj", [{}, 1, "manifest", b"manifest", None, True, 1.5, [[]]])
def test_non_array_top_level_is_rejected(obj: Any) -> None:
    with pytest.raises(InvalidManifest):
        Manifest.decode(pack(obj))


def test_map_top_level_is_rejected() -> None:
    with pytest.raises(InvalidManifest):
        Manifest.decode(pack({"version": 1}))


@pytest.mark.parametrize(("size", "n_hashes"), [(CS, 0), (CS, 2), (0, 1), (CS + 1, 1), (3 * CS, 4)])
def test_wrong_chunk_count_for_size_is_rejected(size: int, n_hashes: int) -> None:
    hs = hashes(n_hashes)
    f = [1, bytes(32), size, CS, b"".join(hs), merkle_root(hs), DEFAULT_CONTENT_TYPE]
    with pytest.raises(InvalidManifest):
        Manifest.decode(pack(f))


@pytest.mark.parametrize("delta", [-1, 1, -31, 16])
def test_chunk_hash_list_not_multiple_of_32_is_rejected(delta: int) -> None:
    f = fields_of(make(2 * CS))
    f[4] = f[4] + bytes(delta) if delta > 0 else f[4][:delta]
    with pytest.raises(InvalidManifest, match="multiple of 32"):
        Manifest.decode(pack(f))


@pytest.mark.parametrize("bad_root", ["flip", "zero", "short", "long", "of-other"])
def test_bad_merkle_root_is_rejected(bad_root: str) -> None:
    m = make(5 * CS)
    f = fields_of(m)
    root = m.merkle_root
    f[5] = {
        "flip": bytes([root[0] ^ 1]) + root[1:],
        "zero": bytes(32),
        "short": root[:31],
        "long": root + b"\0",
        "of-other": make(5 * CS, seed=9).merkle_root,
    }[bad_root]
    with pytest.raises(InvalidManifest):
        Manifest.decode(pack(f))


def test_swapped_chunk_order_is_rejected() -> None:
    m = make(3 * CS)
    f = fields_of(m)
    hs = m.chunk_hashes
    f[4] = hs[1] + hs[0] + hs[2]
    with pytest.raises(InvalidManifest, match="Merkle"):
        Manifest.decode(pack(f))


@pytest.mark.parametrize("bad_hash", [b"", bytes(31), bytes(33)])
def test_bad_content_hash_length_is_rejected(bad_hash: bytes) -> None:
    f = fields_of(make(CS))
    f[1] = bad_hash
    with pytest.raises(InvalidManifest):
        Manifest.decode(pack(f))


@pytest.mark.parametrize("chunk_size", [0, -1, MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1, 2**63])
def test_chunk_size_out_of_range_is_rejected(chunk_size: int) -> None:
    f = [1, bytes(32), 0, chunk_size, b"", merkle_root([]), DEFAULT_CONTENT_TYPE]
    with pytest.raises(InvalidManifest):
        Manifest.decode(pack(f))


@pytest.mark.parametrize("size", [-1, -(2**63)])
def test_negative_size_is_rejected(size: int) -> None:
    f = [1, bytes(32), size, CS, b"", merkle_root([]), DEFAULT_CONTENT_TYPE]
    with pytest.raises(InvalidManifest):
        Manifest.decode(pack(f))


def _u64(tag: int, value: int) -> bytes:
    return bytes([tag]) + struct.pack(">Q", value)


def _noncanonical_variants() -> list[Any]:
    m = make(CS + 5, content_type="text/plain")
    parts = encoded_fields(m)
    ct = m.content_type.encode()
    blob = b"".join(m.chunk_hashes)  # 64 bytes: bin8 is canonical
    assert parts[4][:1] == b"\xc4"
    assert parts[3] == b"\xcd\x10\x00"  # 4096 as uint16
    cases = {
        "array16-header": assemble(parts, b"\xdc\x00\x07"),
        "array32-header": assemble(parts, b"\xdd\x00\x00\x00\x07"),
        "version-uint8": assemble([b"\xcc\x01", *parts[1:]]),
        "version-uint16": assemble([b"\xcd\x00\x01", *parts[1:]]),
        "version-int8": assemble([b"\xd0\x01", *parts[1:]]),
        "version-uint64": assemble([_u64(0xCF, 1), *parts[1:]]),
        "size-uint64": assemble([*parts[:2], _u64(0xCF, m.size), *parts[3:]]),
        "size-int64": assemble([*parts[:2], _u64(0xD3, m.size), *parts[3:]]),
        "chunk-size-uint32": assemble([*parts[:3], b"\xce" + struct.pack(">I", CS), *parts[4:]]),
        "chunk-size-uint64": assemble([*parts[:3], _u64(0xCF, CS), *parts[4:]]),
        "content-hash-bin16": assemble([parts[0], b"\xc5\x00\x20" + m.content_hash, *parts[2:]]),
        "content-hash-bin32": assemble([parts[0], b"\xc6\x00\x00\x00\x20" + m.content_hash, *parts[2:]]),
        "hashes-bin16": assemble([*parts[:4], b"\xc5" + struct.pack(">H", len(blob)) + blob, *parts[5:]]),
        "hashes-bin32": assemble([*parts[:4], b"\xc6" + struct.pack(">I", len(blob)) + blob, *parts[5:]]),
        "root-bin16": assemble([*parts[:5], b"\xc5\x00\x20" + m.merkle_root, parts[6]]),
        "content-type-str8": assemble([*parts[:6], b"\xd9" + bytes([len(ct)]) + ct]),
        "content-type-str16": assemble([*parts[:6], b"\xda" + struct.pack(">H", len(ct)) + ct]),
    }
    assert assemble(parts) == m.encode()
    return [pytest.param(data, id=name) for name, data in cases.items()]


@pytest.mark.parametrize("data", _noncanonical_variants())
def test_non_canonical_encoding_is_rejected(data: bytes) -> None:
    with pytest.raises(InvalidManifest, match="canonical"):
        Manifest.decode(data)


def test_zero_size_noncanonical_empty_hash_list_is_rejected() -> None:
    m = make(0)
    parts = encoded_fields(m)
    assert parts[4] == b"\xc4\x00"
    with pytest.raises(InvalidManifest):
        Manifest.decode(assemble([*parts[:4], b"\xc5\x00\x00", *parts[5:]]))


def test_oversize_input_is_rejected_before_unpacking(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(args)
        raise AssertionError("unpackb must not run on oversize input")

    monkeypatch.setattr(msgpack, "unpackb", spy)
    data = make(CS).encode()
    data += bytes(MAX_MANIFEST_BYTES + 1 - len(data))
    assert len(data) == MAX_MANIFEST_BYTES + 1
    with pytest.raises(InvalidManifest, match="exceeds"):
        Manifest.decode(data)
    assert calls == []


def test_input_at_the_byte_limit_is_unpacked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = msgpack.unpackb

    def spy(data: bytes, **kwargs: Any) -> Any:
        calls.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(msgpack, "unpackb", spy)
    with pytest.raises(InvalidManifest):
        Manifest.decode(bytes(MAX_MANIFEST_BYTES))
    assert calls == [MAX_MANIFEST_BYTES]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xc4\xff" + bytes(255), id="lone-bin"),
        pytest.param(b"\xdc\xff\xff", id="huge-array-header"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array32-header"),
        pytest.param(b"\xc6\xff\xff\xff\xff", id="bin32-4GiB-header"),
        pytest.param(b"\xdb\xff\xff\xff\xff", id="str32-4GiB-header"),
        pytest.param(b"\xdf\x00\x00\x00\x01\x01\x01", id="map32"),
        pytest.param(b"\x91" * 5000 + b"\x90", id="deep-nesting"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\xd6\xff\x00\x00\x00\x00", id="timestamp-ext"),
        pytest.param(b"\xc7\x00\x05", id="empty-ext"),
        pytest.param(b"\xd9\x02\xff\xfe", id="invalid-utf8"),
        pytest.param(b"\x81\x90\x01", id="unhashable-map-key"),
        pytest.param(b"", id="empty"),
    ],
)
def test_hostile_msgpack_is_rejected(data: bytes) -> None:
    with pytest.raises(InvalidManifest):
        Manifest.decode(data)


# --- chunk_length and segments ---


@pytest.mark.parametrize(
    ("size", "last"),
    [(1, 1), (CS - 1, CS - 1), (CS, CS), (CS + 1, 1), (5 * CS, CS), (5 * CS + 123, 123)],
)
def test_chunk_length_of_last_chunk(size: int, last: int) -> None:
    m = make(size)
    n = len(m.chunk_hashes)
    assert m.chunk_length(n - 1) == last
    for i in range(n - 1):
        assert m.chunk_length(i) == CS
    assert sum(m.chunk_length(i) for i in range(n)) == size


@pytest.mark.parametrize(("size", "index"), [(0, 0), (CS, 1), (CS, -1), (3 * CS, 3), (3 * CS, 100)])
def test_chunk_length_out_of_range_raises(size: int, index: int) -> None:
    with pytest.raises(IndexError):
        make(size).chunk_length(index)


@st.composite
def segment_cases(draw: st.DrawFn) -> tuple[Manifest, int, int, int]:
    m = draw(manifests())
    start = draw(st.integers(min_value=0, max_value=m.size))
    stop = draw(st.integers(min_value=start, max_value=m.size))
    lo = max(1, (stop - start) // 300)  # keep the number of pieces small
    max_piece = draw(st.one_of(st.integers(min_value=lo, max_value=2 * m.chunk_size), st.just(lo)))
    return m, start, stop, max(max_piece, lo)


@given(segment_cases())
def test_segments_cover_exactly_the_range(case: tuple[Manifest, int, int, int]) -> None:
    m, start, stop, max_piece = case
    index_of = {h: i for i, h in enumerate(m.chunk_hashes)}
    pos = start
    for digest, offset, length in m.segments(start, stop, max_piece):
        index = index_of[digest]
        assert 1 <= length <= max_piece
        assert offset >= 0
        assert offset + length <= m.chunk_length(index)  # inside one chunk
        assert index * m.chunk_size + offset == pos  # contiguous, in order
        # greedy: each piece is as long as the limits allow
        assert length == min(m.chunk_length(index) - offset, stop - pos, max_piece)
        pos += length
    assert pos == stop


def test_segments_example() -> None:
    m = make(3 * CS + 10)
    h = m.chunk_hashes
    assert list(m.segments(CS - 5, 2 * CS + 3, CS)) == [(h[0], CS - 5, 5), (h[1], 0, CS), (h[2], 0, 3)]
    assert list(m.segments(0, 3 * CS + 10, 3000)) == [
        (h[0], 0, 3000),
        (h[0], 3000, CS - 3000),
        (h[1], 0, 3000),
        (h[1], 3000, CS - 3000),
        (h[2], 0, 3000),
        (h[2], 3000, CS - 3000),
        (h[3], 0, 10),
    ]


@pytest.mark.parametrize(("size", "at"), [(0, 0), (CS, 0), (CS, CS), (3 * CS + 1, 2 * CS)])
def test_empty_segment_range_yields_nothing(size: int, at: int) -> None:
    assert list(make(size).segments(at, at, 1)) == []


@pytest.mark.parametrize(
    ("start", "stop", "max_piece"),
    [
        (-1, 10, 100),
        (0, 2 * CS + 1, 100),
        (2 * CS + 1, 2 * CS + 1, 100),
        (10, 5, 100),
        (0, 10, 0),
        (0, 10, -1),
        (-5, -1, 100),
    ],
)
def test_segments_outside_content_raise_value_error(start: int, stop: int, max_piece: int) -> None:
    m = make(2 * CS)
    with pytest.raises(ValueError):
        list(m.segments(start, stop, max_piece))


def test_segments_on_empty_content_outside_raise() -> None:
    with pytest.raises(ValueError):
        list(make(0).segments(0, 1, 10))
