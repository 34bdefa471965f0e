"""`vigil demo` (`make demo`): the whole platform on this machine, a few minutes of traffic with
every scenario injected, and a summary of what vigil made of it.

It starts what `vigil run` starts plus a local Discord-compatible webhook receiver (unless
DISCORD_WEBHOOK_URL is set), produces in real time so detection sees a live stream, waits
until the lake has caught up and detection has settled, then prints: events produced /
landed / quarantined per topic, anomalies per rule, scenario recall and rule precision
against the injected labels, event-to-anomaly latency, alerts received, and the URLs. It
checks that the Dagster UI and the dashboard answered while it ran. Ctrl-C stops everything
it started; --keep-running leaves the stack up until then.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from vigil.alerts_sink import AlertSink, received
from vigil.cliargs import DEFAULT_MIX
from vigil.generate import SCENARIOS, Label, StreamSpec, SyntheticStream
from vigil.lake import Lake
from vigil.pipeline_state import landing_lag
from vigil.platform import LocalPlatform, answers, parts, stop_requests
from vigil.produce import EventSender, produce_stream
from vigil.scenario_score import ScenarioScore, percentile, score
from vigil.services.process import ProcessRegistry, ServiceError
from vigil.settings import TOPICS, Settings

CATCH_UP_TIMEOUT = 180.0  # seconds after producing ends for the lake to hold everything
SETTLE = 6.0  # seconds without a new or changed anomaly: detection has finished


@dataclass
class DemoRun:
    produced: dict[str, int] = field(default_factory=dict)
    landed: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    alerts: int = 0
    event_start: datetime | None = None  # the stream's first event time ...
    sent_start: datetime | None = None  # ... and when it was sent
    speed: float = 1.0
    answered: dict[str, bool] = field(default_factory=dict)  # part -> answered every check
    caught_up: bool = False

    def sent_at(self, moment: datetime) -> datetime:
        """When the event with this timestamp was sent (the stream is paced at `speed`)."""
        if self.event_start is None or self.sent_start is None:
            return moment
        return self.sent_start + (moment - self.event_start) / self.speed

    @property
    def scores(self) -> ScenarioScore:
        return score(self.labels, self.anomalies, self.sent_at)

    @property
    def ok(self) -> bool:
        return self.caught_up and not self.scores.missed() and all(self.answered.values())


def demo_settings(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """The demo runs on a fresh state of its own (`<state>/demo`: Kafka, Postgres, lake),
    so it shows exactly its own traffic; the broker jar cache is shared."""
    state = settings.state_dir / "demo"
    if state.exists():
        registry = ProcessRegistry(state)
        running = [p.stem for p in registry.run_dir.glob("*.json") if registry.live(p.stem)]
        if running:
            raise ServiceError(f"a demo is still running from {state}: stop it first "
                               f"(VIGIL_STATE_DIR={state} vigil services down)")
        shutil.rmtree(state)
    env = {"VIGIL_STATE_DIR": str(state), "VIGIL_CACHE_DIR": str(settings.cache_dir)}
    return Settings.from_env({**os.environ, **env}), env


def run_demo(settings: Settings, duration: int, rate: float, span: int = 1800,
             seed: int = 7, keep_running: bool = False) -> int:
    """Produce `span` seconds of event time in `duration` wall seconds (scenarios need
    minutes of event time: a sustained CPU rule waits 3 min), ending about now."""
    try:
        settings, env = demo_settings(settings)
    except ServiceError as exc:
        print(f"vigil: {exc}")
        return 1
    sink = None
    if not settings.discord_webhook_url:
        sink = AlertSink(settings.state_dir / "alerts.jsonl",
                         report=lambda line: print(f"  {line}", flush=True)).start()
        env = {**env, "DISCORD_WEBHOOK_URL": sink.url}
    platform = LocalPlatform(settings, env=env)  # children get the demo's state dir too
    run = DemoRun()
    with stop_requests(platform.stopping):
        try:
            platform.start()
            for banner in platform.banners():
                print(banner, flush=True)
            if sink is not None:
                print(f"Alerts:     {sink.url} (local receiver; stored in {sink.store})")
            _check_uis(settings, run)
            _produce(settings, duration, span, rate, seed, run, platform.stopping.is_set)
            _check_uis(settings, run)
            run.caught_up = _wait_caught_up(settings, run, platform.stopping.is_set)
            run.anomalies = _settled_anomalies(settings, platform.stopping.is_set)
            run.alerts = len(received(sink.store)) if sink is not None else 0
            _check_uis(settings, run)
            if platform.stopping.is_set():
                print("stopped before the demo finished")
                return 130
            print(summary(run, settings, local_alerts=sink is not None), flush=True)
            if keep_running:
                print("(--keep-running: Ctrl-C stops everything this command started)")
                while not platform.stopping.is_set() and platform.exited() is None:
                    platform.stopping.wait(0.5)
            return 0 if run.ok else 1
        except ServiceError as exc:
            print(f"vigil: {exc}")
            return 1
        finally:
            platform.stop()
            if sink is not None:
                sink.stop()


def _check_uis(settings: Settings, run: DemoRun) -> None:
    for part in parts(settings):
        if part.name in ("dagster", "dashboard"):
            ok = answers(part.ready_url)
            run.answered[part.name] = run.answered.get(part.name, True) and ok


def _produce(settings: Settings, duration: int, span: int, rate: float, seed: int,
             run: DemoRun, stopping: Any) -> None:
    span = max(span, duration)
    run.speed = span / duration
    run.event_start = datetime.now(UTC).replace(microsecond=0) - timedelta(
        seconds=span - duration)
    spec = StreamSpec(seed=seed, start=run.event_start, scenarios=tuple(SCENARIOS),
                      horizon=float(span),
                      rates={t: rate * share for t, share in DEFAULT_MIX.items()})
    print(f"producing {span / 60:g} min of traffic ({rate:g} events/s of event time, every "
          f"scenario) in {duration} s ({run.speed:g}x real time) ...", flush=True)
    run.sent_start = datetime.now(UTC)
    report = produce_stream(EventSender(settings.kafka_bootstrap), SyntheticStream(spec),
                            list(TOPICS), span, run.speed, run.labels.extend,
                            should_stop=stopping)
    run.produced = {t: int(report.delivered.get(t, 0)) for t in TOPICS}


def _wait_caught_up(settings: Settings, run: DemoRun, stopping: Any) -> bool:
    """Until every produced event is landed or quarantined and the landing lag is 0."""
    lake = Lake.open(settings)
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    print("waiting for the lake to catch up ...", flush=True)
    while time.monotonic() < deadline and not stopping():
        # The lag comes from Kafka in milliseconds; the lake is counted only once it is 0.
        lag = landing_lag(settings.kafka_bootstrap, settings.deployment, TOPICS)
        if sum(row.lag for row in lag) == 0:
            run.landed = {t: lake.read_all("raw", t).num_rows for t in TOPICS}
            run.quarantined = {t: lake.read_all("quarantine", t).num_rows for t in TOPICS}
            if all(run.landed[t] + run.quarantined[t] >= run.produced.get(t, 0)
                   for t in TOPICS):
                return True
        time.sleep(1.0)
    return False


def _settled_anomalies(settings: Settings, stopping: Any) -> list[dict[str, Any]]:
    """anomaly_events once nothing has changed for SETTLE seconds (the last run's
    detection and alert delivery finish after its landing)."""
    previous: tuple[Any, ...] = ()
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 120
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not stopping():
        with psycopg.connect(settings.database_url) as conn, \
                conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("SELECT id, rule, detector, alert_level, entity, timestamp, "
                               "created_at, updated_at, notified_at FROM anomaly_events "
                               "ORDER BY id").fetchall()
        state = tuple((r["id"], r["updated_at"], r["notified_at"]) for r in rows)
        if state != previous:
            previous, quiet_since = state, time.monotonic()
        elif time.monotonic() - quiet_since >= SETTLE:
            break
        time.sleep(1.0)
    return rows


def summary(run: DemoRun, settings: Settings, local_alerts: bool) -> str:
    scores = run.scores
    lines = ["", "vigil demo — summary", "",
             f"{'topic':<14} {'produced':>10} {'landed':>10} {'quarantined':>12}"]
    for topic in TOPICS:
        lines.append(f"{topic:<14} {run.produced.get(topic, 0):>10,} "
                     f"{run.landed.get(topic, 0):>10,} {run.quarantined.get(topic, 0):>12,}")
    lines += ["", f"{'anomalies per rule':<32} {'count':>6}  {'levels'}"]
    by_rule = Counter(a["rule"] for a in run.anomalies)
    for rule, count in sorted(by_rule.items()):
        levels = Counter(a["alert_level"] for a in run.anomalies if a["rule"] == rule)
        lines.append(f"{rule:<32} {count:>6}  "
                     + ", ".join(f"{n} {lv}" for lv, n in sorted(levels.items())))
    lines += ["", f"{'scenario':<20} {'rule':<20} {'injected':>8} {'found':>6} {'recall':>7} "
                  f"{'latency':>8}"]
    for s in scores.scenarios:
        latency = percentile(s.latencies, 50)
        lines.append(f"{s.scenario:<20} {s.rule or '(no rule: subtle)':<20} {s.injected:>8} "
                     f"{s.detected:>6} {s.recall:>7.0%} "
                     + (f"{latency:>7.1f}s" if latency is not None else f"{'-':>8}"))
    p50, p95 = percentile(scores.latencies, 50), percentile(scores.latencies, 95)
    lines += ["",
              f"rule precision: {scores.explained} of {scores.rule_anomalies} rule anomalies "
              f"are on an injected scenario ({scores.precision:.0%})",
              "event-to-anomaly latency (triggering event sent -> row): "
              + (f"p50 {p50:.1f} s, p95 {p95:.1f} s" if p50 is not None and p95 is not None
                 else "no anomaly"),
              f"alerts received by the local webhook: {run.alerts}" if local_alerts
              else "alerts posted to DISCORD_WEBHOOK_URL",
              "",
              f"Dagster UI: http://127.0.0.1:{settings.dagster_port}   answered every check: "
              f"{'yes' if run.answered.get('dagster') else 'NO'}",
              f"Dashboard:  http://127.0.0.1:{settings.dashboard_port}   answered every check: "
              f"{'yes' if run.answered.get('dashboard') else 'NO'}", ""]
    if not run.caught_up:
        lines.append("NOT OK: the lake did not catch up with what was produced in time")
    if scores.missed():
        lines.append(f"NOT OK: threshold scenarios missed: {', '.join(scores.missed())}")
    if not all(run.answered.values()):
        lines.append("NOT OK: the Dagster UI or the dashboard did not answer")
    if run.ok:
        lines.append("OK: every threshold scenario was detected")
    return "\n".join(lines)
