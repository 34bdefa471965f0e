"""The REST API against a real Postgres seeded with known rows, connected as the read-only
role: every endpoint, pagination, filters, hostile input, 404, 422, 503 and /docs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.integration.seed import seeded_database, settings_for
from vigil.settings import Settings

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def seeded(stack: Settings) -> Iterator[tuple[Settings, list[dict[str, Any]]]]:
    with seeded_database(stack, NOW) as seeded:
        yield seeded


@pytest.fixture(scope="module")
def client(seeded: tuple[Settings, list[dict[str, Any]]]) -> TestClient:
    return TestClient(create_app(seeded[0]))


def test_health_and_docs(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "database": "ok"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/events", "/events/{event_id}", "/events/stats/summary", "/dashboard/overview",
            "/dashboard/timeline", "/dashboard/services", "/health"} <= set(paths)


def test_pages_walk_the_whole_set_without_overlap(
        client: TestClient, seeded: tuple[Settings, list[dict[str, Any]]]) -> None:
    rows = seeded[1]
    seen: list[str] = []
    page = 1
    while True:
        body = client.get("/events", params={"page": page, "page_size": 20,
                                             "sort": "alert_level", "order": "asc"}).json()
        assert body["total"] == len(rows) and body["pages"] == -(-len(rows) // 20)
        if not body["items"]:
            break
        seen += [item["id"] for item in body["items"]]
        page += 1
    assert len(seen) == len(set(seen)) == len(rows)
    assert set(seen) == {r["id"] for r in rows}
    newest = client.get("/events", params={"page_size": 5}).json()["items"]
    expected = sorted(rows, key=lambda r: (r["timestamp"], r["id"]), reverse=True)[:5]
    assert [i["id"] for i in newest] == [r["id"] for r in expected]


@pytest.mark.parametrize(("params", "keep"), [
    ({"level": "critical"}, lambda r: r["alert_level"] == "critical"),
    ({"level": ["info", "warning"]}, lambda r: r["alert_level"] in ("info", "warning")),
    ({"topic": "transactions"}, lambda r: r["topic"] == "transactions"),
    ({"rule": "error_spike"}, lambda r: r["alert_type"] == "error_spike"),
    ({"detector": "isolation_forest"}, lambda r: r["detector"] == "isolation_forest"),
    ({"service": "auth"}, lambda r: r["service"] == "auth"),
    ({"user_id": "O'Brien ü"}, lambda r: r["user_id"] == "O'Brien ü"),
    ({"q": "#1"}, lambda r: "#1" in r["alert_title"] or "#1" in r["alert_message"]),
    ({"since": (NOW - timedelta(hours=1)).isoformat()},
     lambda r: r["timestamp"] >= NOW - timedelta(hours=1)),
])
def test_each_filter_narrows_to_exactly_the_matching_rows(
        client: TestClient, seeded: tuple[Settings, list[dict[str, Any]]],
        params: dict[str, Any], keep: Any) -> None:
    rows = seeded[1]
    expected = {r["id"] for r in rows if keep(r)}
    assert 0 < len(expected) < len(rows)
    body = client.get("/events", params={**params, "page_size": 500}).json()
    assert {i["id"] for i in body["items"]} == expected and body["total"] == len(expected)
    summary = client.get("/events/stats/summary", params=params).json()
    assert summary["total"] == len(expected)


@pytest.mark.parametrize("hostile", [
    "'; DROP TABLE anomaly_events; --", "%", "_", "\\", "x" * 5000, "ü' OR '1'='1",
    "\x00zero"])
def test_hostile_filters_return_nothing_and_the_table_survives(
        client: TestClient, seeded: tuple[Settings, list[dict[str, Any]]],
        hostile: str) -> None:
    for name in ("service", "user_id", "rule", "q"):
        answer = client.get("/events", params={name: hostile, "page_size": 500})
        if answer.status_code == 422:  # refused, saying why: fine for absurd input
            assert len(hostile) > 200 or "\x00" in hostile, (name, answer.text)
            assert answer.json()["detail"]
            continue
        assert answer.status_code == 200, (name, answer.text)
        # Exact filters match nothing; free text matches it literally (no LIKE wildcards).
        expected = {r["id"] for r in seeded[1] if name == "q" and any(
            hostile.lower() in (r[f] or "").lower()
            for f in ("alert_title", "alert_message", "entity", "service"))}
        assert {i["id"] for i in answer.json()["items"]} == expected, name
    with psycopg.connect(seeded[0].database_url) as conn:
        assert conn.execute("SELECT count(*) FROM anomaly_events").fetchone() == (
            len(seeded[1]),)


def test_event_detail_and_unknown_id(
        client: TestClient, seeded: tuple[Settings, list[dict[str, Any]]]) -> None:
    row = seeded[1][5]
    body = client.get(f"/events/{row['id']}").json()
    assert body["alert_title"] == row["alert_title"] and body["metrics"] == {"peak": 5,
                                                                             "points": 1}
    assert body["rule"] == row["rule"] and body["detector_version"] == "seed-1"
    missing = client.get("/events/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_summary_counts_equal_the_seeded_rows(
        client: TestClient, seeded: tuple[Settings, list[dict[str, Any]]]) -> None:
    rows = seeded[1]
    body = client.get("/events/stats/summary").json()
    assert body["total"] == len(rows)
    assert body["by_level"] == dict(Counter(r["alert_level"] for r in rows))
    assert body["by_rule"] == dict(Counter(r["alert_type"] for r in rows))
    assert body["notified"] == sum(r["notified_at"] is not None for r in rows)


def test_overview_timeline_and_services(
        client: TestClient, seeded: tuple[Settings, list[dict[str, Any]]]) -> None:
    rows = seeded[1]
    body = client.get("/dashboard/overview", params={"now": NOW.isoformat()}).json()
    hour = [r for r in rows if NOW - timedelta(hours=1) <= r["timestamp"] < NOW]
    assert body["last_hour"]["total"] == len(hour)
    assert body["last_hour"]["by_level"] == dict(Counter(r["alert_level"] for r in hour))
    day = [r for r in rows if NOW - timedelta(days=1) <= r["timestamp"] < NOW]
    assert body["last_day"]["total"] == len(day)
    open_critical = {r["id"] for r in rows if r["alert_level"] == "critical"
                     and r["window_end"] >= NOW - timedelta(minutes=15)
                     and r["timestamp"] <= NOW}
    assert {r["id"] for r in body["open_critical"]} == open_critical
    assert len(body["last_alerts"]) == 10

    timeline = client.get("/dashboard/timeline", params={
        "since": (NOW - timedelta(days=2)).isoformat(), "until": NOW.isoformat(),
        "granularity": "1h", "by": "level"}).json()
    assert sum(p["count"] for p in timeline["points"]) == len(
        [r for r in rows if r["timestamp"] >= NOW - timedelta(days=2)])
    assert {p["key"] for p in timeline["points"]} == {r["alert_level"] for r in rows}

    services = client.get("/dashboard/services").json()["items"]
    per_service = Counter(r["service"] for r in rows if r["service"])
    assert {s["name"]: s["total"] for s in services} == dict(per_service)
    top = services[0]
    assert top["by_level"]["critical"] == sum(
        1 for r in rows if r["service"] == top["name"] and r["alert_level"] == "critical")
    users = client.get("/dashboard/services", params={"per": "user_id"}).json()["items"]
    assert {u["name"]: u["total"] for u in users} == dict(
        Counter(r["user_id"] for r in rows if r["topic"] == "transactions"))


@pytest.mark.parametrize(("path", "params"), [
    ("/events", {"page": 0}), ("/events", {"page_size": 501}), ("/events", {"level": "loud"}),
    ("/events", {"sort": "id; DROP TABLE x"}), ("/events", {"since": "yesterday"}),
    ("/events", {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
    ("/dashboard/timeline", {"granularity": "7m"}),
    ("/dashboard/timeline", {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
    ("/dashboard/services", {"per": "password"}),
])
def test_bad_parameters_are_422_naming_the_problem(
        client: TestClient, path: str, params: dict[str, Any]) -> None:
    answer = client.get(path, params=params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]


def test_an_unreachable_database_is_503_naming_it(stack: Settings) -> None:
    settings = settings_for(stack, stack.database_url.rsplit("/", 1)[0] + "/no_such_db")
    client = TestClient(create_app(settings))
    answer = client.get("/events")
    assert answer.status_code == 503
    assert f"PostgreSQL at {settings.postgres_host}:{settings.postgres_port}" in \
        answer.json()["detail"]
    assert client.get("/health").status_code == 503


def test_the_reader_role_cannot_write(seeded: tuple[Settings, list[dict[str, Any]]]) -> None:
    settings, rows = seeded
    with psycopg.connect(settings.reader_url) as conn:
        assert conn.execute("SELECT count(*) FROM anomaly_events").fetchone() == (len(rows),)
        for statement in ("DELETE FROM anomaly_events",
                          "UPDATE anomaly_events SET alert_level = 'info'",
                          "INSERT INTO anomaly_events (id, timestamp, alert_type, alert_level) "
                          "VALUES ('x', now(), 'a', 'info')",
                          "DROP TABLE anomaly_events", "CREATE TABLE sneaky (x int)",
                          "SELECT * FROM schema_migrations"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM anomaly_events").fetchone() == (len(rows),)
