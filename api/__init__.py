"""vigil's REST API (FastAPI): thin over vigil.queries, the same reads the dashboard makes."""
