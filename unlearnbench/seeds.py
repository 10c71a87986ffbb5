"""Hashes and seeds derived from JSON-able payloads, and files' digests: cache keys' and every derived seed's single
source (the stage models' key hashes this module, so an edit here trains them again, and no other store code does)."""
from __future__ import annotations

import hashlib
import json
import os


def stable_hash(payload) -> str:
    """A 16-hex-digit hash of a JSON-able payload, independent of key order."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def derive_seed(payload, bits: int = 31) -> int:
    """A seed in [0, 2**bits) derived from a JSON-able payload: `stable_hash(payload)` read as an integer, mod 2**bits
    (bits ≤ 64: the hash has 64 bits)."""
    return int(stable_hash(payload), 16) % 2**bits


_DIGESTS: dict[tuple, str] = {}  # (file, size, mtime_ns) → SHA-256: a file is read once per process while unchanged


def file_digest(path) -> str:
    """The SHA-256 (hex) of a file's bytes (pretrained weights, the CIFAR-10 tarball: a key's part), read once per
    process for as long as the file's size and modification time stay the same."""
    stat = os.stat(path)
    memo = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]
