"""Every command of the README and of ``genloom --help`` with relative paths, run from another folder.

The pipelines are the tiny ones of conftest (seconds to train). The README's own code blocks are
parsed and run as written, from a folder laid out like the repository, where
``examples/quickstart/pipeline.yaml`` is a tiny pipeline.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from genloom.cli import app
from tests.conftest import REPO, TINY_TRAIN, write_pipeline

runner = CliRunner()
QUICKSTART = "examples/quickstart/pipeline.yaml"


def _readme_commands() -> list[list[str]]:
    """The ``genloom ...`` lines of the README's shell blocks, in order, as argument lists."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.strip().startswith("genloom "):
                commands.append(shlex.split(line, comments=True)[1:])
    return commands


@pytest.fixture(scope="module")
def repo_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A folder shaped like the repository, its quickstart run once by a real ``genloom run``.

    The run is a subprocess started in the folder's root with the relative path, output to pipes
    (no terminal), so it also shows the plain progress lines.
    """
    root = tmp_path_factory.mktemp("repo")
    write_pipeline(root / "examples" / "quickstart", train=TINY_TRAIN)
    (root / "sub").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "genloom.cli", "run", QUICKSTART, "--progress-every", "0.1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return root, proc


def test_run_without_a_terminal_prints_plain_progress_lines(
    repo_like: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, proc = repo_like
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    # one line per stage end, with its rows and rate
    assert any(
        re.match(r"ingest\s+ran in [\d.]+s\s+8/8 shards\s+[\d,]+ rows\s+[\d,.]+ rows/s", ln) for ln in lines
    )
    assert any(re.match(r"train\s+ran in .*step 30/30\s+[\d,.]+ steps/s", ln) for ln in lines), lines
    # periodic lines while training runs: step/total, rate, elapsed, ETA
    # (how many depends on the machine's speed: before the first step report the line has no rate)
    periodic = [
        ln
        for ln in lines
        if re.match(r"train\s+(step \d+/30|0 steps)\s+([\d,.]+ steps/s|rate \?)\s+elapsed .*eta ", ln)
    ]
    assert periodic, lines
    assert not any("\x1b[" in ln for ln in lines)  # no terminal escapes in a log
    assert (root / "examples" / "quickstart" / ".genloom").is_dir() and not (root / ".genloom").exists()
    # the hint names a prompt from this corpus, with the path as the user typed it
    hint = next(ln for ln in proc.stdout.splitlines() if ln.startswith("generate text:"))
    assert f"genloom generate {QUICKSTART} --prompt " in hint and "The json module" not in hint


def test_every_readme_command_from_the_repository_root(
    repo_like: tuple[Path, subprocess.CompletedProcess[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = repo_like
    monkeypatch.chdir(root)
    commands = _readme_commands()
    assert len(commands) >= 8 and ["init", "my-project"] in commands
    for args in commands:
        other = [a for a in args if a.startswith("examples/") and not a.startswith("examples/quickstart/")]
        if other:
            # another example's own data and training take minutes: tests/test_examples.py runs each
            # example end to end in a smoke mode; here its file, as the README names it, validates
            target = root / other[0]
            target.parent.mkdir(parents=True, exist_ok=True)
            shared = (REPO / other[0]).parent.joinpath("../../../shared").resolve()
            if not shared.is_dir():
                continue  # the example reads ../shared/data, absent here
            text = (REPO / other[0]).read_text().replace("../../../shared/", f"{shared}/")
            target.write_text(text)
            res = runner.invoke(app, ["validate", other[0]])
            assert res.exit_code == 0 and res.output.strip().endswith(": OK"), (args, res.output)
            continue
        if args[:2] == ["run", "my-project/pipeline.yaml"]:
            # `init` wrote a full project (minutes of training): keep its name, shrink its data and model
            cfg = yaml.safe_load(Path("my-project/pipeline.yaml").read_text())
            write_pipeline(root / "my-project", name=cfg["name"], train=TINY_TRAIN)
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args, res.output)
        assert res.output.strip(), args
        if args[0] == "validate":
            assert res.output.strip().endswith(": OK"), res.output
        if args[0] == "lineage":
            assert "ingest" in res.output and "model t v1" in res.output
        if args[0] == "generate":
            assert res.output.startswith("The json module")
    assert (root / "my-project" / "data").is_dir() and not (root / "examples" / "my-project").exists()


# Every subcommand of `genloom --help`, with relative paths, run from `sub/` next to the project.
FILE = "../examples/quickstart/pipeline.yaml"
COMMANDS: dict[str, tuple[list[str], str]] = {
    "init": (["init", "../new-project"], "next: genloom run ../new-project/pipeline.yaml"),
    "validate": (["validate", FILE, "--set", "clean.1.min_chars=300"], f"{FILE}: OK"),
    "schema": (["schema"], '"properties"'),
    "list": (["list", "clean"], "dedup_exact"),
    "run": (["run", FILE], "cached"),
    "status": (["status", FILE], "champion"),
    "explain": (["explain", FILE, "--set", "clean.1.min_chars=400"], "clean.1.min_chars"),
    "lineage": (["lineage", "python_docs:module/json/__init__.py", "-f", FILE], "model t v1"),
    "rejected": (["rejected", FILE, "--stage", "clean"], "rejected"),
    "report": (["report", FILE], "report.html"),
    "generate": (
        ["generate", FILE, "--prompt", "The json", "--max-new-tokens", "4", "--seed", "0"],
        "The json",
    ),
    "export": (["export", FILE, "--out", "../exported"], "exported t v1 to ../exported"),
    "sample": (["sample", FILE, "-n", "2", "--seed", "0", "-o", "../sampled.parquet"], "wrote 2 rows"),
    "keys create": (["keys", "create", "ci", "-p", FILE], "gl-"),
    "keys list": (["keys", "list", "-p", FILE], "ci"),
    "keys revoke": (["keys", "revoke", "{key_id}", "-p", FILE], "revoked key"),
    # a server blocks: tests/serve/test_cli_serve.py starts a real one; here its options parse
    "serve": (["serve", FILE, "--help"], "--port"),
    "ui": (["ui", FILE, "--help"], "--api-key-required"),
    "setup wordnet": (["setup", "wordnet", "--target", "nltk_data"], "WordNet ready at nltk_data"),
    # the project has one version, so the model is found (through the relative path) and refused
    "rollback": (["rollback", FILE, "--to", "1"], "version 1 of 't' is already the champion"),
    "monitor": (["monitor", FILE], "no drift or breach"),
}
EXIT_CODES = {"rollback": 1}


def test_every_subcommand_takes_a_path_relative_to_another_folder(
    repo_like: tuple[Path, subprocess.CompletedProcess[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer.main

    group = typer.main.get_group(app)
    names = set()
    for name, cmd in group.commands.items():
        sub = getattr(cmd, "commands", None)
        names |= {f"{name} {s}" for s in sub} if sub else {name}
    assert names == set(COMMANDS), "a new subcommand needs its line in COMMANDS"

    root, proc = repo_like
    assert proc.returncode == 0, proc.stderr
    monkeypatch.chdir(root / "sub")
    failed = {}
    for name, (args, expected) in COMMANDS.items():
        if name == "setup wordnet" and not Path("/usr/share/wordnet").is_dir():
            continue  # needs Debian's wordnet-base and wordnet-sense-index
        if "{key_id}" in args:
            from genloom.cli import _key_store

            key_id = _key_store(Path(FILE)).list()[0]["id"]
            args = [key_id if a == "{key_id}" else a for a in args]
        res = runner.invoke(app, args)
        if res.exit_code != EXIT_CODES.get(name, 0) or expected not in res.output:
            failed[name] = (res.exit_code, res.output[-500:])
    assert not failed, failed
    assert (root / "new-project" / "pipeline.yaml").is_file()
    assert (root / "exported" / "config.json").is_file()  # --out is relative to the cwd
    assert (root / "sampled.parquet").is_file()
    assert runner.invoke(app, ["validate", "../new-project/pipeline.yaml"]).exit_code == 0
