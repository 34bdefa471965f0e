"""Services: per service (or per user, for transactions) counts by level, last anomaly and
top rules."""

from datetime import timedelta

import pandas as pd
import streamlit as st

from dashboards import data
from vigil import queries

st.title("Services")
left, right = st.columns(2)
per = left.radio("Per", ["service", "user_id"], horizontal=True, key="services_per",
                 format_func=lambda p: "service" if p == "service" else "user (transactions)")
span = right.selectbox("Since", ["last 24 hours", "last 7 days", "all time"],
                       key="services_since")
since = None if span == "all time" else data.now() - (
    timedelta(days=1) if span == "last 24 hours" else timedelta(days=7))
rows = data.read(queries.services, since, per)
if not rows:
    data.empty_state() if data.read(queries.summary).total == 0 else st.info(
        f"No anomaly with a {per} in the {span}.")
    st.stop()
table = pd.DataFrame([{"name": r.name, "total": r.total, **r.by_level,
                       "last anomaly": r.last_anomaly, "top rules": ", ".join(r.top_rules)}
                      for r in rows])
st.metric(f"{'Services' if per == 'service' else 'Users'} with anomalies", len(rows))
st.dataframe(table, hide_index=True, column_config={
    "critical": st.column_config.NumberColumn("critical"),
    "last anomaly": st.column_config.DatetimeColumn("last anomaly", format="YYYY-MM-DD HH:mm:ss")})
top = table.head(15).set_index("name")[["critical", "warning", "info"]]
st.bar_chart(top, horizontal=True)
