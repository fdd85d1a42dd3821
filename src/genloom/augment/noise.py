"""Noise augmentation: keyboard typos, character and word edits for text; Gaussian noise for numbers, series, images."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field

from genloom.augment._common import WORD_RE, record_rng, selected
from genloom.core.errors import MissingDependencyError, RecordError
from genloom.core.registry import AUGMENTERS
from genloom.core.steps import Augmenter

_ROWS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]


def _keyboard_neighbours() -> dict[str, str]:
    """QWERTY neighbours of each letter (same row and the rows above and below)."""
    pos = {c: (r, i) for r, row in enumerate(_ROWS) for i, c in enumerate(row)}
    out: dict[str, str] = {}
    for c, (r, i) in pos.items():
        near = [
            d
            for d, (r2, i2) in pos.items()
            if d != c and abs(r2 - r) <= 1 and abs(i2 - i - (r2 - r) * 0.5) <= 1
        ]
        out[c] = "".join(sorted(near))
    return out


KEYBOARD = _keyboard_neighbours()


@AUGMENTERS.register("noise")
class NoiseAugmenter(Augmenter):
    """Add noisy copies of records: typos and character/word edits in text, Gaussian noise in numbers.

    Text (``column``), per letter: ``typo_rate`` replaces it by a QWERTY neighbour, ``char_insert``
    inserts a neighbour after it, ``char_delete`` deletes it, ``char_swap`` swaps it with the next
    letter; per word: ``word_dropout`` deletes it, ``word_insert`` repeats a random word of the same
    record after it. Numbers: each of ``numeric_columns`` gets N(0, ``sigma``) noise, times the
    absolute value when ``relative`` (so 0.05 is about 5%). Series: each list in ``series_columns``
    gets N(0, ``sigma`` x the series' standard deviation) per point. Images: each PNG/JPEG in
    ``image_columns`` gets N(0, ``image_sigma``) per channel on the 0-255 scale (needs Pillow and
    NumPy), re-encoded as PNG. ``ratio`` picks records, ``n_aug`` copies each; deterministic for a
    ``seed`` and a record id. New records get ``meta.augmented_from``.
    """

    type: Literal["noise"] = "noise"
    column: str | None = "text"
    ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    n_aug: int = Field(default=1, ge=1)
    seed: int = 0
    typo_rate: float = Field(default=0.02, ge=0.0, le=1.0)
    char_insert: float = Field(default=0.0, ge=0.0, le=1.0)
    char_delete: float = Field(default=0.0, ge=0.0, le=1.0)
    char_swap: float = Field(default=0.0, ge=0.0, le=1.0)
    word_dropout: float = Field(default=0.0, ge=0.0, le=1.0)
    word_insert: float = Field(default=0.0, ge=0.0, le=1.0)
    numeric_columns: list[str] = Field(default_factory=list)
    series_columns: list[str] = Field(default_factory=list)
    image_columns: list[str] = Field(default_factory=list)
    sigma: float = Field(default=0.05, ge=0.0)
    relative: bool = True
    image_sigma: float = Field(default=8.0, ge=0.0)

    def noisy_text(self, text: str, rng: Any) -> str:
        """``text`` with typos and character/word edits."""
        if self.word_dropout or self.word_insert:
            words = WORD_RE.findall(text)
            out, pos = [], 0
            for m in WORD_RE.finditer(text):
                out.append(text[pos : m.start()])
                pos = m.end()
                if self.word_dropout and rng.random() < self.word_dropout:
                    continue
                out.append(m.group(0))
                if self.word_insert and words and rng.random() < self.word_insert:
                    out.append(" " + rng.choice(words))
            out.append(text[pos:])
            text = "".join(out)
            text = " ".join(p for p in text.split(" ") if p) if "  " in text else text
        if not (self.typo_rate or self.char_insert or self.char_delete or self.char_swap):
            return text
        chars = list(text)
        res: list[str] = []
        i = 0
        while i < len(chars):
            c = chars[i]
            low = c.lower()
            if not low.isalpha():
                res.append(c)
                i += 1
                continue
            r = rng.random()
            near = KEYBOARD.get(low, "")
            if self.char_delete and r < self.char_delete:
                i += 1
                continue
            r -= self.char_delete
            if self.char_swap and r < self.char_swap and i + 1 < len(chars) and chars[i + 1].isalpha():
                res += [chars[i + 1], c]
                i += 2
                continue
            r -= self.char_swap
            if self.typo_rate and near and r < self.typo_rate:
                t = rng.choice(near)
                res.append(t.upper() if c.isupper() else t)
                i += 1
                continue
            r -= self.typo_rate
            res.append(c)
            if self.char_insert and near and r < self.char_insert:
                res.append(rng.choice(near))
            i += 1
        return "".join(res)

    def _number(self, value: Any, rng: Any) -> Any:
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return value
        scale = abs(value) if self.relative else 1.0
        new = value + rng.gauss(0.0, self.sigma * scale)
        return round(new) if isinstance(value, int) else new

    def _series(self, values: list[float] | None, rng: Any) -> list[float] | None:
        if not values:
            return values
        xs = [v for v in values if v is not None]
        if len(xs) < 2:
            return values
        mean = sum(xs) / len(xs)
        std = (sum((v - mean) ** 2 for v in xs) / (len(xs) - 1)) ** 0.5 or 1.0
        return [None if v is None else v + rng.gauss(0.0, self.sigma * std) for v in values]

    def _image(self, data: bytes | None, seed: int) -> bytes | None:
        if not data:
            return data
        try:
            import numpy as np
            from PIL import Image
        except ImportError as e:
            raise MissingDependencyError("Pillow (image noise)", "pip install pillow") from e
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Exception as e:
            raise RecordError("unreadable_image", str(e)) from e
        arr = np.asarray(img.convert("RGBA" if "A" in img.getbands() else "RGB"), dtype=np.float32)
        noise = np.random.default_rng(seed).normal(0.0, self.image_sigma, size=arr.shape)
        if arr.shape[-1] == 4:
            noise[..., 3] = 0.0
        out = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        out.save(buf, format="PNG")
        return buf.getvalue()

    def expand(self, record: dict[str, Any]) -> Iterable[dict[str, Any]]:
        if not selected(self.seed, record["id"], self.ratio, self.type):
            return []
        out = []
        for k in range(self.n_aug):
            rng = record_rng(self.seed, record["id"], k, self.type)
            new: dict[str, Any] = {}
            text = record.get(self.column) if self.column else None
            if text:
                new[self.column] = self.noisy_text(text, rng)  # type: ignore[index]
            for col in self.numeric_columns:
                new[col] = self._number(record.get(col), rng)
            for col in self.series_columns:
                new[col] = self._series(record.get(col), rng)
            for col in self.image_columns:
                new[col] = self._image(record.get(col), rng.getrandbits(63))
            if any(new.get(c) != record.get(c) for c in new):
                out.append(new)
        return out
