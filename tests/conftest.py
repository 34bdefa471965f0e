"""Shared fixtures: a real local stack (Kafka, PostgreSQL, S3) started by the same code as
`vigil services up`, in a temporary state folder on free ports, once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigil import services
from vigil.migrate import migrate
from vigil.services.process import free_port
from vigil.settings import PROJECT_ROOT, Settings

# Variables that would point the tests at someone's real services.
_EXTERNAL = ("KAFKA_SERVER_1", "DATABASE_URL", "POSTGRES_HOST", "S3_BUCKET", "PREFIX",
             "VIGIL_LAKE_URL", "S3_ENDPOINT_URL", "ROLE_ARN", "DISCORD_WEBHOOK_URL",
             "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(PROJECT_ROOT / "tests").parts
        if parts[0] in {"integration", "e2e"}:
            item.add_marker(pytest.mark.integration)
        if parts[0] == "e2e":
            item.add_marker(pytest.mark.slow)


def stack_env(state_dir: Path) -> dict[str, str]:
    """Environment for an isolated local stack; the broker jar cache is shared."""
    env = {k: v for k, v in os.environ.items() if k not in _EXTERNAL}
    env.update({
        "VIGIL_STATE_DIR": str(state_dir),
        "VIGIL_CACHE_DIR": str(PROJECT_ROOT / ".vigil" / "cache"),
        "VIGIL_KAFKA_PORT": str(free_port()),
        "VIGIL_KAFKA_CONTROLLER_PORT": str(free_port()),
        "VIGIL_KAFKA_HEAP_MB": "384",
        "POSTGRES_PORT": str(free_port()),
        "VIGIL_S3_PORT": str(free_port()),
        "VIGIL_DAGSTER_PORT": str(free_port()),
        "VIGIL_DASHBOARD_PORT": str(free_port()),
        "VIGIL_API_PORT": str(free_port()),
    })
    return env


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The running stack's settings; os.environ points at it for the whole session."""
    env = stack_env(tmp_path_factory.mktemp("stack"))
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    settings = Settings.from_env()
    try:
        services.up(settings, with_s3=True, report=lambda _line: None)
        migrate(settings.database_url)
        yield settings
    finally:
        services.down(settings, report=lambda _line: None)
        os.environ.clear()
        os.environ.update(saved)
