"""Seed derivation.

Every random choice in the toolkit flows from one user seed. Sub-seeds are derived by
hashing the seed with a purpose string, so adding a task or a chunk never shifts the
random numbers of another one (unlike drawing from one shared generator in sequence).
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed that depends only on `seed` and the given parts."""
    h = hashlib.sha256(repr((int(seed),) + tuple(str(p) for p in parts)).encode("utf-8"))
    return int.from_bytes(h.digest()[:8], "big") >> 1


def derive_rng(seed: int, *parts: object) -> random.Random:
    return random.Random(derive_seed(seed, *parts))
