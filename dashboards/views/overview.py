"""Overview: what is wrong now — counts, open critical anomalies, landing rate and lag."""

from datetime import timedelta

import pandas as pd
import streamlit as st

from dashboards import data
from vigil import queries

st.title("Overview")


@st.fragment(run_every=timedelta(seconds=5))
def anomalies() -> None:
    now = data.now()
    view = data.read(queries.overview, now)
    if view.last_day.total == 0 and not view.open_critical:
        data.empty_state()
    left, mid, right, far = st.columns(4)
    left.metric("Anomalies, last hour", view.last_hour.total)
    mid.metric("Anomalies, last 24 h", view.last_day.total)
    right.metric("Critical now", len(view.open_critical),
                 help=f"critical anomalies still firing in the last "
                      f"{int(queries.OPEN_FOR.total_seconds() // 60)} minutes")
    far.metric("Critical, last hour", view.last_hour.by_level.get("critical", 0))
    by_type, by_level = st.columns(2)
    with by_type:
        st.subheader("Last 24 h by type")
        if view.last_day.by_rule:
            st.bar_chart(pd.Series(view.last_day.by_rule, name="anomalies"), horizontal=True)
    with by_level:
        st.subheader("Last 24 h by level")
        if view.last_day.by_level:
            levels = pd.Series(view.last_day.by_level, name="anomalies")
            st.bar_chart(levels.reindex([lv for lv in queries.LEVELS if lv in levels.index]))
    st.subheader("Open critical anomalies")
    if view.open_critical:
        st.dataframe(_table(view.open_critical), hide_index=True)
    else:
        st.caption("None: nothing critical has fired in the last 15 minutes.")
    st.subheader("Last alerts sent")
    if view.last_alerts:
        st.dataframe(_table(view.last_alerts, "notified_at"), hide_index=True)
    else:
        st.caption("No alert posted yet (set DISCORD_WEBHOOK_URL to post them).")


def _table(rows: list[dict[str, object]], first: str = "timestamp") -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    columns = [first, "alert_level", "alert_title", "entity", "alert_type", "id"]
    return frame[[c for c in dict.fromkeys(columns) if c in frame.columns]]


@st.fragment(run_every=timedelta(seconds=10))
def pipeline() -> None:
    from vigil.settings import TOPICS

    st.subheader("Landing")
    config = data.settings()
    rate, lag = st.columns([2, 1])
    with rate:
        try:
            from vigil.lake import Lake
            from vigil.pipeline_state import landed_per_minute

            landed = landed_per_minute(Lake.open(config), TOPICS,
                                       data.now() - timedelta(minutes=30))
        except Exception as exc:  # the lake is optional for the rest of the page
            st.warning(f"The lake at {config.lake_url} cannot be read: {exc}")
        else:
            if landed.empty:
                st.caption("No events landed in the last 30 minutes.")
            else:
                st.caption("Events landed per minute (last 30 min)")
                st.bar_chart(landed.pivot_table(index="minute", columns="topic",
                                                values="rows", fill_value=0))
    with lag:
        from vigil.kafka import broker_answers
        from vigil.pipeline_state import landing_lag

        if not broker_answers(config.kafka_bootstrap, timeout=1.0):
            st.warning(f"Kafka at {config.kafka_bootstrap} is unreachable: no lag to show. "
                       "Start it with `vigil services up`.")
            return
        try:
            rows = landing_lag(config.kafka_bootstrap, config.deployment, TOPICS)
        except Exception as exc:  # e.g. the group coordinator is still starting
            st.warning(f"Kafka at {config.kafka_bootstrap} did not report the lag: {exc}")
            return
        st.metric("Consumer lag (events not yet landed)", f"{sum(r.lag for r in rows):,}")
        st.dataframe(pd.DataFrame([r.__dict__ for r in rows]), hide_index=True)


anomalies()
pipeline()
