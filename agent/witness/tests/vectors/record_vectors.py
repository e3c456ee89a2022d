#!/usr/bin/env python3
"""Golden vector for agent/witness (record.rs), computed independently of the Rust code.

Run: pip install blake3 cryptography && python3 agent/witness/tests/vectors/record_vectors.py
Writes out the canonical encoding of the golden record byte by byte from the
format in record.rs's module docs, the events root (RFC 9162 Merkle tree over
BLAKE3 with leaf tag 0x00 and node tag 0x01), the record hash
BLAKE3(0x13 || record) and the Ed25519 (RFC 8032) signature over that hash.
The Rust test `golden_vector` must print the same hex.
"""
import struct

from blake3 import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)
def i64(v): return struct.pack("<q", v)
def s(text): b = text.encode(); return u32(len(b)) + b


def leaf(data): return blake3(b"\x00" + data).digest()
def node(l, r): return blake3(b"\x01" + l + r).digest()


def mth(leaves):
    if not leaves:
        return blake3(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


key = Ed25519PrivateKey.from_private_bytes(SEED)
public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

violations = [
    u8(0) + i64(321) + s("bpf") + s("denied"),       # syscall bpf
    u8(1) + s("write_file /etc") + s(""),            # landlock
    u8(2) + s("memory.max"),                         # oom kill
    u8(3) + s(""),                                   # pids limit
]
exit_ = u8(0) + u8(3)                                # exited with status 3
events = [u8(0) + v for v in violations] + [u8(2) + exit_]
events_root = mth([leaf(e) for e in events])
empty_root = blake3(b"").digest()

header = (public + s("golden") + bytes([0x11]) * 32 + bytes([0x22]) * 32 + bytes([0x33]) * 32
          + bytes([0x44]) * 32 + u64(1_700_000_000_000_000_000))
roots = events_root + bytes([0x55]) * 32 + empty_root
namespaces = 0xFE                                    # all but user
decision = (bytes([0x66]) * 32 + u8(1) + u8(7) + u8(2) + u16(namespaces) + exit_
            + u32(len(violations)) + b"".join(violations) + u64(0) + u8(1))  # verdict violated
record = u8(1) + header + roots + decision
record_hash = blake3(b"\x13" + record).digest()
signature = key.sign(record_hash)
signed = record + public + signature

print("events_root =", events_root.hex())
print("record_hash =", record_hash.hex())
print("signature   =", signature.hex())
print("signed      =", signed.hex())
