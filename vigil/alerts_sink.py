"""A local Discord-compatible webhook receiver (`vigil alerts sink`): for the demo, the
latency benchmark and anyone without a real DISCORD_WEBHOOK_URL. It answers like Discord
(204 No Content), prints one line per embed, and appends each message with its arrival time
to a JSON-lines file."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY = 1_000_000  # Discord's own limit is far lower; anything bigger is refused


class AlertSink:
    """Serve on 127.0.0.1:`port` (0: a free one) until `stop()`."""

    def __init__(self, store: Path, port: int = 0,
                 report: Callable[[str], None] = print) -> None:
        self.store = store
        self.report = report
        self._lock = threading.Lock()
        store.parent.mkdir(parents=True, exist_ok=True)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="alert-sink")

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/webhook"

    def start(self) -> AlertSink:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _keep(self, payload: dict[str, Any]) -> None:
        received = datetime.now(UTC)
        with self._lock, self.store.open("a") as out:
            out.write(json.dumps({"received_at": received.isoformat(), "payload": payload})
                      + "\n")
        for item in payload.get("embeds") or [{"title": payload.get("content", "")}]:
            self.report(f"alert {received:%H:%M:%S}  {item.get('title', '')}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._answer(413, {"message": "payload too large"})
                    return
                try:
                    payload = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._answer(400, {"message": "body is not JSON", "code": 50109})
                    return
                if not isinstance(payload, dict) or not (payload.get("content")
                                                         or payload.get("embeds")):
                    self._answer(400, {"message": "Cannot send an empty message",
                                       "code": 50006})
                    return
                sink._keep(payload)
                self._answer(204, None)

            def _answer(self, status: int, body: dict[str, Any] | None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return  # one line per alert is printed by the sink itself

        return Handler


def received(store: Path) -> list[dict[str, Any]]:
    """Everything the sink stored, oldest first."""
    if not store.exists():
        return []
    return [json.loads(line) for line in store.read_text().splitlines() if line.strip()]
