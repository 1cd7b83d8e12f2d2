"""Seeds derived from the study seed: one stable hash for trial seeds and sampler seeds.

A hash (not ``seed + number``) so that neighbouring studies do not share seeds; stable across processes
and Python versions (unlike ``hash()``).
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed", "trial_seed"]


def derive_seed(seed: int, *parts: object) -> int:
    """The first 31 bits of ``sha256("dhns-search/<seed>/<part>/...")``."""
    text = "/".join(["dhns-search", str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def trial_seed(study_seed: int, number: int) -> int:
    """The seed of trial ``number`` of a study seeded with ``study_seed``."""
    return derive_seed(study_seed, number)
