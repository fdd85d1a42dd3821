"""Fixtures for the file-source tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .sources_fixtures import shared_data_dir


@pytest.fixture
def shared_data() -> Path:
    """The shared real-world data folder; the test is skipped when it is absent."""
    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data (or GENLOOM_SHARED_DATA) is absent: real-world file tests skipped")
    return root
