"""Every registered component is selectable from YAML and documented."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from genloom.cli import app
from genloom.core.config import has_literal_type
from genloom.core.errors import ConfigError
from genloom.core.registry import REGISTRIES, SOURCES, first_doc_line

ALL = [(stage, name, cls) for stage, reg in REGISTRIES.items() for name, cls in reg.items()]


@pytest.mark.parametrize(("stage", "name", "cls"), ALL, ids=[f"{s}.{n}" for s, n, _ in ALL])
def test_component_has_literal_type_matching_its_name_and_a_docstring(
    stage: str, name: str, cls: type
) -> None:
    assert has_literal_type(cls), f"{cls.__name__} must declare type: Literal[{name!r}]"
    assert cls.model_fields["type"].default == name
    assert first_doc_line(cls), f"{cls.__name__} needs a docstring (it is its user documentation)"


def test_unknown_name_lists_what_exists() -> None:
    with pytest.raises(ConfigError) as e:
        SOURCES.get("pyton_docs", path="sources.0.type")
    assert "did you mean 'python_docs'" in str(e.value) and "available:" in str(e.value)


def test_list_prints_components_with_their_doc_line() -> None:
    res = CliRunner().invoke(app, ["list", "clean"])
    assert res.exit_code == 0
    assert "dedup_exact" in res.output and "length" in res.output
    assert "sources" not in res.output.split("\n")[0]


def test_plugins_register_through_the_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    import genloom.core.registry as registry

    class FakeEntryPoint:
        def load(self) -> object:
            def register() -> None:
                from typing import Literal

                from genloom.core.steps import Filter

                @registry.CLEANERS.register("plugin_never")
                class NeverFilter(Filter):
                    """Keeps everything (a plugin's component)."""

                    type: Literal["plugin_never"] = "plugin_never"

                    def reject(self, record: dict) -> str | None:
                        return None

            return register

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(
        registry, "entry_points", lambda group: [FakeEntryPoint()] if group == "genloom.plugins" else []
    )
    try:
        assert "plugin_never" in registry.CLEANERS.names()
    finally:
        registry.CLEANERS._items.pop("plugin_never", None)
