"""vigil analyst dashboard: `streamlit run dashboards/app.py` (or `vigil run`).

Pages live in dashboards/views/; each reads through dashboards/data.py, which runs the
shared vigil.queries as the read-only role vigil_reader.
"""

import sys
from pathlib import Path

import streamlit as st

# `streamlit run dashboards/app.py` puts dashboards/ on the path, not the project root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

st.set_page_config(page_title="vigil", page_icon=":material/monitor_heart:", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/timeline.py", title="Timeline", icon=":material/timeline:"),
    st.Page("views/services.py", title="Services", icon=":material/dns:"),
    st.Page("views/events.py", title="Events", icon=":material/list:"),
    st.Page("views/detail.py", title="Event detail", icon=":material/search:"),
]
st.navigation(PAGES).run()
