"""Every read the dashboard and the REST API make of anomaly_events: parameterised SQL only.

Filters travel as values, never as SQL text; the only identifiers that vary (the sort column,
the timeline's grouping) come from fixed whitelists. One module, so the dashboard and the API
answer the same question the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

LEVELS = ("info", "warning", "critical")
TOPICS = ("logs", "metrics", "transactions")
SORTABLE = ("timestamp", "alert_level", "alert_type", "topic", "service", "entity",
            "detector", "window_end")
GRANULARITIES: dict[str, timedelta] = {
    "1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1), "1d": timedelta(days=1)}
MAX_PAGE_SIZE = 500
MAX_TEXT = 200  # free-text search longer than this is cut: nobody types more

_COLUMNS = ("id, timestamp, is_alert, alert_type, alert_level, alert_title, alert_message, "
            "user_id, tags, metrics, rule, detector, detector_version, topic, entity, service, "
            "window_start, window_end, detected_hour, evidence, created_at, updated_at, "
            "notified_at")
_LIST_COLUMNS = ("id, timestamp, alert_level, alert_type, topic, service, entity, user_id, "
                 "detector, alert_title, window_end, notified_at")
# Sorting a level alphabetically is useless: critical > warning > info.
_LEVEL_RANK = "array_position(ARRAY['info','warning','critical'], alert_level)"

Connection = psycopg.Connection[Any]


@dataclass(frozen=True)
class EventFilter:
    """What an analyst narrows the event list by; every field optional."""

    topics: tuple[str, ...] = ()  # the event type: logs | metrics | transactions
    levels: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    detectors: tuple[str, ...] = ()
    service: str | None = None
    user_id: str | None = None
    entity: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None  # in title, message, entity or service, case-insensitive

    def where(self) -> tuple[sql.Composable, dict[str, Any]]:
        parts: list[sql.Composable] = [sql.SQL("true")]
        params: dict[str, Any] = {}

        def add(clause: str, name: str, value: Any) -> None:
            parts.append(sql.SQL(clause))
            params[name] = value

        if self.topics:
            add("topic = ANY(%(topics)s)", "topics", list(self.topics))
        if self.levels:
            add("alert_level = ANY(%(levels)s)", "levels", list(self.levels))
        if self.rules:
            add("alert_type = ANY(%(rules)s)", "rules", list(self.rules))
        if self.detectors:
            add("detector = ANY(%(detectors)s)", "detectors", list(self.detectors))
        if self.service:
            add("service = %(service)s", "service", self.service)
        if self.user_id:
            add("user_id = %(user_id)s", "user_id", self.user_id)
        if self.entity:
            add("entity = %(entity)s", "entity", self.entity)
        if self.since:
            add("timestamp >= %(since)s", "since", self.since)
        if self.until:
            add("timestamp < %(until)s", "until", self.until)
        if self.text:
            pattern = "%" + _escape_like(self.text[:MAX_TEXT]) + "%"
            add("(alert_title ILIKE %(text)s OR alert_message ILIKE %(text)s "
                "OR entity ILIKE %(text)s OR service ILIKE %(text)s)", "text", pattern)
        return sql.SQL(" AND ").join(parts), params


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def list_events(conn: Connection, where: EventFilter = EventFilter(), *,
                sort: str = "timestamp", descending: bool = True, page: int = 1,
                page_size: int = 50) -> Page:
    """One page of anomalies; the id breaks ties, so pages never overlap or skip."""
    if sort not in SORTABLE:
        raise ValueError(f"cannot sort by {sort!r}: choose one of {', '.join(SORTABLE)}")
    if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page must be >= 1 and page_size 1-{MAX_PAGE_SIZE}")
    condition, params = where.where()
    key = sql.SQL(_LEVEL_RANK) if sort == "alert_level" else sql.Identifier(sort)
    direction = sql.SQL("DESC" if descending else "ASC")
    query = sql.SQL("SELECT {columns} FROM anomaly_events WHERE {condition} "
                    "ORDER BY {key} {direction} NULLS LAST, id {direction} "
                    "LIMIT %(limit)s OFFSET %(offset)s").format(
        columns=sql.SQL(_LIST_COLUMNS), condition=condition, key=key, direction=direction)
    params.update(limit=page_size, offset=(page - 1) * page_size)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
        total = cur.execute(sql.SQL("SELECT count(*) AS n FROM anomaly_events WHERE {}")
                            .format(condition), params).fetchone()
    return Page(rows, int(total["n"]) if total else 0, page, page_size)


def get_event(conn: Connection, event_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql.SQL("SELECT {} FROM anomaly_events WHERE id = %s")
                           .format(sql.SQL(_COLUMNS)), (event_id,)).fetchone()


@dataclass(frozen=True)
class Summary:
    total: int
    by_level: dict[str, int]
    by_topic: dict[str, int]
    by_rule: dict[str, int]
    by_detector: dict[str, int]
    first: datetime | None
    last: datetime | None
    notified: int


def summary(conn: Connection, where: EventFilter = EventFilter()) -> Summary:
    """Counts of the filtered anomalies by level, topic, rule and detector."""
    condition, params = where.where()
    counts: dict[str, dict[str, int]] = {}
    with conn.cursor() as cur:
        for column in ("alert_level", "topic", "alert_type", "detector"):
            cur.execute(sql.SQL("SELECT {col}, count(*) FROM anomaly_events WHERE {cond} "
                                "GROUP BY 1 ORDER BY 2 DESC, 1").format(
                col=sql.Identifier(column), cond=condition), params)
            counts[column] = {str(k): int(n) for k, n in cur.fetchall()}
        row = cur.execute(sql.SQL("SELECT count(*), min(timestamp), max(timestamp), "
                                  "count(notified_at) FROM anomaly_events WHERE {}")
                          .format(condition), params).fetchone()
    total, first, last, notified = row if row else (0, None, None, 0)
    return Summary(int(total), counts["alert_level"], counts["topic"], counts["alert_type"],
                   counts["detector"], first, last, int(notified))


@dataclass(frozen=True)
class Overview:
    now: datetime
    last_hour: Summary
    last_day: Summary
    open_critical: list[dict[str, Any]]  # critical and still firing recently
    last_alerts: list[dict[str, Any]]  # the latest posted to Discord


OPEN_FOR = timedelta(minutes=15)


def overview(conn: Connection, now: datetime) -> Overview:
    hour = summary(conn, EventFilter(since=now - timedelta(hours=1), until=now))
    day = summary(conn, EventFilter(since=now - timedelta(days=1), until=now))
    with conn.cursor(row_factory=dict_row) as cur:
        open_critical = cur.execute(
            sql.SQL("SELECT {} FROM anomaly_events WHERE alert_level = 'critical' "
                    "AND window_end >= %s AND timestamp <= %s "
                    "ORDER BY window_end DESC, id LIMIT 50").format(sql.SQL(_LIST_COLUMNS)),
            (now - OPEN_FOR, now)).fetchall()
        last_alerts = cur.execute(
            sql.SQL("SELECT {} FROM anomaly_events WHERE notified_at IS NOT NULL "
                    "ORDER BY notified_at DESC, id LIMIT 10").format(sql.SQL(_LIST_COLUMNS))
        ).fetchall()
    return Overview(now, hour, day, open_critical, last_alerts)


@dataclass(frozen=True)
class TimelinePoint:
    bucket: datetime
    key: str
    count: int


def timeline(conn: Connection, since: datetime, until: datetime, granularity: str = "5m",
             by: Literal["rule", "level", "topic"] = "rule",
             where: EventFilter = EventFilter()) -> list[TimelinePoint]:
    """Anomaly counts per time bucket, split by rule, level or topic."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r}: choose one of "
                         f"{', '.join(GRANULARITIES)}")
    if until <= since:
        raise ValueError("the range must end after it starts")
    column = {"rule": "alert_type", "level": "alert_level", "topic": "topic"}[by]
    condition, params = replace(where, since=since, until=until).where()
    params["step"] = GRANULARITIES[granularity]
    query = sql.SQL("SELECT date_bin(%(step)s, timestamp, TIMESTAMPTZ '2000-01-01') AS bucket, "
                    "{col} AS key, count(*) FROM anomaly_events WHERE {cond} "
                    "GROUP BY 1, 2 ORDER BY 1, 2").format(col=sql.Identifier(column),
                                                          cond=condition)
    with conn.cursor() as cur:
        return [TimelinePoint(b, str(k), int(n)) for b, k, n in cur.execute(query, params)]


@dataclass(frozen=True)
class ServiceRow:
    name: str
    total: int
    by_level: dict[str, int] = field(default_factory=dict)
    last_anomaly: datetime | None = None
    top_rules: list[str] = field(default_factory=list)


def services(conn: Connection, since: datetime | None = None,
             per: Literal["service", "user_id"] = "service", limit: int = 100
             ) -> list[ServiceRow]:
    """Per service (or per user, over transactions): counts by level, last anomaly, top rules."""
    column = sql.Identifier(per)
    scope = sql.SQL("topic = 'transactions'" if per == "user_id" else "true")
    query = sql.SQL("""
        WITH scoped AS (
            SELECT {col} AS name, alert_level, alert_type, timestamp FROM anomaly_events
            WHERE {col} IS NOT NULL AND {scope} AND (%(since)s::timestamptz IS NULL
                                                     OR timestamp >= %(since)s)),
        rules AS (
            SELECT name, alert_type, count(*) AS n FROM scoped GROUP BY 1, 2)
        SELECT s.name, count(*) AS total,
               count(*) FILTER (WHERE alert_level = 'critical') AS critical,
               count(*) FILTER (WHERE alert_level = 'warning') AS warning,
               count(*) FILTER (WHERE alert_level = 'info') AS info,
               max(timestamp) AS last_anomaly,
               (SELECT array_agg(alert_type ORDER BY n DESC, alert_type)
                  FROM (SELECT alert_type, n FROM rules r WHERE r.name = s.name
                        ORDER BY n DESC, alert_type LIMIT 3) top) AS top_rules
        FROM scoped s GROUP BY s.name ORDER BY total DESC, s.name LIMIT %(limit)s
    """).format(col=column, scope=scope)
    with conn.cursor() as cur:
        rows = cur.execute(query, {"since": since, "limit": limit}).fetchall()
    return [ServiceRow(str(name), int(total), {"critical": int(c), "warning": int(w),
                                                "info": int(i)}, last, list(top or []))
            for name, total, c, w, i, last, top in rows]


def distinct_values(conn: Connection, column: Literal["alert_type", "service", "detector"],
                    limit: int = 500) -> list[str]:
    """The values a filter can offer (rules, services, detectors present in the table)."""
    query = sql.SQL("SELECT DISTINCT {col} FROM anomaly_events WHERE {col} IS NOT NULL "
                    "ORDER BY 1 LIMIT %s").format(col=sql.Identifier(column))
    return [str(r[0]) for r in conn.execute(query, (limit,))]
