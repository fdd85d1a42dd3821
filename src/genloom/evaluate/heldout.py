"""Which held-out split an evaluation scores, and the prepared folder as the family reads it.

A family's ``evaluate`` reads its validation files (``val.bin``, ``val.parquet``...). With a test
split (``split.test_fraction`` > 0) prepare writes the test part under the same names with
``test`` for ``val``; ``evaluation_view`` gives a folder of links to the prepared files in which
the test files take the validation names, so the family scores the test split with the code
that scores validation, and training (which opens the real folder) never reads it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

Split = Literal["val", "test"]


def evaluation_split(prepared_dir: Path) -> Split:
    """``test`` when the prepared data holds a test split, else ``val``."""
    return "test" if any(Path(prepared_dir).glob("test*")) else "val"


@contextlib.contextmanager
def evaluation_view(prepared_dir: Path) -> Iterator[Path]:
    """The folder a family's ``evaluate`` should read: ``prepared_dir`` itself without a test split;
    with one, a temporary folder of links where ``test*`` files stand in for ``val*`` ones."""
    prepared_dir = Path(prepared_dir)
    if evaluation_split(prepared_dir) == "val":
        yield prepared_dir
        return
    with tempfile.TemporaryDirectory(prefix="genloom-eval-") as tmp:
        view = Path(tmp)
        for entry in prepared_dir.iterdir():
            if entry.name.startswith("val"):
                continue  # replaced by its test counterpart (or absent from the view)
            name = "val" + entry.name[4:] if entry.name.startswith("test") else entry.name
            os.symlink(entry.resolve(), view / name)
        yield view
