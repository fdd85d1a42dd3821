"""API keys of the server, kept in an ``api_keys`` table of the catalog's database.

A key is ``gl-`` followed by 32 random bytes (``secrets.token_urlsafe``); it is shown once, when
created, and only its salted HMAC-SHA256 is stored, so a copy of the database gives no usable key.
The table lives beside the catalog's own tables (same engine, its own metadata), so SQLite and
PostgreSQL catalogs both hold it and the catalog's schema is untouched.

A key reads by default; one created with ``write=True`` (``genloom keys create --write``) may also
change data through the dashboard (new records, labels). A table from before that flag gains the
column, every old key reading only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    false,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from genloom.core.errors import NotFoundError

KEY_PREFIX = "gl-"

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, index=True),
    Column("salt", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("can_write", Boolean, nullable=False, server_default=false()),
)


def _digest(salt: str, key: str) -> str:
    return hmac.new(bytes.fromhex(salt), key.encode(), hashlib.sha256).hexdigest()


class KeyStore:
    """Create, list, revoke and check API keys."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)
        if not self._has_write_column():  # a table made before keys had write rights
            try:
                with engine.begin() as c:
                    c.execute(
                        text("ALTER TABLE api_keys ADD COLUMN can_write BOOLEAN NOT NULL DEFAULT FALSE")
                    )
            except DBAPIError:
                if not self._has_write_column():  # not another process adding it at the same time
                    raise

    def _has_write_column(self) -> bool:
        return "can_write" in {c["name"] for c in inspect(self.engine).get_columns("api_keys")}

    def create(self, name: str, write: bool = False) -> tuple[str, str]:
        """A new key for ``name`` (``write``: it may also change data through the dashboard):
        (its id, the key itself, which is never stored)."""
        key_id = uuid.uuid4().hex[:12]
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        with self.engine.begin() as c:
            c.execute(
                insert(api_keys).values(
                    id=key_id,
                    name=name,
                    salt=salt,
                    hash=_digest(salt, key),
                    created_at=datetime.now(UTC),
                    can_write=write,
                )
            )
        return key_id, key

    def list(self) -> list[dict[str, Any]]:
        """Every key's id, name, creation and revocation time and write right (never the key or its hash)."""
        q = select(
            api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at, api_keys.c.can_write
        )
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q.order_by(api_keys.c.created_at))]

    def revoke(self, key_id: str) -> None:
        """Revoke the key with id ``key_id`` (it stops working at once)."""
        with self.engine.begin() as c:
            res = c.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        if res.rowcount == 0:
            raise NotFoundError(f"no active API key with id {key_id!r}: genloom keys list shows them")

    def verify(self, key: str, write: bool = False) -> str | None:
        """The id of the active key ``key`` (with ``write``: only if it has write rights), or None."""
        if not key.startswith(KEY_PREFIX):
            return None
        q = select(api_keys.c.id, api_keys.c.salt, api_keys.c.hash).where(api_keys.c.revoked_at.is_(None))
        if write:
            q = q.where(api_keys.c.can_write.is_(True))
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        # each key has its own salt, so every active key is tried; compare_digest keeps it constant-time
        found = None
        for key_id, salt, digest in rows:
            if hmac.compare_digest(_digest(salt, key), digest):
                found = key_id
        return found
