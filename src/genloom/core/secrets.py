"""Secrets in cache keys: an HMAC of each value under a random salt kept in the artifact store.

A credential (``SecretStr``) must change a stage's key when it changes, so that correcting a wrong
password reruns the stage, yet its value must never reach a manifest, the catalog or ``explain``.
A plain hash would not do: a short password falls to a dictionary attack on its hash. The key
holds ``HMAC-SHA256(salt, value)`` instead, where the salt is 32 random bytes created once per
artifact store (``<store>/secret_salt``, readable by its owner only where the filesystem allows).
Someone who reads manifests without the salt learns nothing; deleting the salt reruns every stage
whose config holds a secret, once.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets as _random
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

from genloom.core.errors import GenloomError

SALT_FILE = "secret_salt"
SALT_BYTES = 32
DIGEST_PREFIX = "hmac-sha256:"
# config field names that hold credentials: such a field must be a SecretStr, and its value is
# never echoed in an error message
SECRET_NAME = re.compile(r"(key|token|password|passwords|secret|secrets)$", re.IGNORECASE)


def is_secret_name(name: object) -> bool:
    """True for a config key named like a credential (``api_key``, ``password``, ``token``...)."""
    return isinstance(name, str) and SECRET_NAME.search(name) is not None


def store_salt(fs: Any, base: str) -> bytes:
    """The store's secret salt at ``<base>/secret_salt``, created on first use.

    ``fs`` is the store's fsspec filesystem and ``base`` its root path on it. Creation is atomic:
    two processes that start on an empty store at the same time end up with the same salt.
    """
    path = f"{base.rstrip('/')}/{SALT_FILE}"
    fs.makedirs(base, exist_ok=True)
    if not fs.exists(path):
        salt = _random.token_bytes(SALT_BYTES)
        if "file" in _protocols(fs):
            _create_local(Path(path), salt)
        else:
            _create_remote(fs, path, salt)
    with fs.open(path, "rb") as f:
        salt = f.read()
    if len(salt) != SALT_BYTES:
        raise GenloomError(
            f"{path} holds {len(salt)} bytes, not a {SALT_BYTES}-byte salt: delete it "
            "(stages whose config holds a secret rerun once)"
        )
    return bytes(salt)


def secret_digest(salt: bytes, value: str | bytes) -> str:
    """``hmac-sha256:`` and the first 16 hex digits of the HMAC of ``value`` under ``salt``."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return DIGEST_PREFIX + hmac.new(salt, data, hashlib.sha256).hexdigest()[:16]


def key_dump(model: BaseModel, salt: bytes) -> dict[str, Any]:
    """``model.model_dump(mode="json")`` with every secret, at any depth, replaced by its digest."""
    dumped = _digest_secrets(model.model_dump(mode="python"), salt)
    out: dict[str, Any] = to_jsonable_python(dumped)
    return out


def _digest_secrets(node: Any, salt: bytes) -> Any:
    if isinstance(node, SecretStr | SecretBytes):
        return secret_digest(salt, node.get_secret_value())
    if isinstance(node, dict):
        return {k: _digest_secrets(v, salt) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_digest_secrets(v, salt) for v in node]
    if isinstance(node, set | frozenset):
        # a set of secrets has no stable order once digested; sort the digests instead
        return sorted(_digest_secrets(v, salt) for v in node)
    return node


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _create_local(path: Path, salt: bytes) -> None:
    """Write the salt to a private temporary file, then hard-link it into place: the link either
    creates the complete file or fails because another process won, so no one reads half a salt."""
    tmp = path.with_name(f".{SALT_FILE}.{os.getpid()}.{_random.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(salt)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _create_remote(fs: Any, path: str, salt: bytes) -> None:
    """Exclusive create (``xb``) where the filesystem supports it (s3fs, gcsfs with preconditions);
    elsewhere a plain write, where two simultaneous first runs may briefly disagree once."""
    try:
        with fs.open(path, "xb") as f:
            f.write(salt)
    except FileExistsError:
        pass
    except (ValueError, NotImplementedError, TypeError):
        with fs.open(path, "wb") as f:
            f.write(salt)
