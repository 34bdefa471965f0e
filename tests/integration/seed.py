"""Known anomaly_events rows for the dashboard and API tests: counts are computed from this
list in Python, independently of the SQL under test."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from vigil.migrate import migrate
from vigil.settings import Settings

RULES = {  # rule -> (topic, level, detector)
    "error_spike": ("logs", "critical", "rules"),
    "failed_message": ("logs", "warning", "rules"),
    "latency_high": ("metrics", "warning", "rules"),
    "cpu_and_latency": ("metrics", "critical", "rules"),
    "metrics_isolation_forest": ("metrics", "info", "isolation_forest"),
    "large_amount": ("transactions", "critical", "rules"),
    "rapid_transactions": ("transactions", "warning", "rules"),
}
SERVICES = ("payments-api", "checkout", "auth", "search")
USERS = ("u0001", "u0002", "u0003", "O'Brien ü")  # a quote and non-ASCII, on purpose


def seed_rows(now: datetime, count: int = 137, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        rule = rng.choice(sorted(RULES))
        topic, level, detector = RULES[rule]
        # Spread over two days, a third in the last hour; ages keep clear of the 1 h, 24 h
        # and "still firing" (15 min) edges, so a page rendered a minute later counts alike.
        if i % 3 == 0:
            age = timedelta(minutes=rng.uniform(2, 10) if i % 2 else rng.uniform(30, 50))
        else:
            age = timedelta(hours=rng.uniform(1.5, 22) if i % 2 else rng.uniform(26, 47))
        at = (now - age).replace(microsecond=0)
        lasted = timedelta(minutes=rng.choice((0, 2, 20) if age <= timedelta(minutes=10)
                                              else (0, 2)))
        service = rng.choice(SERVICES) if topic != "transactions" else None
        user = rng.choice(USERS) if topic != "metrics" else None
        entity = user if topic == "transactions" else (service if topic == "logs" else
                                                       f"{service}-host-{i % 5}")
        key = {"logs": {"service": service}, "metrics": {"host": entity},
               "transactions": {"user_id": user}}[topic]  # the group key, as detection writes
        rows.append({
            "id": f"seed{i:04d}", "timestamp": at, "alert_type": rule, "alert_level": level,
            "alert_title": f"{rule} on {entity} #{i}",
            "alert_message": f"{rule} fired for {entity}; seeded row {i}",
            "user_id": user, "tags": json.dumps({"topic": topic, **key}),
            "metrics": json.dumps({"peak": i, "points": 1}), "rule": rule,
            "detector": detector, "detector_version": "seed-1", "topic": topic,
            "entity": entity, "service": service, "window_start": at,
            "window_end": at + lasted,
            "detected_hour": at.replace(minute=0, second=0),
            "evidence": json.dumps({}),
            "notified_at": at + timedelta(seconds=5) if i % 4 else None,
        })
    return rows


def insert(url: str, rows: list[dict[str, Any]]) -> None:
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            "INSERT INTO anomaly_events (id, timestamp, is_alert, alert_type, alert_level, "
            "alert_title, alert_message, user_id, tags, metrics, rule, detector, "
            "detector_version, topic, entity, service, window_start, window_end, "
            "detected_hour, evidence, notified_at) VALUES (%(id)s, %(timestamp)s, true, "
            "%(alert_type)s, %(alert_level)s, %(alert_title)s, %(alert_message)s, %(user_id)s, "
            "%(tags)s, %(metrics)s, %(rule)s, %(detector)s, %(detector_version)s, %(topic)s, "
            "%(entity)s, %(service)s, %(window_start)s, %(window_end)s, %(detected_hour)s, "
            "%(evidence)s, %(notified_at)s)", rows)


def settings_for(stack: Settings, url: str) -> Settings:
    """The stack's settings pointed at one test database."""
    return replace(stack, database_url=url, postgres_db=url.rsplit("/", 1)[1])


@contextmanager
def seeded_database(stack: Settings, now: datetime
                    ) -> Iterator[tuple[Settings, list[dict[str, Any]]]]:
    """A new database on the stack's server, migrated (reader password set) and seeded;
    dropped afterwards. Yields its settings and the seeded rows."""
    name = f"test_seeded_{uuid.uuid4().hex[:8]}"
    admin = stack.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        settings = settings_for(stack, stack.database_url.rsplit("/", 1)[0] + "/" + name)
        migrate(settings.database_url, reader_password=settings.reader_password)
        rows = seed_rows(now)
        insert(settings.database_url, rows)
        yield settings, rows
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
