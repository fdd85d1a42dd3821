"""The layers hold: validating a pipeline file imports no training code, and the import contracts pass."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_TRAIN, write_pipeline

PROBE = """
import sys
from genloom.cli import main
sys.argv = ["genloom", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "transformers", "spacy", "tokenizers") if m in sys.modules)
print("heavy:", ",".join(heavy))
"""


@pytest.mark.parametrize("command", ["validate", "schema"])
def test_validate_and_schema_do_not_import_torch(tmp_path: Path, command: str) -> None:
    path = write_pipeline(tmp_path / "p", train=TINY_TRAIN)
    args = [command, str(path)] if command == "validate" else [command]
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "heavy:", out.stdout[-500:]


def test_the_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed (pip install 'genloom[dev]')")
    out = subprocess.run([lint], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:]
