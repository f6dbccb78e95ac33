"""Merkle tree over a file's ordered chunk hashes, with inclusion proofs.

Participants: a holder of the manifest (knows every chunk hash) and a verifier
that knows only the Merkle root, the chunk count and one chunk.
Goals: prove that chunk *i* belongs to the content at position *i* with
O(log n) hashes, so a peer can verify a single chunk before the whole manifest
arrives.
Non-goals: sub-chunk ranges (a chunk is the unit of verification).
Flow: the tree shape is RFC 6962's Merkle Tree Hash: leaves are
``SHA-256(0x00 || chunk_hash)``, inner nodes ``SHA-256(0x01 || left || right)``,
and a tree of n leaves splits at the largest power of two below n. The domain
prefixes keep a leaf from being passed off as an inner node. The root of zero
leaves is ``SHA-256(b"")``.
Limits: proof length is bounded by 64 (trees of up to 2**64 leaves).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["merkle_root", "inclusion_proof", "verify_inclusion", "MAX_PROOF_LEN"]

MAX_PROOF_LEN = 64


def _leaf(chunk_hash: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + chunk_hash).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def merkle_root(chunk_hashes: Sequence[bytes]) -> bytes:
    """Root over the chunk hashes; iterative, so deep trees cost no recursion."""
    if not chunk_hashes:
        return hashlib.sha256(b"").digest()
    level = [_leaf(h) for h in chunk_hashes]
    # Pairing left to right and carrying an odd last node up unchanged builds
    # exactly the RFC 6962 tree (the right subtree holds the remainder).
    while len(level) > 1:
        paired = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def inclusion_proof(chunk_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for leaf ``index``: sibling hashes from the leaf up."""
    if not 0 <= index < len(chunk_hashes):
        raise IndexError(f"chunk index {index} out of range")
    proof: list[bytes] = []
    lo, hi = 0, len(chunk_hashes)
    # Walk down from the root recording the sibling subtree at each split.
    path: list[tuple[int, int]] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo = lo + k
    for sib_lo, sib_hi in reversed(path):
        proof.append(merkle_root(chunk_hashes[sib_lo:sib_hi]))
    return proof


def verify_inclusion(chunk_hash: bytes, index: int, count: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True when ``proof`` shows ``chunk_hash`` is leaf ``index`` of ``count``."""
    if not 0 <= index < count or len(proof) > MAX_PROOF_LEN:
        return False
    # Recompute the split decisions top-down, then fold the proof bottom-up.
    sides: list[bool] = []  # True when the sibling is on the right
    lo, hi = 0, count
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            sides.append(True)
            hi = lo + k
        else:
            sides.append(False)
            lo = lo + k
    if len(sides) != len(proof):
        return False
    acc = _leaf(chunk_hash)
    for sibling, right in zip(proof, reversed(sides), strict=True):
        if len(sibling) != 32:
            return False
        acc = _node(acc, sibling) if right else _node(sibling, acc)
    return acc == root
