"""Helpers shared by augmenters: per-record seeded randomness and word spans."""

from __future__ import annotations

import hashlib
import random
import re

#: words: letters/digits with inner apostrophes or hyphens (any script)
WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


def record_rng(seed: int, record_id: str, k: int = 0, salt: str = "") -> random.Random:
    """A random generator that depends only on (seed, record id, copy number, salt): deterministic
    whatever the shard, batch or process a record lands in."""
    key = f"{seed}\x00{record_id}\x00{k}\x00{salt}".encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))


def selected(seed: int, record_id: str, ratio: float, salt: str = "") -> bool:
    """Whether a record is picked for augmentation (a deterministic coin with probability ``ratio``)."""
    return ratio >= 1.0 or record_rng(seed, record_id, -1, salt).random() < ratio


def match_case(word: str, template: str) -> str:
    """``word`` in the case pattern of ``template`` (UPPER, Title or lower)."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word
