"""Timeline: anomalies over time, stacked by type, level or topic; open a bucket's events."""

from datetime import timedelta

import pandas as pd
import streamlit as st

from dashboards import data
from vigil import queries

RANGES = {"last hour": timedelta(hours=1), "last 6 hours": timedelta(hours=6),
          "last 24 hours": timedelta(days=1), "last 7 days": timedelta(days=7)}
DEFAULT_STEP = {"last hour": "1m", "last 6 hours": "5m", "last 24 hours": "15m",
                "last 7 days": "1h"}

st.title("Timeline")
left, mid, right = st.columns(3)
span = left.selectbox("Range", list(RANGES), index=2, key="timeline_range")
step = mid.selectbox("Granularity", list(queries.GRANULARITIES),
                     index=list(queries.GRANULARITIES).index(DEFAULT_STEP[span]),
                     key="timeline_step")
by = right.selectbox("Stack by", ["rule", "level", "topic"], key="timeline_by")

until = data.now()
since = until - RANGES[span]
points = data.read(queries.timeline, since, until, step, by)
if not points:
    data.empty_state() if data.read(queries.summary).total == 0 else st.info(
        f"No anomalies in the {span}: widen the range.")
    st.stop()

frame = pd.DataFrame([p.__dict__ for p in points])
st.bar_chart(frame.pivot_table(index="bucket", columns="key", values="count", fill_value=0))
st.caption(f"{int(frame['count'].sum())} anomalies in the {span}, per {step}, by {by}.")

# Click-through: pick a bucket and a series, open those anomalies in the events list.
buckets = sorted(frame["bucket"].unique(), reverse=True)
pick, key, go = st.columns([2, 2, 1])
bucket = pick.selectbox("Bucket", buckets, key="timeline_bucket",
                        format_func=lambda b: f"{pd.Timestamp(b):%Y-%m-%d %H:%M}")
keys = sorted(frame.loc[frame["bucket"] == bucket, "key"])
series = key.selectbox(f"{by.capitalize()}", ["(all)", *keys], key="timeline_key")
if go.button("Show events", type="primary"):
    start = pd.Timestamp(bucket).to_pydatetime()
    only = () if series == "(all)" else (str(series),)
    st.session_state["events_filter"] = queries.EventFilter(
        since=start, until=start + queries.GRANULARITIES[step],
        rules=only if by == "rule" else (), levels=only if by == "level" else (),
        topics=only if by == "topic" else ())
    st.switch_page("views/events.py")
