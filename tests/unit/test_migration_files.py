from __future__ import annotations

from pathlib import Path

import pytest

from vigil.migrate import MigrationError, load


def test_repository_migrations_are_numbered_in_order() -> None:
    migrations = load()
    assert migrations[0].version == 1 and migrations[0].name == "anomaly_events"
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert "CREATE TABLE anomaly_events" in migrations[0].sql


def test_checksum_follows_content(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    before = load(tmp_path)[0].checksum
    (tmp_path / "0001_a.sql").write_text("SELECT 2;")
    assert load(tmp_path)[0].checksum != before


@pytest.mark.parametrize("bad_name", ["1_short.sql", "0002-dash.sql", "0003_Upper.sql"])
def test_misnamed_files_are_refused(tmp_path: Path, bad_name: str) -> None:
    (tmp_path / bad_name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_lower_snake"):
        load(tmp_path)


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"0001_b\.sql: version 0001 is also used by 0001_a"):
        load(tmp_path)
