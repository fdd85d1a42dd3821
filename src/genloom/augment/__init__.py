"""genloom.augment: components that add new records derived from existing ones."""

from __future__ import annotations

from typing import Any


def is_augmented(meta: dict[str, Any] | None) -> bool:
    """True when a record was made by an augmenter (its meta has ``augmented_from``).

    Splits use it to keep augmented records out of validation and test data; the augmented copies
    of a record that goes to validation or test should also be left out of train (they would leak it).
    """
    return bool(meta) and meta.get("augmented_from") not in (None, "")  # type: ignore[union-attr]
