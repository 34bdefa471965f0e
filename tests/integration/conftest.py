from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from vigil.settings import Settings


@pytest.fixture
def fresh_database(stack: Settings) -> Iterator[str]:
    """URL of a new empty database on the stack's server, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin_url = stack.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield stack.database_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
