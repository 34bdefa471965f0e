"""End-to-end latency: from an anomaly's triggering event to (a) its row in anomaly_events and
(b) its arrival at the webhook, with the whole local stack running (Kafka, Postgres, Dagster
webserver + daemon with the Kafka sensor, dashboard, API, a local webhook receiver).

1. load: a steady --rate (default 20,000 events/s across topics, real time) for --duration
   seconds with every scenario injected at known instants, --cycles times (each time on
   other entities, at most 30 % of a cycle long: more samples); each threshold scenario's
   latency is measured from the timestamp of the event that made it fire (the anomaly's
   first firing; the stream is real time, so that is when it was sent). The consumer lag
   is sampled every second;
2. the sensor's own floor, from Dagster's storage: tick gaps and each ingest run's launch
   (queued -> started), i.e. what a no-op run costs before any work;
3. then, on the idle stack, one large transaction at a time: the whole path for one event
   (its run still re-reads the look-back of what the load left in the lake).
The hour-scale runs beside the load (the schedules' whole-hour re-detection and model
training; with --backfill-at, an operator's backfill of the hour in progress) are listed with
when they ran and what they said, next to the ingest runs' timings per 5 minutes.

All of it once per sensor loop interval (--sensor-intervals, default 5,2: Dagster's own 5 s
and the local stack's 2 s, `VIGIL_SENSOR_INTERVAL`), each on a fresh temporary state on free
ports, one after the other in one invocation. Prints p50/p95/p99/max per path and interval,
the runs and the maximum lag. Run: .venv/bin/python bench/latency.py [--rate 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import psycopg
from psycopg.rows import dict_row

from vigil.alerts_sink import AlertSink, received
from vigil.cliargs import DEFAULT_MIX
from vigil.generate import SCENARIOS, Label, StreamSpec, SyntheticStream
from vigil.pipeline_state import landing_lag
from vigil.platform import LocalPlatform
from vigil.produce import EventSender, produce_stream
from vigil.scenario_score import first_hit, percentile, score
from vigil.services.process import free_port
from vigil.settings import PROJECT_ROOT, TOPICS, Settings


def stack_env(state: Path) -> dict[str, str]:
    ports = ("VIGIL_KAFKA_PORT", "VIGIL_KAFKA_CONTROLLER_PORT", "POSTGRES_PORT",
             "VIGIL_S3_PORT", "VIGIL_DAGSTER_PORT", "VIGIL_DASHBOARD_PORT", "VIGIL_API_PORT")
    return {"VIGIL_STATE_DIR": str(state),
            "VIGIL_CACHE_DIR": str(PROJECT_ROOT / ".vigil" / "cache"),
            **{name: str(free_port()) for name in ports}}


def rows(settings: Settings, where: str = "true", params: tuple[Any, ...] = ()
         ) -> list[dict[str, Any]]:
    with psycopg.connect(settings.database_url) as conn, \
            conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, rule, detector, alert_level, alert_title, entity, timestamp, "
            f"created_at, notified_at FROM anomaly_events WHERE {where}", params).fetchall()


def arrivals(store: Path) -> dict[tuple[str, str], datetime]:
    """(rule, entity) -> first arrival at the receiver of an embed about it (titles change
    as an episode grows, so they are no key)."""
    first: dict[tuple[str, str], datetime] = {}
    for message in received(store):
        at = datetime.fromisoformat(message["received_at"])
        for embed in message["payload"].get("embeds", []):
            fields = {f["name"]: f["value"] for f in embed.get("fields", [])}
            first.setdefault((fields.get("rule", ""), fields.get("entity", "")), at)
    return first


def measure_floor(settings: Settings, store: Path, samples: int
                  ) -> tuple[list[float], list[float]]:
    to_row, to_hook = [], []
    sender = EventSender(settings.kafka_bootstrap)
    for i in range(samples):
        user = f"floor-{uuid.uuid4().hex[:8]}"
        sent = datetime.now(UTC)
        event = {"event_id": str(uuid.uuid4()), "timestamp": sent.isoformat(),
                 "transaction_id": f"t-{i}", "user_id": user, "amount": 50_000.0,
                 "currency": "EUR", "merchant_id": "m-1", "country": "DE",
                 "payment_method": "card", "status": "approved"}
        sender.send("transactions", [json.dumps(event).encode()], [user.encode()])
        sender.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = rows(settings, "entity = %s", (user,))
            if found:
                to_row.append((found[0]["created_at"] - sent).total_seconds())
                break
            time.sleep(0.1)
        while time.monotonic() < deadline:
            hit = [at for (_rule, entity), at in arrivals(store).items() if entity == user]
            if hit:
                to_hook.append((hit[0] - sent).total_seconds())
                break
            time.sleep(0.1)
        time.sleep(1.0 + i % 5)  # land at different points of the sensor's 5 s cycle
    return to_row, to_hook


SEGMENT = 300  # seconds: run work is also shown per 5 minutes of the load (growth)


def run_timings(settings: Settings) -> dict[str, Any]:
    """From Dagster's own storage, over the ingest runs: the gaps between their creations
    while there was always something to land (the sensor's tick interval), their launch
    (queued -> started: dequeue, process start, imports) and their work (started -> ended),
    per 5 minutes of the load also taken apart by the run's own account of its detection;
    and, for the slowest runs, where their time went (the longest wait between log lines)."""
    with psycopg.connect(settings.database_url) as conn:
        runs = conn.execute("SELECT create_timestamp, start_time, end_time, run_id FROM runs "
                            "WHERE pipeline_name = 'ingest' AND start_time IS NOT NULL "
                            "AND end_time IS NOT NULL ORDER BY create_timestamp").fetchall()
        told = {run_id: (at.replace(tzinfo=UTC).timestamp(), json.loads(event))
                for run_id, at, event in conn.execute(
                    "SELECT run_id, timestamp, event FROM event_logs WHERE run_id = ANY(%s) "
                    "AND event LIKE '%%detection: %%seconds: %%'",
                    ([r[3] for r in runs],)).fetchall()}
        slowest = sorted(runs, key=lambda r: r[1] - r[2])[:3]
        where = []
        for run in slowest:
            try:
                where.append(slow_run(conn, run))
            except (psycopg.Error, ValueError, TypeError) as exc:  # diagnostics only
                conn.rollback()
                where.append(f"work {run[2] - run[1]:.1f} s; its log unreadable: {exc}")
    created = [c.replace(tzinfo=UTC).timestamp() for c, _s, _e, _id in runs]
    launch = [start - c for c, (_c, start, _e, _id) in zip(created, runs, strict=True)]
    work = [end - start for _c, start, end, _id in runs]
    gaps = [b - a for a, b in pairwise(created)]
    by_segment: dict[int, list[dict[str, float]]] = {}  # runs created in each 5 minutes
    each = []  # every run, for --runs-log
    for at, (_c, start, end, run_id) in zip(created, runs, strict=True):
        parts = {"work": end - start}
        said = ""
        if run_id in told:
            logged_at, event = told[run_id]
            said = event.get("user_message", "")
            parts.update(phase_seconds(said))
            # Up to its detection: landing, and the op's start (not itemised in the line).
            parts["land"] = logged_at - start - sum(v for k, v in parts.items() if k != "work")
        by_segment.setdefault(int(at - created[0]) // SEGMENT, []).append(parts)
        each.append({"run_id": run_id, "created": datetime.fromtimestamp(at, UTC).isoformat(),
                     **{k: round(v, 3) for k, v in parts.items()}, "detection": said})
    return {"launch": sorted(launch), "work": sorted(work), "tick": sorted(gaps),
            "slowest": where, "by_segment": by_segment, "each": each}


def background_runs(settings: Settings, load_began: float) -> list[str]:
    """The hour-scale runs beside the load (the reprocessing schedule's and a backfill's
    `detect_hours`, `train_hour_models`): when each started, how long it took, what it said."""
    with psycopg.connect(settings.database_url) as conn:
        runs = conn.execute(
            "SELECT r.run_id, r.pipeline_name, r.start_time, r.end_time, r.status, "
            "t.value FROM runs r LEFT JOIN run_tags t ON t.run_id = r.run_id "
            "AND t.key = 'dagster/partition' WHERE r.pipeline_name <> 'ingest' "
            "AND r.start_time IS NOT NULL ORDER BY r.start_time").fetchall()
        said = {run_id: json.loads(event).get("user_message", "")
                for run_id, event in conn.execute(
                    "SELECT run_id, event FROM event_logs WHERE run_id = ANY(%s) AND "
                    "(event LIKE '%%anomalies (%%' OR event LIKE '%%models ready%%')",
                    ([r[0] for r in runs],)).fetchall()}
    return [f"{job} {partition or ''} started at minute {(start - load_began) / 60:.1f}, "
            f"{(end or time.time()) - start:.0f} s, {status.lower()}"
            + (f": {said[run_id][:300]}" if run_id in said else "")
            for run_id, job, start, end, status, partition in runs]


def backfill_hour_in_progress(settings: Settings, after_s: float) -> threading.Timer:
    """After `after_s` seconds, launch `detect_hours` for the hour in progress, as an
    operator's backfill from the UI would: it reads every event the hour holds so far while
    the ingest runs land more into it."""
    def launch() -> None:
        from dagster_graphql import DagsterGraphQLClient

        key = datetime.now(UTC).strftime("%Y-%m-%d-%H:00")
        client = DagsterGraphQLClient("127.0.0.1", port_number=settings.dagster_port)
        run_id = client.submit_job_execution("detect_hours", tags={"dagster/partition": key})
        print(f"backfill: detect_hours {key} launched (run {run_id})", flush=True)

    timer = threading.Timer(after_s, launch)
    timer.daemon = True
    timer.start()
    return timer


def phase_seconds(message: str) -> dict[str, float]:
    """The "seconds: models 0.01, lock_wait 2.10, ..." an ingest run's detection line ends with."""
    found = re.search(r"seconds: (.*)$", message)
    if found is None:
        return {}
    pairs = (part.rsplit(" ", 1) for part in found.group(1).split(", "))
    return {name: float(value) for name, value in pairs}


def slow_run(conn: psycopg.Connection[Any], run: tuple[Any, ...]) -> str:
    """One run's work and its longest wait between consecutive log lines, with the line
    that ended it (what the run was doing meanwhile)."""
    created, start, end, run_id = run
    lines = conn.execute("SELECT timestamp, event FROM event_logs WHERE run_id = %s "
                         "ORDER BY id", (run_id,)).fetchall()
    moments = [(at.replace(tzinfo=UTC).timestamp(), json.loads(event).get("user_message", ""))
               for at, event in lines]
    waits = [(b[0] - a[0], b[1]) for a, b in pairwise(moments)]
    wait, message = max(waits, default=(0.0, ""))
    errors = [error_message(json.loads(event)) for _at, event in lines]
    failed = "; failed: " + " | ".join(e[:160] for e in errors if e) if any(errors) else ""
    return (f"work {end - start:.1f} s (created {created:%H:%M:%S}); longest wait "
            f"{wait:.1f} s, until: {message[:110]}{failed}")


def error_message(entry: dict[str, Any]) -> str:
    """The error a step failure or retry carried (its cause first), if the line is one."""
    data = ((entry.get("dagster_event") or {}).get("event_specific_data") or {})
    error = data.get("error") if isinstance(data, dict) else None
    messages = []
    while isinstance(error, dict):  # a retry wraps the step's own error as its cause
        messages.append(str(error.get("message", "")).strip())
        error = error.get("cause")
    return " <- ".join(reversed(messages))


class LagProbe(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.done.is_set():
            try:
                lag = sum(r.lag for r in landing_lag(self.settings.kafka_bootstrap,
                                                     self.settings.deployment, TOPICS))
                self.samples.append((time.monotonic() - started, lag))
            except Exception:  # a busy broker may miss a probe; the next one counts
                pass
            self.done.wait(1.0)


class SessionProbe(threading.Thread):
    """Postgres client sessions open at once, by application_name (a run's own name ends in
    its id: counted as `vigil run`), once a second on one kept connection (its own counted)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.url = settings.database_url
        self.peak: dict[str, int] = {}
        self.peak_total = 0
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.is_set():
                found = conn.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' GROUP BY 1").fetchall()
                now: dict[str, int] = {}
                for name, count in found:
                    key = "vigil run" if name.startswith("vigil run ") else name or "(unnamed)"
                    now[key] = now.get(key, 0) + int(count)
                self.peak_total = max(self.peak_total, sum(now.values()))
                for key, count in now.items():
                    self.peak[key] = max(self.peak.get(key, 0), count)
                self.done.wait(1.0)

    def text(self) -> str:
        parts = ", ".join(f"{name} {count}" for name, count in
                          sorted(self.peak.items(), key=lambda kv: -kv[1]))
        return f"sessions open at once: peak {self.peak_total} (peak by name: {parts})"


REST = "ingest runs and the rest"


def cpu_by_component(state: Path) -> dict[str, float]:
    """CPU seconds so far of this process (the producer, probes), every process below it and
    every process naming the stack's `state` directory (a daemonised Postgres) with those
    below it, by component (a Python module run with -m, else the program: java is Kafka).
    A finished process counts once its parent has reaped it; REST: the machine's busy CPU
    seconds so far (all processes)."""
    me = psutil.Process()
    busy = psutil.cpu_times()
    spent: dict[str, float] = {REST: sum(busy) - busy.idle - getattr(busy, "iowait", 0.0)}
    roots = [me] + [p for p in psutil.process_iter(["cmdline"])
                    if str(state) in " ".join(p.info["cmdline"] or ())]
    family = {p.pid: p for root in roots for p in [root, *_children(root)]}
    for process in family.values():
        try:
            times, argv, program = process.cpu_times(), process.cmdline(), process.name()
        except psutil.Error:  # ended meanwhile
            continue
        name = "bench (producer, probes)" if process.pid == me.pid else \
            argv[argv.index("-m") + 1] if "-m" in argv[:-1] else program
        spent[name] = spent.get(name, 0.0) + times.user + times.system + \
            times.children_user + times.children_system
    return spent


def busiest_tables(settings: Settings) -> list[str]:
    """Postgres's sessions opened (each a backend process to start) and its busiest tables by
    rows read in sequential scans and rows written (Dagster's storage shares the database):
    where its CPU may go."""
    with psycopg.connect(settings.database_url) as conn:
        found = conn.execute(
            "SELECT relname, seq_scan, seq_tup_read, idx_scan, n_tup_ins + n_tup_upd + n_tup_del "
            "FROM pg_stat_user_tables ORDER BY seq_tup_read + 10 * (n_tup_ins + n_tup_upd "
            "+ n_tup_del) DESC LIMIT 6").fetchall()
        sessions = conn.execute("SELECT sum(sessions) FROM pg_stat_database").fetchone()
    opened = int(sessions[0] or 0) if sessions else 0
    return [f"{opened:,} sessions opened since it started"] + [
        f"{name} (seq scans {scans:,} reading {read:,} rows, index scans {index or 0:,}, "
            f"rows written {written:,})" for name, scans, read, index, written in found]


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def measure_load(settings: Settings, store: Path, rate: float, duration: int, cycles: int
                 ) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    spec = StreamSpec(seed=11, start=start, scenarios=tuple(SCENARIOS),
                      horizon=duration / cycles,
                      rates={t: rate * share for t, share in DEFAULT_MIX.items()})
    labels: list[Label] = []
    probe = LagProbe(settings)
    probe.start()
    sessions = SessionProbe(settings)
    sessions.start()
    sender = EventSender(settings.kafka_bootstrap)
    load_began = time.time()
    cpu_before, began = cpu_by_component(settings.state_dir), time.monotonic()
    report = produce_stream(sender, SyntheticStream(spec), list(TOPICS), duration, 1.0,
                            labels.extend)
    produce_s = time.monotonic() - began
    cpu = {name: spent - cpu_before.get(name, 0.0)
           for name, spent in cpu_by_component(settings.state_dir).items()}
    # The warm launcher's forks are reaped by the kernel (SIGCHLD ignored), so no parent
    # counts them: the ingest runs are the machine's busy time less the processes counted.
    cpu[REST] = cpu.pop(REST) - sum(cpu.values())
    produced = sum(report.delivered.values())
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if probe.samples and probe.samples[-1][1] == 0 and \
                probe.samples[-1][0] > produce_s:
            break
        time.sleep(1.0)
    caught_up_s = time.monotonic() - began - produce_s
    time.sleep(8.0)  # the last run's detection and delivery
    probe.done.set()
    sessions.done.set()
    found = rows(settings)
    tables = busiest_tables(settings)
    hooks = arrivals(store)
    scores = score(labels, found)
    to_hook = []
    for label in labels:
        first = first_hit(label, found)
        key = (first["rule"], first["entity"]) if first is not None else None
        if first is not None and key in hooks:
            to_hook.append((hooks[key] - first["timestamp"]).total_seconds())
    return {"produced": produced, "produce_s": produce_s, "caught_up_s": caught_up_s,
            "cpu": cpu, "tables": tables, "sessions": sessions.text(),
            "scores": scores, "to_row": scores.latencies, "to_hook": sorted(to_hook),
            "background": background_runs(settings, load_began),
            "max_lag": max((lag for _t, lag in probe.samples), default=0),
            "lag_at_end": next((lag for t, lag in reversed(probe.samples) if t <= produce_s),
                               0)}


def line(name: str, values: list[float]) -> str:
    cells = [percentile(values, q) for q in (50, 95, 99)] + [max(values, default=None)]
    shown = [f"{v:7.1f}" if v is not None else f"{'-':>7}" for v in cells]
    return f"| {name:<51} | {len(values):>3} | " + " | ".join(shown) + " |"


def measure(args: argparse.Namespace, interval: int) -> dict[str, Any]:
    """One fresh stack with the sensor loop at `interval` seconds: load, then the idle floor."""
    with tempfile.TemporaryDirectory(prefix="vigil-latency-") as state_dir:
        state = Path(state_dir)
        env = {**stack_env(state), "VIGIL_SENSOR_INTERVAL": str(interval)}
        settings = Settings.from_env({**os.environ, **env})
        sink = AlertSink(state / "alerts.jsonl", report=lambda _line: None).start()
        platform = LocalPlatform(settings, env={**env, "DISCORD_WEBHOOK_URL": sink.url})
        try:
            print(f"sensor every {interval} s: starting the stack on free ports ...", flush=True)
            platform.start()
            time.sleep(30)  # the daemon's first ticks are ~10 s apart; let it settle
            print(f"load: {args.rate:,.0f} events/s for {args.duration} s ...", flush=True)
            if args.backfill_at is not None:
                backfill_hour_in_progress(settings, args.backfill_at * 60)
            load = measure_load(settings, sink.store, args.rate, args.duration,
                                args.cycles)
            load["timings"] = run_timings(settings)
            print(f"floor: {args.floor_samples} single large transactions ...", flush=True)
            load["floor_row"], load["floor_hook"] = measure_floor(settings, sink.store,
                                                                  args.floor_samples)
        finally:
            platform.stop()
            sink.stop()
    return load


def report(rate: float, interval: int, load: dict[str, Any]) -> None:
    timings = load["timings"]
    tick = percentile(timings["tick"], 50) or float(interval)
    noop = [tick / 2 + x for x in timings["launch"]]  # mean wait for the tick + launch
    rows = [("gap between ingest runs under load (tick)", timings["tick"]),
            ("run launch: queued -> started (no work)", timings["launch"]),
            ("sensor floor: half a tick + launch (no-op run)", noop),
            ("run work under load: started -> ended", timings["work"]),
            ("floor: one event, idle stack -> row", load["floor_row"]),
            ("floor: one event, idle stack -> webhook", load["floor_hook"]),
            (f"{rate:,.0f} ev/s: triggering event -> row", load["to_row"]),
            (f"{rate:,.0f} ev/s: triggering event -> webhook", load["to_hook"])]
    for name, values in rows:
        print(line(f"{interval:>2} s | {name}", values))
    for slow in timings["slowest"]:
        print(f"   slowest ingest run ({interval} s tick): {slow}")
    for run in load["background"]:
        print(f"   beside the load ({interval} s tick): {run}")
    print(f"   ingest runs by when they were created ({interval} s tick), p50/p95 seconds; "
          "land = run start to detection (landing, op start)")
    print("   | minutes | runs |      work |      land |    models | lock wait |    detect |"
          "    alerts |")
    for k, runs in sorted(timings["by_segment"].items()):
        cells = []
        for part in ("work", "land", "models", "lock_wait", "detect", "alerts"):
            values = [r[part] for r in runs if part in r]
            cells.append(f"{percentile(values, 50):4.1f}/{percentile(values, 95):4.1f}"
                         if values else "        -")
        print(f"   | {k * SEGMENT // 60:>2}-{(k + 1) * SEGMENT // 60:<4} | {len(runs):>4} | "
              + " | ".join(f"{c:>9}" for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20_000.0,
                        help="events/s across topics")
    parser.add_argument("--duration", type=int, default=180, help="seconds of load")
    parser.add_argument("--cycles", type=int, default=1,
                        help="times every scenario is injected during the load")
    parser.add_argument("--floor-samples", type=int, default=10)
    parser.add_argument("--backfill-at", type=float, default=None, metavar="MINUTES",
                        help="launch a detect_hours run of the hour in progress this many "
                             "minutes into the load, as an operator's backfill would")
    parser.add_argument("--sensor-intervals", default="5,2",
                        help="sensor loop intervals (s) to compare, each on a fresh stack")
    parser.add_argument("--runs-log", type=Path, default=None, metavar="FILE",
                        help="also write every ingest run (created, phase seconds, its "
                             "detection line) as JSON lines, to study a slow stretch after")
    args = parser.parse_args()
    intervals = [int(x) for x in args.sensor_intervals.split(",")]
    loads = {interval: measure(args, interval) for interval in intervals}
    if args.runs_log is not None:
        with args.runs_log.open("w") as out:
            for interval, load in loads.items():
                for run in load["timings"]["each"]:
                    out.write(json.dumps({"sensor_interval": interval, **run}) + "\n")
        print(f"every ingest run: {args.runs_log}", flush=True)
    print(f"\nend-to-end latency (seconds), fresh local stack per sensor interval, "
          f"{os.cpu_count()} cores")
    print(f"| {'tick | path':<51} | {'n':>3} | {'p50':>7} | {'p95':>7} | {'p99':>7} | "
          f"{'max':>7} |")
    print(f"|{'-' * 53}|{'-' * 5}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for interval, load in loads.items():
        report(args.rate, interval, load)
    print()
    for interval, load in loads.items():
        achieved = load["produced"] / load["produce_s"]
        runs = len(load["timings"]["work"])
        print(f"sensor every {interval} s: produced {load['produced']:,} events in "
              f"{load['produce_s']:.0f} s ({achieved:,.0f} events/s achieved) in {runs} ingest "
              f"runs; max consumer lag {load['max_lag']:,} events, {load['lag_at_end']:,} when "
              f"producing ended, caught up {load['caught_up_s']:.0f} s later")
        cpu = sorted(load["cpu"].items(), key=lambda item: -item[1])
        print("  CPU while producing, share of the machine's cores: " + ", ".join(
            f"{name} {spent / (load['produce_s'] * (os.cpu_count() or 1)):.0%}"
            for name, spent in cpu if spent >= 0.5))
        print("  Postgres's busiest tables: " + "; ".join(load["tables"]))
        print("  Postgres " + load["sessions"])
        missed = load["scores"].missed()
        measured = [s.scenario for s in load["scores"].scenarios if s.rule and s.detected]
        print(f"  threshold scenarios measured: {', '.join(measured) or 'none'}"
              + (f"; not detected at this horizon: {', '.join(missed)}" if missed else ""))


if __name__ == "__main__":
    main()
