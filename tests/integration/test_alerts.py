"""Discord delivery against a scripted local webhook: 429, 500, 400, 404, rate-limit headers,
grouping, and the outbox across process restarts."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from vigil.alerts import DiscordWebhook, deliver_pending
from vigil.migrate import migrate

Reply = tuple[int, dict[str, str], str]


class ScriptedWebhook:
    """Answers from a script, then 204; records every request it received."""

    def __init__(self, script: list[Reply]) -> None:
        self.script = list(script)
        self.received: list[tuple[float, dict[str, Any]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.received.append((time.monotonic(), body))
                status, headers, text = (owner.script.pop(0) if owner.script
                                         else (204, {}, ""))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *_args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/webhooks/1/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def db(fresh_database: str) -> str:
    migrate(fresh_database)
    return fresh_database


def insert(url: str, n: int, rule: str = "error_spike", service: str = "payments-api",
           level: str = "critical") -> list[str]:
    now = datetime(2026, 11, 24, 10, tzinfo=UTC)
    ids = []
    with psycopg.connect(url) as conn:
        for i in range(n):
            anomaly_id = f"{rule}-{service}-{i}"
            conn.execute(
                "INSERT INTO anomaly_events (id, timestamp, alert_type, alert_level, "
                "alert_title, alert_message, rule, entity, service, metrics, window_start, "
                "window_end) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (anomaly_id, now + timedelta(minutes=i), rule, level,
                 f"{20 + i} ERROR logs in 3 min on {service} (threshold 20)", "details",
                 rule, service, service, json.dumps({"peak": 20 + i, "points": 1}),
                 now, now + timedelta(minutes=3)))
            ids.append(anomaly_id)
    return ids


def pending(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM anomaly_events WHERE notified_at IS NULL "
                           "AND notify_error IS NULL").fetchone()
    return int(row[0]) if row else -1


def deliver(url: str, hook: DiscordWebhook | None) -> Any:
    with psycopg.connect(url) as conn:
        return deliver_pending(conn, hook)


def fast(url: str) -> DiscordWebhook:
    return DiscordWebhook(url, backoff=0.05, timeout=5)


def test_429_with_retry_after_then_success_posts_once(db: str) -> None:
    hook = ScriptedWebhook([(429, {"Content-Type": "application/json"},
                             '{"retry_after": 0.3, "global": false}')])
    try:
        insert(db, 3)
        report = deliver(db, fast(hook.url))
        assert (report.sent_messages, report.delivered_rows) == (1, 3)
        assert len(hook.received) == 2  # the 429, then the accepted retry
        assert hook.received[1][0] - hook.received[0][0] >= 0.3
        body = hook.received[1][1]
        assert body["allowed_mentions"] == {"parse": []}
        assert len(body["embeds"]) == 3
        assert body["embeds"][0]["color"] == 0xE74C3C
        assert pending(db) == 0
        assert deliver(db, fast(hook.url)).sent_messages == 0  # nothing is sent twice
        assert len(hook.received) == 2
    finally:
        hook.close()


def test_500_then_success_and_rate_limit_headers_are_obeyed(db: str) -> None:
    hook = ScriptedWebhook([
        (500, {}, "oops"),
        (204, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "0.4"}, ""),
    ])
    try:
        insert(db, 1, service="a")
        insert(db, 1, service="b")
        report = deliver(db, fast(hook.url))
        assert (report.sent_messages, report.delivered_rows) == (2, 2)
        times = [t for t, _ in hook.received]
        assert len(times) == 3
        assert times[2] - times[1] >= 0.4  # waited for the bucket to reset
        assert pending(db) == 0
    finally:
        hook.close()


def test_400_is_never_retried_and_is_set_aside(db: str) -> None:
    hook = ScriptedWebhook([(400, {}, '{"message": "Invalid Form Body"}')])
    try:
        insert(db, 2)
        report = deliver(db, fast(hook.url))
        assert report.rejected_rows == 2 and report.sent_messages == 0
        assert len(hook.received) == 1
        with psycopg.connect(db) as conn:
            errors = conn.execute("SELECT notify_error FROM anomaly_events").fetchall()
        assert all("Invalid Form Body" in e[0] for e in errors)
        assert deliver(db, fast(hook.url)).sent_messages == 0
        assert len(hook.received) == 1
    finally:
        hook.close()


def test_404_stops_using_the_webhook_and_keeps_alerts_queued(db: str) -> None:
    broken = ScriptedWebhook([(404, {}, '{"message": "Unknown Webhook"}')] * 5)
    good = ScriptedWebhook([])
    try:
        insert(db, 1, service="a")
        insert(db, 1, service="b")
        report = deliver(db, fast(broken.url))
        assert report.disabled and "DISCORD_WEBHOOK_URL" in report.disabled
        assert len(broken.received) == 1  # no second message tried after the 404
        assert pending(db) == 2
        fixed = deliver(db, fast(good.url))
        assert fixed.delivered_rows == 2 and len(good.received) == 2
    finally:
        broken.close()
        good.close()


def test_alerts_inserted_by_a_process_that_died_before_posting_go_out_once(db: str) -> None:
    insert(db, 4)  # inserted, never posted: the inserting process died
    hook = ScriptedWebhook([])
    try:
        assert deliver(db, None).disabled == "no DISCORD_WEBHOOK_URL"
        assert pending(db) == 4
        first = deliver(db, fast(hook.url))
        second = deliver(db, fast(hook.url))
        assert (first.delivered_rows, second.delivered_rows) == (4, 0)
        assert len(hook.received) == 1
    finally:
        hook.close()


def test_groups_of_more_than_ten_say_how_many_more(db: str) -> None:
    insert(db, 12, service="payments-api")
    insert(db, 2, rule="large_amount", service="u1")
    hook = ScriptedWebhook([])
    try:
        report = deliver(db, fast(hook.url))
        assert (report.sent_messages, report.delivered_rows) == (2, 14)
        bodies = {b["content"]: b for _, b in hook.received}
        big = next(b for c, b in bodies.items() if "error_spike" in c)
        assert len(big["embeds"]) == 10 and "(+2 more)" in big["content"]
        assert all(len(json.dumps(b)) < 6000 + 2000 for b in bodies.values())
    finally:
        hook.close()


def test_unreachable_webhook_keeps_everything_queued(db: str) -> None:
    insert(db, 2)
    hook = DiscordWebhook("http://127.0.0.1:9/api/webhooks/1/t", backoff=0.01,
                          max_attempts=3, timeout=1)
    report = deliver(db, hook)
    assert report.delivered_rows == 0 and pending(db) == 2


def test_a_failed_ingest_run_posts_one_pipeline_alert(monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from orchestration.alerting import pipeline_failure_alert
    from orchestration.definitions import defs

    hook = ScriptedWebhook([])
    monkeypatch.setenv("DISCORD_WEBHOOK_URL", hook.url)
    try:
        with dg.instance_for_test() as instance:
            bad = {"ops": {"land_ranges": {"config": {"ranges": [],
                                                      "requested_at": "yesterday"}}}}
            result = defs.resolve_job_def("ingest").execute_in_process(
                run_config=bad, instance=instance, raise_on_error=False)
            assert not result.success
            failure = next(record.dagster_event for record in instance.all_logs(result.run_id)
                           if record.dagster_event is not None
                           and record.dagster_event.event_type_value == "PIPELINE_FAILURE")
            context = dg.build_run_status_sensor_context(
                sensor_name="pipeline_failure_alert", dagster_event=failure,
                dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()
            pipeline_failure_alert(context)
            step_failures = [r for r in instance.all_logs(result.run_id)
                             if r.dagster_event is not None
                             and r.dagster_event.event_type_value == "STEP_FAILURE"]
        assert len(step_failures) == 1, "a config mistake is not retried"
        (_, body), = hook.received
        embed = body["embeds"][0]
        assert embed["title"].startswith("ingest run ") and embed["title"].endswith(" failed")
        assert result.run_id in embed["url"]
        assert body["allowed_mentions"] == {"parse": []}
    finally:
        hook.close()
