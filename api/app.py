"""The REST API: `vigil api` serves it; OpenAPI docs at /docs.

Every endpoint is one call into `vigil.queries` on a connection as the read-only role; the
API adds parameter validation (422 with what was wrong), 404 for an unknown id, and 503 naming
the database when it cannot be reached.
"""

from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse

from vigil import queries
from vigil.settings import Settings

Level = Literal["info", "warning", "critical"]
Topic = Literal["logs", "metrics", "transactions"]
Sort = Literal["timestamp", "alert_level", "alert_type", "topic", "service", "entity",
               "detector", "window_end"]


class DatabaseUnavailableError(Exception):
    """Postgres cannot answer; the message names it and what to do."""


def connection(request: Request) -> Iterator[psycopg.Connection[Any]]:
    settings: Settings = request.app.state.settings
    try:
        conn = psycopg.connect(settings.reader_url, connect_timeout=3)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(
            f"PostgreSQL at {settings.postgres_host}:{settings.postgres_port} is "
            f"unreachable ({str(exc).strip().splitlines()[-1]}); start it with "
            "`vigil services up` and run `vigil db migrate`") from None
    with conn:
        try:
            yield conn
        except psycopg.errors.UndefinedTable:
            raise DatabaseUnavailableError("the database has no anomaly_events table: "
                                           "run `vigil db migrate`") from None


Conn = Annotated[psycopg.Connection[Any], Depends(connection)]


def event_filter(
    topic: Annotated[list[Topic] | None, Query(description="event type")] = None,
    level: Annotated[list[Level] | None, Query()] = None,
    rule: Annotated[list[str] | None, Query(max_length=200)] = None,
    detector: Annotated[list[str] | None, Query(max_length=100)] = None,
    service: Annotated[str | None, Query(max_length=200)] = None,
    user_id: Annotated[str | None, Query(max_length=200)] = None,
    entity: Annotated[str | None, Query(max_length=400)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: Annotated[str | None, Query(max_length=queries.MAX_TEXT,
                                   description="text in title, message, entity")] = None,
) -> queries.EventFilter:
    if since and until and until <= since:
        raise ValueError("until must be after since")
    for value in (*(rule or ()), *(detector or ()), service, user_id, entity, q):
        if value and "\x00" in value:  # Postgres text cannot hold it; say so, not a 500
            raise ValueError(f"filter value {value[:40]!r} contains a NUL character")
    return queries.EventFilter(tuple(topic or ()), tuple(level or ()), tuple(rule or ()),
                               tuple(detector or ()), service, user_id, entity,
                               _utc(since), _utc(until), q)


Filter = Annotated[queries.EventFilter, Depends(event_filter)]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    app = FastAPI(title="vigil", version="1",
                  description="Anomalies vigil found in logs, metrics and transactions.")
    app.state.settings = settings

    @app.exception_handler(DatabaseUnavailableError)
    def unavailable(_request: Request, exc: DatabaseUnavailableError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.exception_handler(ValueError)
    def invalid(_request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/health")
    def health(request: Request) -> JSONResponse:
        try:
            for conn in connection(request):
                conn.execute("SELECT 1 FROM anomaly_events LIMIT 1")
        except DatabaseUnavailableError as exc:
            return JSONResponse(status_code=503, content={"status": "unavailable",
                                                          "database": str(exc)})
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/events")
    def events(conn: Conn, where: Filter,
               sort: Sort = "timestamp", order: Literal["asc", "desc"] = "desc",
               page: Annotated[int, Query(ge=1)] = 1,
               page_size: Annotated[int, Query(ge=1, le=queries.MAX_PAGE_SIZE)] = 50
               ) -> dict[str, Any]:
        found = queries.list_events(conn, where, sort=sort, descending=order == "desc",
                                    page=page, page_size=page_size)
        return {"items": found.rows, "total": found.total, "page": found.page,
                "page_size": found.page_size, "pages": found.pages}

    @app.get("/events/stats/summary")
    def events_summary(conn: Conn, where: Filter) -> dict[str, Any]:
        return asdict(queries.summary(conn, where))

    @app.get("/events/{event_id}")
    def event(conn: Conn, event_id: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
        found = queries.get_event(conn, event_id)
        if found is None:
            raise HTTPException(404, f"no anomaly with id {event_id!r}")
        return found

    @app.get("/dashboard/overview")
    def overview(conn: Conn, now: datetime | None = None) -> dict[str, Any]:
        return asdict(queries.overview(conn, _utc(now) or datetime.now(UTC)))

    @app.get("/dashboard/timeline")
    def timeline(conn: Conn, since: datetime | None = None, until: datetime | None = None,
                 granularity: Literal["1m", "5m", "15m", "1h", "1d"] = "5m",
                 by: Literal["rule", "level", "topic"] = "rule") -> dict[str, Any]:
        end = _utc(until) or datetime.now(UTC)
        start = _utc(since) or end - timedelta(days=1)
        points = queries.timeline(conn, start, end, granularity, by)
        return {"since": start, "until": end, "granularity": granularity, "by": by,
                "points": [asdict(p) for p in points]}

    @app.get("/dashboard/services")
    def services(conn: Conn, since: datetime | None = None,
                 per: Literal["service", "user_id"] = "service",
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        rows = queries.services(conn, _utc(since), per, limit)
        return {"per": per, "items": [asdict(r) for r in rows]}

    return app


def _utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC, as everything in vigil is."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
