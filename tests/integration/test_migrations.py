from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from vigil.migrate import MIGRATIONS_DIR, MigrationError, migrate


def _columns(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'anomaly_events'").fetchall()
    return dict(rows)


def test_anomaly_events_has_the_contract_columns_and_indexes(fresh_database: str) -> None:
    migrate(fresh_database)
    cols = _columns(fresh_database)
    contract = {
        "id": "text", "timestamp": "timestamp with time zone", "is_alert": "boolean",
        "alert_type": "text", "alert_level": "text", "alert_title": "text",
        "alert_message": "text", "user_id": "text", "tags": "jsonb", "metrics": "jsonb",
    }
    detection = {"rule": "text", "detector": "text", "detector_version": "text",
                 "entity": "text", "window_start": "timestamp with time zone",
                 "window_end": "timestamp with time zone", "evidence": "jsonb",
                 "created_at": "timestamp with time zone",
                 "updated_at": "timestamp with time zone",
                 "notified_at": "timestamp with time zone"}
    assert {k: cols.get(k) for k in {**contract, **detection}} == {**contract, **detection}
    with psycopg.connect(fresh_database) as conn:
        indexed = {row[0] for row in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'anomaly_events'")}
    for column in ("timestamp", "alert_type", "alert_level", "user_id"):
        assert any(column in definition for definition in indexed), column


def test_applied_twice_the_second_run_is_a_no_op(fresh_database: str) -> None:
    first = migrate(fresh_database)
    assert [m.version for m in first] == [m.version for m in first if m.version >= 1]
    assert first, "a fresh database must get every migration"
    with psycopg.connect(fresh_database) as conn:
        stamp = conn.execute("SELECT max(applied_at) FROM schema_migrations").fetchone()
    assert migrate(fresh_database) == []
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT max(applied_at) FROM schema_migrations").fetchone() == stamp
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(first),)


def test_an_edited_applied_file_is_refused(fresh_database: str, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, sql_dir)
    migrate(fresh_database, sql_dir)
    edited = sql_dir / "0001_anomaly_events.sql"
    edited.write_text(edited.read_text() + "\n-- sneaky edit\n")
    with pytest.raises(MigrationError, match=r"0001_anomaly_events\.sql was changed after it "
                                             r"was applied.*new migration"):
        migrate(fresh_database, sql_dir)


def test_a_failing_file_rolls_back_whole_and_is_not_recorded(fresh_database: str,
                                                              tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok_table (x int);")
    (tmp_path / "0002_broken.sql").write_text(
        "CREATE TABLE half_done (x int);\nSELECT no_such_function();")
    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate(fresh_database, tmp_path)
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half_done (x int);")
    assert [m.version for m in migrate(fresh_database, tmp_path)] == [2]


def test_concurrent_runners_apply_each_file_once(fresh_database: str, tmp_path: Path) -> None:
    # A slow migration keeps the first runner inside the lock while the second arrives.
    (tmp_path / "0001_slow.sql").write_text(
        "SELECT pg_sleep(1); CREATE TABLE counted (x int); INSERT INTO counted VALUES (1);")
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append([m.version for m in migrate(fresh_database, tmp_path)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(results) == [[], [1]]
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT count(*) FROM counted").fetchone() == (1,)
