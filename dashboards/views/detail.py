"""Event detail: every field of one anomaly, and its evidence from the lake."""

import json

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data
from vigil import queries

st.title("Event detail")
event_id = st.query_params.get("id") or st.session_state.get("event_id") or ""
event_id = st.text_input("Anomaly id", value=event_id, max_chars=64, key="detail_id").strip()
if not event_id:
    st.info("Pick an anomaly on the Events page (Open detail), or paste its id here.")
    st.stop()
st.query_params["id"] = event_id
event = data.read(queries.get_event, event_id)
if event is None:
    st.warning(f"No anomaly with id {event_id!r}: it may have been recomputed away; "
               "search for it on the Events page.")
    st.stop()

st.subheader(event["alert_title"])
level = event["alert_level"]
badge = {"critical": ":red-badge[critical]", "warning": ":orange-badge[warning]",
         "info": ":blue-badge[info]"}.get(level, level)
st.markdown(f"{badge} · **{event['alert_type']}** · {event['topic']} · entity "
            f"`{event['entity']}` · detector {event['detector']} ({event['detector_version']})")
st.write(event["alert_message"])

left, right = st.columns(2)
with left:
    st.markdown("**Fields**")
    plain = {k: v for k, v in event.items() if k not in ("tags", "metrics", "evidence")}
    st.dataframe(pd.DataFrame({"field": list(plain), "value": [str(v) for v in plain.values()]}),
                 hide_index=True)
with right:
    st.markdown("**Tags**")
    st.json(event["tags"] or {})
    st.markdown("**Metrics**")
    st.json(event["metrics"] or {})
    st.markdown("**Evidence (Kafka coordinates)**")
    st.json(event["evidence"] or {})

st.subheader("Evidence from the lake")
config = data.settings()
try:
    from vigil.detect.rules import RuleError, load_rules
    from vigil.evidence import gather
    from vigil.lake import Lake

    try:
        rules = {r.name: r for r in load_rules()}
    except RuleError:
        rules = {}
    evidence = gather(Lake.open(config), event, rules)
except Exception as exc:  # the anomaly itself is shown; the lake is a second source
    st.warning(f"The raw events cannot be read from the lake at {config.lake_url}: {exc}")
    st.stop()

span = f"{evidence.start:%H:%M:%S} - {evidence.end:%H:%M:%S} UTC"
if evidence.events.empty:
    st.info(f"No raw events of {json.dumps(evidence.key)} in the lake for {span} "
            "(not landed yet, or the lake was reset).")
    st.stop()
marks = pd.DataFrame({"timestamp": [event["window_start"], event["window_end"]],
                      "what": ["window start", "last firing"]})
chart = alt.Chart(evidence.series).mark_line(point=True).encode(
    x=alt.X("timestamp:T", title="time (UTC)"), y=alt.Y("value:Q", title=evidence.series_name))
rules_layer = alt.Chart(marks).mark_rule(color="red", strokeDash=[4, 4]).encode(
    x="timestamp:T", tooltip=["what"])
st.altair_chart(chart + rules_layer)
st.caption(f"{len(evidence.events):,} raw events of {json.dumps(evidence.key)} for {span}"
           + (" (the latest shown)" if evidence.truncated else ""))
st.dataframe(evidence.events, hide_index=True)
