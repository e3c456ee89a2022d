#!/usr/bin/env python3
"""Golden vectors for agent/core/src/hash.rs, computed independently of the Rust code.

Run: pip install blake3 && python3 agent/core/tests/vectors/hash_vectors.py
The tagged hash is BLAKE3(tag_byte || part_0 || part_1 || ...), written out here
by plain byte concatenation so the Rust framing (TaggedHasher, hash_tagged) is
checked against the definition, not against itself.
"""
from blake3 import blake3


def tagged(tag: int, *parts: bytes) -> str:
    return blake3(bytes([tag]) + b"".join(parts)).hexdigest()


print("blake3_256(b'')                 =", blake3(b"").hexdigest())
print("blake3_256(b'abc')              =", blake3(b"abc").hexdigest())
print("hash_tagged(0x00, [])           =", tagged(0x00))
print("hash_tagged(0x10, [b'hello'])   =", tagged(0x10, b"hello"))
print("hash_tagged(0x12, [b'seed', 0*32]) =", tagged(0x12, b"seed", bytes(32)))
print("hash_tagged(0x14, [i % 251 for i in 0..1025]) =",
      tagged(0x14, bytes(i % 251 for i in range(1025))))
