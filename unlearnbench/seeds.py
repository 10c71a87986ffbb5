"""Hashes and seeds derived from JSON-able payloads: cache keys' and every derived seed's single source (the stage
models' key hashes this module, so an edit here trains them again, and no other store code does)."""
from __future__ import annotations

import hashlib
import json


def stable_hash(payload) -> str:
    """A 16-hex-digit hash of a JSON-able payload, independent of key order."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def derive_seed(payload, bits: int = 31) -> int:
    """A seed in [0, 2**bits) derived from a JSON-able payload: `stable_hash(payload)` read as an integer, mod 2**bits
    (bits ≤ 64: the hash has 64 bits)."""
    return int(stable_hash(payload), 16) % 2**bits
