"""The Python reference documentation and the standard library's docstrings: a corpus every
Python installation carries (the quickstart's default data)."""

from __future__ import annotations

import ast
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from genloom.core.errors import RecordError
from genloom.core.records import record_id
from genloom.core.registry import SOURCES
from genloom.core.steps import Source

_SKIP_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idle_test",
    "__pycache__",
    "lib2to3",
    "ensurepip",
    "turtledemo",
    "config-3",
    "venv",
}


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _topics_path() -> Path:
    import pydoc_data

    return Path(pydoc_data.__file__).parent / "topics.py"


def module_document(source: str, module: str) -> str:
    """A module's docstrings as one document: the module docstring, then each class and function.

    Parsed with ``ast``, never imported: importing arbitrary stdlib modules has side effects.
    """
    tree = ast.parse(source)
    parts = [f"Module {module}"]
    doc = ast.get_docstring(tree)
    if doc:
        parts.append(doc)

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                if child.name.startswith("_") and child.name != "__init__":
                    continue
                qual = f"{prefix}{child.name}"
                d = ast.get_docstring(child)
                if d:
                    if isinstance(child, ast.ClassDef):
                        head = f"class {qual}"
                    else:
                        head = f"{qual}({ast.unparse(child.args)})"
                    parts.append(f"{head}\n{d}")
                if isinstance(child, ast.ClassDef):
                    walk(child, f"{qual}.")

    walk(tree, f"{module}.")
    return "\n\n".join(parts)


@SOURCES.register("python_docs")
class PythonDocsSource(Source):
    """The Python reference documentation (``pydoc_data.topics``) and the stdlib's docstrings.

    One record per documentation topic and one per standard-library module (its module, class and
    function docstrings, read from the source files with ``ast``, never by importing them).
    Partitions are the topic table and each module file; fingerprints are file sizes and mtimes.
    """

    type: Literal["python_docs"] = "python_docs"
    topics: bool = Field(True, description="Include the reference documentation topics")
    modules: bool = Field(True, description="Include standard-library module docstrings")
    min_chars: int = Field(200, description="Skip module documents shorter than this")
    packages: list[str] | None = Field(
        None, description="Only these top-level modules or packages (e.g. [json, email]); default: all"
    )

    def local_only(self) -> bool:
        return True  # this interpreter's installed packages

    def partitions(self) -> list[Any]:
        parts: list[Any] = ["topics"] if self.topics else []
        if self.modules:
            root = _stdlib_root()
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(
                    d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-")
                )
                for name in sorted(filenames):
                    if name.endswith(".py") and (not name.startswith("_") or name == "__init__.py"):
                        rel = Path(dirpath, name).relative_to(root)
                        top = rel.parts[0].removesuffix(".py")
                        if self.packages is None or top in self.packages:
                            parts.append(str(rel))
        return parts

    def _path(self, partition: str) -> Path:
        return _topics_path() if partition == "topics" else _stdlib_root() / partition

    def partition_fingerprint(self, partition: Any) -> str:
        st = self._path(partition).stat()
        return f"{partition}:{st.st_size}:{st.st_mtime_ns}"

    def location(self, partition: Any) -> str:
        return str(self._path(partition))

    def read(self, partition: Any) -> Iterator[dict[str, Any]]:
        if partition == "topics":
            from pydoc_data.topics import topics

            for name in sorted(topics):
                yield {
                    "id": record_id("python_docs", f"topic/{name}"),
                    "text": topics[name],
                    "source": "python_docs",
                    "meta": {"kind": "topic", "topic": name, "path": str(_topics_path())},
                }
            return
        path = self._path(partition)
        module = partition[:-3].replace(os.sep, ".").removesuffix(".__init__")
        try:
            text = module_document(path.read_text(encoding="utf-8"), module)
        except (SyntaxError, UnicodeDecodeError) as e:
            raise RecordError("unparsable_module", f"{path}: {e}") from e
        if len(text) >= self.min_chars:
            yield {
                "id": record_id("python_docs", f"module/{partition}"),
                "text": text,
                "source": "python_docs",
                "meta": {"kind": "module", "module": module, "path": str(path)},
            }
