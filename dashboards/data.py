"""What the dashboard pages read, cached for a few seconds, with failures turned into a
message naming the service and what to do — never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import streamlit as st

from vigil import queries
from vigil.settings import Settings, SettingsError

T = TypeVar("T")
TTL = 5  # seconds: live enough for an on-call screen, light on Postgres


def settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()
        raise  # unreachable: st.stop ends the script


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def read(query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one vigil.queries function as the read-only role; stop the page with a clear
    message when Postgres cannot answer."""
    config = settings()
    try:
        return _cached(config.reader_url, query.__name__, args, tuple(sorted(kwargs.items())))
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no answer"
        st.error(f"PostgreSQL at {config.postgres_host}:{config.postgres_port} is "
                 f"unreachable ({reason}). Start it with `vigil services up` (or `vigil run`), "
                 "then `vigil db migrate`.")
    except psycopg.errors.UndefinedTable:
        st.warning("The database has no anomaly_events table yet: run `vigil db migrate`.")
    except psycopg.errors.InsufficientPrivilege:
        st.error("The dashboard's role vigil_reader may not read anomaly_events: run "
                 "`vigil db migrate`, which grants it.")
    st.stop()
    raise AssertionError("unreachable")


@st.cache_data(ttl=TTL, show_spinner=False)
def _cached(url: str, name: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]
            ) -> Any:
    with psycopg.connect(url, connect_timeout=3) as conn:
        return getattr(queries, name)(conn, *args, **dict(kwargs))


def empty_state() -> None:
    st.info("No anomalies yet. Start the stack with `vigil run`, then produce traffic, e.g. "
            "`vigil produce --rate 200 --scenarios all`; the Kafka sensor lands it and "
            "detection fills this page within seconds.")
