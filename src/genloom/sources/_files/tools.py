"""External converters (antiword, catppt, tesseract...) that some readers run."""

from __future__ import annotations

import shutil


def which(*tools: str) -> str | None:
    """The first of ``tools`` found on PATH."""
    for t in tools:
        if shutil.which(t):
            return t
    return None
