"""Merkle tree over chunk hashes: RFC 6962 Merkle Tree Hash and audit paths."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.merkle import MAX_PROOF_LEN, inclusion_proof, merkle_root, verify_inclusion

# --- Independent reference: RFC 6962 section 2.1, written recursively ---


def ref_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = ref_split(n)
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 PATH(m, D[n]): sibling hashes from the leaf up."""
    n = len(leaves)
    if n <= 1:
        return []
    k = ref_split(n)
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_shape(index: int, count: int) -> list[bool]:
    """Top-down sides of the audit path (True: sibling on the right)."""
    sides = []
    lo, hi = 0, count
    while hi - lo > 1:
        k = ref_split(hi - lo)
        if index < lo + k:
            sides.append(True)
            hi = lo + k
        else:
            sides.append(False)
            lo += k
    return sides


def chunk_hashes(n: int, seed: int = 0) -> list[bytes]:
    """n distinct 32-byte chunk hashes."""
    return [hashlib.sha256(seed.to_bytes(8, "big") + i.to_bytes(8, "big")).digest() for i in range(n)]


def flip(b: bytes, bit: int = 0) -> bytes:
    i = bit // 8 % len(b)
    return b[:i] + bytes([b[i] ^ (1 << (bit % 8))]) + b[i + 1 :]


# --- Root ---


def test_empty_root_is_sha256_of_nothing() -> None:
    assert merkle_root([]) == hashlib.sha256(b"").digest()


def test_single_leaf_root_is_domain_separated_leaf_hash() -> None:
    (h,) = chunk_hashes(1)
    assert merkle_root([h]) == hashlib.sha256(b"\x00" + h).digest()
    assert merkle_root([h]) != h


def test_two_and_three_leaf_roots_by_hand() -> None:
    a, b, c = chunk_hashes(3)

    def leaf(x: bytes) -> bytes:
        return hashlib.sha256(b"\x00" + x).digest()

    def node(x: bytes, y: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + x + y).digest()

    assert merkle_root([a, b]) == node(leaf(a), leaf(b))
    assert merkle_root([a, b, c]) == node(node(leaf(a), leaf(b)), leaf(c))


@pytest.mark.parametrize("n", range(0, 70))
def test_root_matches_reference_small(n: int) -> None:
    assert merkle_root(chunk_hashes(n)) == ref_mth(chunk_hashes(n))


@given(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=2**32))
def test_root_matches_reference(n: int, seed: int) -> None:
    leaves = chunk_hashes(n, seed)
    assert merkle_root(leaves) == ref_mth(leaves)


def test_root_accepts_a_tuple() -> None:
    leaves = chunk_hashes(5)
    assert merkle_root(tuple(leaves)) == ref_mth(leaves)


def test_root_depends_on_order() -> None:
    leaves = chunk_hashes(4)
    assert merkle_root(leaves) != merkle_root([leaves[1], leaves[0], *leaves[2:]])


def test_leaf_cannot_pose_as_inner_node() -> None:
    # A one-leaf tree whose chunk hash is the concatenation-free inner node of
    # two leaves must not share the two-leaf root (domain separation).
    a, b = chunk_hashes(2)
    two = merkle_root([a, b])
    inner_as_leaf = merkle_root([two])
    assert inner_as_leaf != two


# --- Proofs ---


@pytest.mark.parametrize("n", [*range(1, 40), 63, 64, 65, 127, 128, 129, 300])
def test_every_index_proof_verifies(n: int) -> None:
    leaves = chunk_hashes(n)
    root = merkle_root(leaves)
    for i in range(n):
        proof = inclusion_proof(leaves, i)
        assert proof == ref_path(i, leaves)
        assert len(proof) == len(ref_shape(i, n)) <= MAX_PROOF_LEN
        assert verify_inclusion(leaves[i], i, n, proof, root)


@given(st.integers(min_value=1, max_value=300), st.data())
def test_proof_verifies_and_matches_reference(n: int, data: st.DataObject) -> None:
    leaves = chunk_hashes(n, data.draw(st.integers(min_value=0, max_value=2**32)))
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = inclusion_proof(leaves, i)
    assert proof == ref_path(i, leaves)
    assert verify_inclusion(leaves[i], i, n, proof, ref_mth(leaves))


@given(st.integers(min_value=2, max_value=300), st.data())
def test_tampered_proof_element_fails(n: int, data: st.DataObject) -> None:
    leaves = chunk_hashes(n)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = inclusion_proof(leaves, i)
    j = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=255))
    bad = list(proof)
    bad[j] = flip(bad[j], bit)
    assert not verify_inclusion(leaves[i], i, n, bad, merkle_root(leaves))


@given(st.integers(min_value=1, max_value=300), st.data())
def test_tampered_chunk_hash_fails(n: int, data: st.DataObject) -> None:
    leaves = chunk_hashes(n)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    bit = data.draw(st.integers(min_value=0, max_value=255))
    proof = inclusion_proof(leaves, i)
    assert not verify_inclusion(flip(leaves[i], bit), i, n, proof, merkle_root(leaves))


@given(st.integers(min_value=1, max_value=300), st.data())
def test_tampered_root_fails(n: int, data: st.DataObject) -> None:
    leaves = chunk_hashes(n)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    bit = data.draw(st.integers(min_value=0, max_value=255))
    proof = inclusion_proof(leaves, i)
    assert not verify_inclusion(leaves[i], i, n, proof, flip(merkle_root(leaves), bit))


@given(st.integers(min_value=2, max_value=300), st.data())
def test_wrong_index_fails(n: int, data: st.DataObject) -> None:
    leaves = chunk_hashes(n)  # distinct, so no other position holds this chunk
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    j = data.draw(st.integers(min_value=0, max_value=n - 1).filter(lambda j: j != i))
    proof = inclusion_proof(leaves, i)
    assert not verify_inclusion(leaves[i], j, n, proof, merkle_root(leaves))


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 64])
def test_every_wrong_index_fails(n: int) -> None:
    leaves = chunk_hashes(n)
    root = merkle_root(leaves)
    for i in range(n):
        proof = inclusion_proof(leaves, i)
        for j in range(n):
            assert verify_inclusion(leaves[i], j, n, proof, root) == (i == j)


@given(st.integers(min_value=1, max_value=300), st.data())
def test_wrong_count_fails_unless_the_path_shape_is_identical(n: int, data: st.DataObject) -> None:
    # RFC 6962 roots do not commit to the leaf count: a count whose audit path
    # has the same shape (same length and sides) for this index recomputes the
    # same root. Every other count must fail.
    leaves = chunk_hashes(n)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    m = data.draw(st.integers(min_value=0, max_value=2 * n + 2).filter(lambda m: m != n))
    proof = inclusion_proof(leaves, i)
    ok = verify_inclusion(leaves[i], i, m, proof, merkle_root(leaves))
    same_shape = i < m and ref_shape(i, m) == ref_shape(i, n)
    if not same_shape:
        assert not ok


@pytest.mark.parametrize("n", [3, 5, 6, 7, 9, 33, 100])
def test_wrong_count_usually_fails(n: int) -> None:
    leaves = chunk_hashes(n)
    root = merkle_root(leaves)
    proof = inclusion_proof(leaves, n - 1)  # the last leaf's shape is unique to n
    for m in (n - 1, n + 1, n * 2):
        assert not verify_inclusion(leaves[n - 1], n - 1, m, proof, root)


def test_truncated_or_extended_proof_fails() -> None:
    leaves = chunk_hashes(37)
    root = merkle_root(leaves)
    proof = inclusion_proof(leaves, 11)
    assert not verify_inclusion(leaves[11], 11, 37, proof[:-1], root)
    assert not verify_inclusion(leaves[11], 11, 37, [*proof, proof[-1]], root)
    assert not verify_inclusion(leaves[11], 11, 37, [], root)


@pytest.mark.parametrize("bad_len", [0, 31, 33, 64])
def test_proof_element_of_wrong_length_fails(bad_len: int) -> None:
    leaves = chunk_hashes(8)
    proof = inclusion_proof(leaves, 3)
    proof[1] = bytes(bad_len)
    assert not verify_inclusion(leaves[3], 3, 8, proof, merkle_root(leaves))


def test_single_leaf_proof_is_empty() -> None:
    leaves = chunk_hashes(1)
    assert inclusion_proof(leaves, 0) == []
    assert verify_inclusion(leaves[0], 0, 1, [], merkle_root(leaves))


def test_max_depth_proof_is_accepted() -> None:
    # A 2**64-leaf tree has 64-element paths: the limit is inclusive.
    count = 2**64
    index = count - 1
    proof = chunk_hashes(MAX_PROOF_LEN)
    acc = hashlib.sha256(b"\x00" + b"chunk".ljust(32, b"\0")).digest()
    for sibling in proof:  # the last leaf: every sibling is on the left
        acc = hashlib.sha256(b"\x01" + sibling + acc).digest()
    assert verify_inclusion(b"chunk".ljust(32, b"\0"), index, count, proof, acc)


def test_proof_longer_than_64_is_rejected() -> None:
    # Same construction one level deeper: a correct 65-element path for a
    # 2**65-leaf tree must still be refused.
    count = 2**65
    index = count - 1
    chunk = b"chunk".ljust(32, b"\0")
    proof = chunk_hashes(MAX_PROOF_LEN + 1)
    acc = hashlib.sha256(b"\x00" + chunk).digest()
    for sibling in proof:
        acc = hashlib.sha256(b"\x01" + sibling + acc).digest()
    assert MAX_PROOF_LEN == 64
    assert not verify_inclusion(chunk, index, count, proof, acc)


@settings(max_examples=20)
@given(st.integers(min_value=MAX_PROOF_LEN + 1, max_value=10_000))
def test_any_proof_over_limit_is_rejected(length: int) -> None:
    leaves = chunk_hashes(4)
    assert not verify_inclusion(leaves[0], 0, 4, chunk_hashes(length), merkle_root(leaves))


@pytest.mark.parametrize(("n", "index"), [(0, 0), (1, 1), (5, 5), (5, 100), (5, -1), (1, -1)])
def test_inclusion_proof_index_out_of_range_raises(n: int, index: int) -> None:
    with pytest.raises(IndexError):
        inclusion_proof(chunk_hashes(n), index)


@pytest.mark.parametrize(("index", "count"), [(5, 5), (6, 5), (-1, 5), (0, 0), (0, -1), (-1, 0)])
def test_verify_index_out_of_range_returns_false(index: int, count: int) -> None:
    leaves = chunk_hashes(5)
    proof = inclusion_proof(leaves, 4)
    assert verify_inclusion(leaves[4], index, count, proof, merkle_root(leaves)) is False
