"""Bigram flipping: swap adjacent words (a word-order noise augmentation)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field

from genloom.augment._common import WORD_RE, match_case, record_rng, selected
from genloom.core.registry import AUGMENTERS
from genloom.core.steps import Augmenter


@AUGMENTERS.register("bigram_flip")
class BigramFlipAugmenter(Augmenter):
    """Add copies of records in which adjacent word pairs are swapped ("the big dog" -> "big the dog").

    Each pair of neighbouring words separated only by spaces is swapped with probability ``rate``
    (a word takes part in at most one swap); punctuation and spacing stay where they were, and the
    first word's capital moves with the position. ``ratio`` picks the records, ``n_aug`` copies
    each; a copy identical to the original is not added. Deterministic for a ``seed`` (choices
    depend only on the seed and the record id). New records get ``meta.augmented_from``.
    """

    type: Literal["bigram_flip"] = "bigram_flip"
    column: str = "text"
    ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    n_aug: int = Field(default=1, ge=1)
    rate: float = Field(default=0.1, gt=0.0, le=1.0)
    seed: int = 0

    def flip(self, text: str, rng: Any) -> tuple[str, int]:
        """``text`` with word pairs swapped, and the number of swaps."""
        spans = [(m.start(), m.end()) for m in WORD_RE.finditer(text)]
        words = [text[a:b] for a, b in spans]
        swaps = 0
        i = 0
        while i < len(spans) - 1:
            between = text[spans[i][1] : spans[i + 1][0]]
            if between.strip(" ") == "" and rng.random() < self.rate:
                a, b = words[i], words[i + 1]
                first_cap = a[:1].isupper() and not a.isupper()
                if first_cap and b[:1].islower():
                    a, b = a[:1].lower() + a[1:], match_case(b, "Xx")
                words[i], words[i + 1] = b, a
                swaps += 1
                i += 2
            else:
                i += 1
        out, pos = [], 0
        for (a, b), w in zip(spans, words, strict=True):
            out += [text[pos:a], w]
            pos = b
        out.append(text[pos:])
        return "".join(out), swaps

    def expand(self, record: dict[str, Any]) -> Iterable[dict[str, Any]]:
        text = record.get(self.column)
        if not text or not selected(self.seed, record["id"], self.ratio, self.type):
            return []
        out = []
        for k in range(self.n_aug):
            new, swaps = self.flip(text, record_rng(self.seed, record["id"], k, self.type))
            if swaps and new != text:
                out.append({self.column: new, "meta": {"swaps": swaps}})
        return out
