#!/usr/bin/env python3
"""Golden vectors for agent/core/src/merkle.rs, independent of the Rust code.

Run: pip install blake3 && python3 agent/core/tests/vectors/merkle_vectors.py

This is a direct transcription of RFC 9162 section 2.1.1 (MTH) and 2.1.3.1
(PATH), recursive as in the RFC text, with HASH = BLAKE3-256:
  MTH({})     = HASH()                       (BLAKE3 of the empty string)
  MTH({d0})   = HASH(0x00 || d0)
  MTH(D[n])   = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])),
                k = largest power of two strictly less than n
  PATH(m, {d0}) = {}
  PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])      if m < k
                = PATH(m - k, D[k:n]) : MTH(D[0:k])  if m >= k
Leaf i of the test trees is the single byte i.
"""
from blake3 import blake3


def h(data: bytes) -> bytes:
    return blake3(data).digest()


def largest_pow2_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves):
    n = len(leaves)
    if n == 0:
        return h(b"")
    if n == 1:
        return h(b"\x00" + leaves[0])
    k = largest_pow2_below(n)
    return h(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def path(m, leaves):
    n = len(leaves)
    if n == 1:
        return []
    k = largest_pow2_below(n)
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def tree(n):
    return [bytes([i]) for i in range(n)]


print("# roots: (leaf count, root hex)")
for n in [0, 1, 2, 3, 4, 5, 7, 8]:
    print(f"({n}, \"{mth(tree(n)).hex()}\"),")

print("# proofs: (tree size, leaf index, [path hex, leaf-side sibling first])")
for n, m in [(5, 4), (7, 3), (8, 0), (3, 2)]:
    p = ",\n    ".join(f"\"{x.hex()}\"" for x in path(m, tree(n)))
    print(f"({n}, {m}, [\n    {p},\n]),")
