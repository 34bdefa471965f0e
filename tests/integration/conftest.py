from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from vigil.settings import Settings


@pytest.fixture
def new_database(stack: Settings) -> Iterator[Callable[[], str]]:
    """Makes new empty databases on the stack's server (their URLs); drops them afterwards."""
    admin_url = stack.database_url.rsplit("/", 1)[0] + "/postgres"
    names: list[str] = []

    def make() -> str:
        names.append(f"test_{uuid.uuid4().hex[:12]}")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names[-1])))
        return stack.database_url.rsplit("/", 1)[0] + "/" + names[-1]

    yield make
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def fresh_database(new_database: Callable[[], str]) -> str:
    """URL of a new empty database on the stack's server, dropped afterwards."""
    return new_database()
