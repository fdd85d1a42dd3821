"""Secrets: the per-store salt, HMAC digests in cache keys, credential fields typed SecretStr, and
config errors that never echo a secret."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import fsspec
import pytest
from pydantic import BaseModel, ConfigDict, SecretBytes, SecretStr, ValidationError

from genloom.core.config import pipeline_model, validate_config
from genloom.core.errors import ConfigError, GenloomError
from genloom.core.registry import REGISTRIES
from genloom.core.secrets import SALT_BYTES, is_secret_name, secret_digest, store_salt
from genloom.core.steps import Map

SECRET = "hunter2-Sekr3t-value"


# -- digests and the salt ----------------------------------------------------------------------


def test_secret_digest_is_keyed_by_the_salt_and_hides_the_value() -> None:
    salt_a, salt_b = b"a" * 32, b"b" * 32
    d = secret_digest(salt_a, SECRET)
    assert d.startswith("hmac-sha256:") and len(d) == len("hmac-sha256:") + 16
    assert SECRET not in d
    assert d == secret_digest(salt_a, SECRET)  # stable: a cache hit when nothing changed
    assert d != secret_digest(salt_a, SECRET + "!")  # a changed secret changes the key
    assert d != secret_digest(salt_b, SECRET)  # another store cannot compare digests with this one
    assert secret_digest(salt_a, SECRET.encode()) == d


def test_store_salt_is_random_created_once_and_private(tmp_path: Path) -> None:
    fs, base = fsspec.core.url_to_fs(str(tmp_path / "store"))
    salt = store_salt(fs, base)
    assert len(salt) == SALT_BYTES
    assert store_salt(fs, base) == salt
    path = tmp_path / "store" / "secret_salt"
    assert path.read_bytes() == salt
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    other_fs, other_base = fsspec.core.url_to_fs(str(tmp_path / "other"))
    assert store_salt(other_fs, other_base) != salt
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["secret_salt"]  # no temporary left


def _race(base: str, barrier: Any, out: Any) -> None:
    fs, root = fsspec.core.url_to_fs(base)
    barrier.wait()
    out.put(store_salt(fs, root).hex())


def test_processes_that_create_the_salt_together_agree(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    base = str(tmp_path / "store")
    procs = [ctx.Process(target=_race, args=(base, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
    assert len(set(got)) == 1
    assert bytes.fromhex(got[0]) == (tmp_path / "store" / "secret_salt").read_bytes()


def test_store_salt_on_an_fsspec_filesystem_and_a_damaged_salt() -> None:
    fs = fsspec.filesystem("memory")
    base = f"/genloom-test-{os.getpid()}"
    salt = store_salt(fs, base)
    assert len(salt) == SALT_BYTES and store_salt(fs, base) == salt
    with fs.open(f"{base}/secret_salt", "wb") as f:
        f.write(b"short")
    with pytest.raises(GenloomError, match="delete it"):
        store_salt(fs, base)
    fs.rm(base, recursive=True)


# -- Step.key_config ---------------------------------------------------------------------------


class _Endpoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    url: str
    token: SecretStr


class _SecretStep(Map):
    """A step with secrets at every depth."""

    type: Literal["secret_step"] = "secret_step"
    password: SecretStr | None = None
    passwords: list[SecretStr] = []
    endpoint: _Endpoint | None = None
    mirrors: list[_Endpoint] = []
    headers: dict[str, SecretStr] = {}
    blob_key: SecretBytes | None = None
    plain: str = "visible"


def _secret_step(**changes: Any) -> _SecretStep:
    cfg: dict[str, Any] = {
        "password": "pw-one",
        "passwords": ["pw-two", "pw-three"],
        "endpoint": {"url": "http://127.0.0.1:1", "token": "tok-four"},
        "mirrors": [{"url": "http://127.0.0.1:2", "token": "tok-five"}],
        "headers": {"X-Api-Key": "hdr-six"},
        "blob_key": b"bytes-seven",
    }
    return _SecretStep.model_validate({**cfg, **changes})


SECRETS = ["pw-one", "pw-two", "pw-three", "tok-four", "tok-five", "hdr-six", "bytes-seven"]


def test_key_config_digests_every_secret_at_any_depth() -> None:
    salt = b"s" * 32
    step = _secret_step()
    key = step.key_config(salt)
    dumped = json.dumps(key)
    assert not [s for s in SECRETS if s in dumped]
    assert key["password"] == secret_digest(salt, "pw-one")
    assert key["passwords"] == [secret_digest(salt, "pw-two"), secret_digest(salt, "pw-three")]
    assert key["endpoint"] == {"url": "http://127.0.0.1:1", "token": secret_digest(salt, "tok-four")}
    assert key["mirrors"][0]["token"] == secret_digest(salt, "tok-five")
    assert key["headers"] == {"X-Api-Key": secret_digest(salt, "hdr-six")}
    assert key["blob_key"] == secret_digest(salt, b"bytes-seven")
    # everything but the secrets is exactly what config_dict() gives
    plain = step.config_dict()
    assert {k: v for k, v in key.items() if k in ("type", "plain")} == {
        k: v for k, v in plain.items() if k in ("type", "plain")
    }
    assert set(key) == set(plain)
    # changing one secret changes exactly its digest; the masked config_dict() cannot tell
    changed = _secret_step(passwords=["pw-two", "pw-CHANGED"])
    assert changed.config_dict() == plain
    new = changed.key_config(salt)
    assert new["passwords"][1] != key["passwords"][1]
    assert {k: v for k, v in new.items() if k != "passwords"} == {
        k: v for k, v in key.items() if k != "passwords"
    }
    assert _secret_step(password=None).key_config(salt)["password"] is None


def test_key_config_of_every_component_without_secrets_is_its_config_dict() -> None:
    """Digesting must not change how anything else is serialised (keys would all change)."""
    checked = 0
    for stage, registry in REGISTRIES.items():
        for name, cls in registry.items():
            try:
                step = cls()
            except ValidationError:
                continue  # needs required fields (paths...)
            assert step.key_config(b"x" * 32) == step.config_dict(), f"{stage}.{name}"
            checked += 1
    assert checked > 20


# -- every credential field is a SecretStr -----------------------------------------------------


def _members(tp: Any) -> list[Any]:
    """The leaf types of an annotation (through Optional, unions, Annotated, lists, dicts)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _members(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _members(a)]
    if origin in (list, tuple, set, frozenset, typing.Sequence):
        return [m for a in typing.get_args(tp) if a is not Ellipsis for m in _members(a)]
    if origin is dict:
        args = typing.get_args(tp)
        return _members(args[1]) if args else [Any]
    return [tp]


def _credential_fields_not_secret(model: type[BaseModel], where: str, seen: set[type]) -> list[str]:
    if model in seen:
        return []
    seen.add(model)
    bad = []
    for name, field in model.model_fields.items():
        leaves = [m for m in _members(field.annotation) if m is not type(None)]
        if is_secret_name(name) and not all(m in (SecretStr, SecretBytes) for m in leaves):
            bad.append(f"{where}.{name}: {field.annotation}")
        for m in leaves:
            if isinstance(m, type) and issubclass(m, BaseModel):
                bad += _credential_fields_not_secret(m, f"{where}.{name}", seen)
    return bad


def test_every_credential_field_of_every_component_is_a_secret() -> None:
    bad: list[str] = []
    n = 0
    for stage, registry in REGISTRIES.items():
        for name, cls in registry.items():
            bad += _credential_fields_not_secret(cls, f"{stage}.{name}", set())
            n += 1
    bad += _credential_fields_not_secret(pipeline_model(), "pipeline", set())  # train, store, catalog...
    assert n > 40
    assert not bad, "credential fields must be SecretStr (or a list/optional of it):\n" + "\n".join(bad)


def test_the_check_finds_a_plain_credential_field_in_a_nested_model() -> None:
    class Inner(BaseModel):
        client_secret: str

    class Outer(BaseModel):
        api_key: SecretStr | None = None
        tokens_per_step: int = 1
        inner: list[Inner] = []
        auth_token: Annotated[str, "doc"] = ""

    assert sorted(_credential_fields_not_secret(Outer, "x", set())) == [
        "x.auth_token: <class 'str'>",
        "x.inner.client_secret: <class 'str'>",
    ]


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_key", True),
        ("password", True),
        ("passwords", True),
        ("token", True),
        ("hf_token", True),
        ("client_secret", True),
        ("AWS_SECRET", True),
        ("max_tokens", False),
        ("keyword", False),
        ("url_mask", False),
        ("text", False),
    ],
)
def test_secret_name_pattern(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


# -- error messages ----------------------------------------------------------------------------


def _config_error(tmp_path: Path, source: dict[str, Any], augment: list[Any] | None = None) -> str:
    (tmp_path / "a.txt").write_text("hello", encoding="utf-8")
    raw = {"name": "p", "sources": [{"type": "text", "paths": [str(tmp_path / "a.txt")], **source}]}
    if augment is not None:
        raw["augment"] = augment
    with pytest.raises(ConfigError) as info:
        validate_config(raw, env={"PW": SECRET})
    text = f"{info.value}\n{info.value!r}\n{info.value.one_line()}"
    assert SECRET not in text
    return text


def test_a_substituted_secret_in_the_wrong_field_is_not_echoed(tmp_path: Path) -> None:
    # a string where a list belongs, and the secret in a field with a fixed set of values
    assert "got the value of ${env:PW}" in _config_error(tmp_path, {"passwords": "${env:PW}"})
    assert "got the value of ${env:PW}" in _config_error(tmp_path, {"hidden": "${env:PW}"})
    text = _config_error(
        tmp_path, {}, [{"type": "back_translate", "translator": "openai", "concurrency": "${env:PW}"}]
    )
    assert "augment.0.concurrency" in text and "${env:PW}" in text


def test_a_credential_field_never_echoes_its_value(tmp_path: Path) -> None:
    text = _config_error(tmp_path, {"password": 123456789})
    assert "sources.0.password" in text and "123456789" not in text and "got int" in text
    text = _config_error(tmp_path, {"passwords": [{"x": SECRET}]})
    assert "sources.0.passwords.0" in text
    # other values are still shown: they help, and they are written in the file anyway
    assert "got 'sometimes'" in _config_error(tmp_path, {"hidden": "sometimes"})


def test_a_validated_config_never_shows_its_secrets(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello", encoding="utf-8")
    raw = {
        "name": "p",
        "sources": [{"type": "text", "paths": [str(tmp_path / "a.txt")], "passwords": ["${env:PW}"]}],
        "augment": [{"type": "back_translate", "translator": "openai", "api_key": "${env:KEY}"}],
    }
    cfg = validate_config(raw, env={"PW": SECRET, "KEY": "sk-" + SECRET})
    assert cfg.sources[0].passwords[0].get_secret_value() == SECRET
    assert cfg.augment[0].api_key.get_secret_value() == "sk-" + SECRET
    for shown in (repr(cfg), str(cfg), cfg.model_dump_json(), json.dumps(cfg.model_dump(mode="json"))):
        assert SECRET not in shown
