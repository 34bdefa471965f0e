"""New anomalies to Discord, through an outbox in anomaly_events.

Only rows with notified_at NULL (and no recorded content error) are sent; each message's
rows are marked in the same transaction right after Discord accepted it, so a crash before
the post loses nothing and a row marked delivered is never posted again. (A crash in the
instant between Discord's answer and the commit would resend that one message.)

Rows are grouped per (rule, service or entity) into one message of up to 10 embeds, with
"+N more" for the rest of the group. Discord's limits are respected: 429 waits `retry_after`,
X-RateLimit-Remaining 0 waits X-RateLimit-Reset-After, 5xx and timeouts back off and retry,
400 is never retried (the reason is stored), 401/403/404 stop using the webhook with one
clear error. Mentions are disabled.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

log = logging.getLogger(__name__)

COLORS = {"critical": 0xE74C3C, "warning": 0xF39C12, "info": 0x3498DB}
MAX_EMBEDS = 10
_LIMITS = {"title": 256, "description": 4096, "field": 1024, "content": 2000, "total": 6000}


class WebhookRejectedError(RuntimeError):
    """Discord refused this message's content (HTTP 400): retrying cannot help."""


class WebhookUnusableError(RuntimeError):
    """The webhook URL is wrong or revoked (401/403/404): stop using it."""


@dataclass
class DiscordWebhook:
    url: str
    timeout: float = 10.0
    max_attempts: int = 6
    backoff: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    _ready_at: float = 0.0  # monotonic time before which the bucket is exhausted

    def post(self, payload: dict[str, Any]) -> None:
        """Deliver one message or raise; transient failures are retried here."""
        body = json.dumps(payload).encode()
        delay = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            wait = self._ready_at - time.monotonic()
            if wait > 0:
                self.sleep(wait)
            request = urllib.request.Request(
                self.url, data=body, method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "vigil-alerts"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    self._note_bucket(response.headers)
                    return
            except urllib.error.HTTPError as exc:
                self._note_bucket(exc.headers)
                text = exc.read().decode(errors="replace")[:500]
                if exc.code == 429:
                    self.sleep(_retry_after(text, exc.headers))
                    continue
                if exc.code == 400:
                    raise WebhookRejectedError(
                        f"Discord refused the message (400): {text}") from None
                if exc.code in (401, 403, 404):
                    raise WebhookUnusableError(
                        f"the Discord webhook answered {exc.code}: check DISCORD_WEBHOOK_URL "
                        "(deleted or wrong webhook); alerts stay queued until it is fixed"
                    ) from None
                if exc.code < 500:
                    raise WebhookRejectedError(f"Discord answered {exc.code}: {text}") from None
                log.warning("Discord answered %s (attempt %d), retrying", exc.code, attempt)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                log.warning("Discord unreachable (%s, attempt %d), retrying", exc, attempt)
            self.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise ConnectionError(f"Discord did not accept the message after {self.max_attempts} "
                              "attempts; it stays queued for the next run")

    def _note_bucket(self, headers: Any) -> None:
        if headers is None:
            return
        remaining = headers.get("X-RateLimit-Remaining")
        reset_after = headers.get("X-RateLimit-Reset-After")
        if remaining is not None and reset_after is not None and float(remaining) <= 0:
            self._ready_at = time.monotonic() + float(reset_after)


def _retry_after(body: str, headers: Any) -> float:
    try:
        return float(json.loads(body)["retry_after"])
    except (ValueError, KeyError, TypeError):
        return float(headers.get("Retry-After", 1.0)) if headers is not None else 1.0


# ------------------------------------------------------------------ messages


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def embed(row: dict[str, Any]) -> dict[str, Any]:
    metrics = row.get("metrics") or {}
    fields = [
        {"name": "rule", "value": str(row["rule"] or row["alert_type"]), "inline": True},
        {"name": "entity", "value": _clip(str(row["entity"] or "-"), 200), "inline": True},
        {"name": "level", "value": row["alert_level"], "inline": True},
    ]
    if "peak" in metrics:
        fields.append({"name": "peak", "value": f"{metrics['peak']:g}", "inline": True})
    if row.get("window_start") and row.get("window_end"):
        fields.append({"name": "window (UTC)", "inline": True,
                       "value": f"{row['window_start']:%H:%M:%S} - {row['window_end']:%H:%M:%S}"})
    return {
        "title": _clip(row["alert_title"], _LIMITS["title"]),
        "description": _clip(row["alert_message"] or "", 1000),
        "color": COLORS.get(row["alert_level"], COLORS["info"]),
        "timestamp": row["timestamp"].isoformat(),
        "fields": [{**f, "value": _clip(f["value"], _LIMITS["field"])} for f in fields],
        "footer": {"text": f"vigil · {row['id'][:12]}"},
    }


def _size(item: dict[str, Any]) -> int:
    return (len(item["title"]) + len(item["description"]) + len(item["footer"]["text"])
            + sum(len(f["name"]) + len(f["value"]) for f in item["fields"]))


def messages(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[str]]]:
    """(payload, ids it covers) per group of (rule, service or entity)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        key = (str(row["rule"] or row["alert_type"]), str(row["service"] or row["entity"]))
        groups.setdefault(key, []).append(row)
    out = []
    for (rule, where), members in groups.items():
        embeds: list[dict[str, Any]] = []
        total = 0
        for row in members[:MAX_EMBEDS]:
            item = embed(row)
            if total + _size(item) > _LIMITS["total"]:
                break
            embeds.append(item)
            total += _size(item)
        more = len(members) - len(embeds)
        content = f"**{len(members)} {rule}** alert(s) on **{where}**"
        if more:
            content += f" (+{more} more)"
        payload = {"username": "vigil", "content": _clip(content, _LIMITS["content"]),
                   "embeds": embeds, "allowed_mentions": {"parse": []}}
        out.append((payload, [r["id"] for r in members]))
    return out


def pipeline_failure_message(job: str, run_id: str, error: str, url: str) -> dict[str, Any]:
    """A pipeline (not data) alert: which run failed, why, where to look."""
    return {
        "username": "vigil", "allowed_mentions": {"parse": []},
        "content": _clip(f"**Pipeline alert:** `{job}` run failed", _LIMITS["content"]),
        "embeds": [{
            "title": _clip(f"{job} run {run_id[:8]} failed", _LIMITS["title"]),
            "description": _clip(error, 2000), "url": url, "color": COLORS["critical"],
            "footer": {"text": "vigil · Dagster"},
        }],
    }


# ------------------------------------------------------------------ the outbox


@dataclass
class DeliveryReport:
    sent_messages: int = 0
    delivered_rows: int = 0
    rejected_rows: int = 0
    pending_rows: int = 0
    disabled: str | None = None


_PENDING = """
SELECT id, timestamp, alert_type, alert_level, alert_title, alert_message, rule, entity,
       service, metrics, window_start, window_end
FROM anomaly_events
WHERE notified_at IS NULL AND notify_error IS NULL
ORDER BY created_at, id
LIMIT %s
"""


def deliver_configured(conn: psycopg.Connection[Any], webhook_url: str | None
                       ) -> DeliveryReport:
    """The outbox through the configured webhook (alerts disabled without one)."""
    return deliver_pending(conn, DiscordWebhook(webhook_url) if webhook_url else None)


def deliver_pending(conn: psycopg.Connection[Any], webhook: DiscordWebhook | None,
                    limit: int = 500) -> DeliveryReport:
    """Send undelivered anomalies; every message's rows are marked as soon as it is sent."""
    report = DeliveryReport()
    if webhook is None:
        _log_disabled_once()
        report.disabled = "no DISCORD_WEBHOOK_URL"
        return report
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_PENDING, (limit,))
        names = [d.name for d in cur.description or []]
        rows = [dict(zip(names, values, strict=True)) for values in cur.fetchall()]
    for payload, ids in messages(rows):
        try:
            with conn.transaction(), conn.cursor() as cur:
                # Lock this message's rows, skipping any another deliverer took meanwhile.
                cur.execute("SELECT id FROM anomaly_events WHERE id = ANY(%s) AND notified_at "
                            "IS NULL FOR UPDATE SKIP LOCKED", (ids,))
                mine = [r[0] for r in cur.fetchall()]
                if len(mine) != len(ids):
                    report.pending_rows += len(ids)
                    continue
                webhook.post(payload)
                cur.execute("UPDATE anomaly_events SET notified_at = now() WHERE id = ANY(%s)",
                            (ids,))
            report.sent_messages += 1
            report.delivered_rows += len(ids)
        except WebhookRejectedError as exc:
            with conn.transaction():
                conn.execute("UPDATE anomaly_events SET notify_error = %s WHERE id = ANY(%s)",
                             (str(exc)[:1000], ids))
            log.error("%s (%d alert(s) set aside)", exc, len(ids))
            report.rejected_rows += len(ids)
        except WebhookUnusableError as exc:
            log.error("%s", exc)
            report.disabled = str(exc)
            report.pending_rows += len(ids)
            break
        except ConnectionError as exc:
            log.warning("%s", exc)
            report.pending_rows += len(ids)
            break
    return report


_disabled_logged = False


def _log_disabled_once() -> None:
    global _disabled_logged
    if not _disabled_logged:
        log.info("DISCORD_WEBHOOK_URL is not set: alerts are disabled (anomalies are still "
                 "stored and will be sent once a webhook is configured)")
        _disabled_logged = True
