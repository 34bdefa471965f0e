"""Streamlit analyst dashboard."""
