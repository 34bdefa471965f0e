"""Events: the anomaly list with filters, server-side sorting and pagination, CSV export."""

from datetime import timedelta

import pandas as pd
import streamlit as st

from dashboards import data
from vigil import queries

RANGES = {"any time": None, "last hour": timedelta(hours=1),
          "last 24 hours": timedelta(days=1), "last 7 days": timedelta(days=7)}
CSV_LIMIT = 10_000

st.title("Events")
handed = st.session_state.get("events_filter")  # from the timeline's click-through
if handed is not None:
    span = f"{handed.since:%Y-%m-%d %H:%M} - {handed.until:%H:%M} UTC"
    note, clear = st.columns([4, 1])
    note.info(f"Showing the timeline's bucket {span}"
              + (f" ({', '.join(handed.rules or handed.levels or handed.topics)})"
                 if handed.rules or handed.levels or handed.topics else ""))
    if clear.button("Clear"):
        del st.session_state["events_filter"]
        st.rerun()

with st.expander("Filters", expanded=True):
    a, b, c, d = st.columns(4)
    topics = a.multiselect("Type", list(queries.TOPICS), key="f_topics",
                           default=list(handed.topics) if handed else None)
    levels = b.multiselect("Level", list(queries.LEVELS), key="f_levels",
                           default=list(handed.levels) if handed else None)
    rule_options = data.read(queries.distinct_values, "alert_type")
    handed_rules = [r for r in (handed.rules if handed else ()) if r in rule_options]
    rules = c.multiselect("Rule", rule_options, key="f_rules", default=handed_rules or None)
    detectors = d.multiselect("Detector", data.read(queries.distinct_values, "detector"),
                              key="f_detectors")
    e, f, g, h = st.columns(4)
    service = e.text_input("Service", key="f_service", max_chars=200).strip()
    user_id = f.text_input("User id", key="f_user", max_chars=200).strip()
    text = g.text_input("Text", key="f_text", max_chars=queries.MAX_TEXT,
                        help="in the title, message, entity or service").strip()
    window = h.selectbox("Time", list(RANGES), key="f_range", disabled=handed is not None)

back = RANGES[window]
since, until = (handed.since, handed.until) if handed else (
    (data.now() - back, None) if back else (None, None))
where = queries.EventFilter(tuple(topics), tuple(levels), tuple(rules), tuple(detectors),
                            service or None, user_id or None, None, since, until, text or None)

s, o, z, p = st.columns(4)
sort = s.selectbox("Sort by", list(queries.SORTABLE), key="f_sort")
descending = o.radio("Order", ["newest first", "oldest first"], key="f_order",
                     horizontal=True) == "newest first"
size = z.selectbox("Per page", [25, 50, 100, 250], index=1, key="f_size")
first = data.read(queries.list_events, where, sort=sort, descending=descending, page=1,
                  page_size=size)
page = p.number_input("Page", min_value=1, max_value=first.pages, value=1, step=1,
                      key="f_page")
found = first if page == 1 else data.read(
    queries.list_events, where, sort=sort, descending=descending, page=int(page),
    page_size=size)

if found.total == 0:
    if data.read(queries.summary).total == 0:
        data.empty_state()
    else:
        st.info("No anomaly matches these filters.")
    st.stop()

st.caption(f"{found.total:,} anomalies match · page {found.page} of {found.pages}")
table = pd.DataFrame(found.rows)
st.dataframe(table, hide_index=True, column_config={
    "timestamp": st.column_config.DatetimeColumn("time", format="YYYY-MM-DD HH:mm:ss"),
    "alert_title": st.column_config.TextColumn("title", width="large")})

pick, open_, export = st.columns([3, 1, 1])
titles = dict(zip(table["id"], table["alert_title"], strict=True))
chosen = pick.selectbox("Anomaly", list(titles), key="f_pick",
                        format_func=lambda i: f"{titles[i]}  ({str(i)[:8]})")
if open_.button("Open detail", type="primary"):
    st.session_state["event_id"] = chosen
    st.switch_page("views/detail.py")


def export_rows() -> bytes:
    """Every matching row (up to CSV_LIMIT), in the chosen order."""
    rows: list[dict[str, object]] = []
    for number in range(1, -(-min(found.total, CSV_LIMIT) // queries.MAX_PAGE_SIZE) + 1):
        rows += data.read(queries.list_events, where, sort=sort, descending=descending,
                          page=number, page_size=queries.MAX_PAGE_SIZE).rows
    return pd.DataFrame(rows).to_csv(index=False).encode()


export.download_button("CSV", export_rows() if found.total <= CSV_LIMIT else b"",
                       file_name="vigil-anomalies.csv", mime="text/csv",
                       disabled=found.total > CSV_LIMIT,
                       help=f"all {found.total:,} matching rows" if found.total <= CSV_LIMIT
                       else f"more than {CSV_LIMIT:,} rows: narrow the filters")
