"""vigil analyst dashboard: entry point for `streamlit run dashboards/app.py`.

For now a single status page over anomaly_events; the analyst pages (overview, timeline,
services, events, detail) come with the dashboard issue.
"""

from __future__ import annotations

import psycopg
import streamlit as st

from vigil.settings import Settings, SettingsError

st.set_page_config(page_title="vigil", layout="wide")
st.title("vigil")

try:
    settings = Settings.from_env()
except SettingsError as exc:
    st.error(f"Configuration error: {exc}")
    st.stop()

try:
    with psycopg.connect(settings.database_url, connect_timeout=3) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE timestamp > now() - interval '1 hour') "
            "FROM anomaly_events").fetchone()
except psycopg.OperationalError:
    st.error(f"PostgreSQL at {settings.postgres_host}:{settings.postgres_port} is unreachable: "
             "start it with `vigil services up`.")
    st.stop()
except psycopg.errors.UndefinedTable:
    st.warning("The database has no schema yet: run `vigil db migrate`.")
    st.stop()

total, last_hour = row if row else (0, 0)
left, right = st.columns(2)
left.metric("Anomalies (all time)", total)
right.metric("Anomalies (last hour)", last_hour)
if not total:
    st.info("No anomalies yet: start the producer and the Dagster sensor.")
