"""Each baseline rule on hand-built frames: at the threshold, one below, window edges,
several groups, gaps in a sustained condition, a spike against a quiet baseline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from vigil.detect.engine import (
    ANOMALY_COLUMNS,
    detect,
    lookback_by_topic,
    lookback_seconds,
    to_frame,
)
from vigil.detect.rules import Rule, RuleError, load_rules

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
HOUR = (T0, T0 + timedelta(hours=1))
RULES = {r.name: r for r in load_rules()}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def logs(rows: list[dict[str, Any]]) -> pd.DataFrame:
    base = {"service": "payments-api", "host": "h1", "level": "INFO", "message": "ok",
            "user_id": None}
    return pd.DataFrame([{**base, **row} for row in rows])


def run(rule: str, frame: pd.DataFrame, span: tuple[datetime, datetime] = HOUR
        ) -> pd.DataFrame:
    topic = RULES[rule].topic
    return detect([RULES[rule]], {topic: frame}, *span)


def errors(n: int, start: float, every: float, service: str = "payments-api"
           ) -> list[dict[str, Any]]:
    return [{"timestamp": at(start + i * every), "level": "ERROR", "service": service}
            for i in range(n)]


def test_error_spike_fires_at_twenty_and_not_at_nineteen() -> None:
    found = run("error_spike", logs(errors(20, 60, 9)))  # 20 errors within 171 s
    assert len(found) == 1
    row = found.iloc[0]
    assert (row.rule, row.entity, row.level, row.peak) == ("error_spike", "payments-api",
                                                            "critical", 20.0)
    assert row.title == "20 ERROR logs in 3 min on payments-api (threshold 20)"
    assert row.first_seen == at(60 + 19 * 9)
    assert run("error_spike", logs(errors(19, 60, 9))).empty


def test_error_spike_window_boundary_and_other_levels() -> None:
    # 20 errors, but the 20th lands 180 s after the first: the window (t - 3 min, t] holds 19.
    spread = errors(19, 0, 1) + errors(1, 180, 0)
    assert run("error_spike", logs(spread)).empty
    # CRITICAL counts, WARNING does not.
    mixed = [*errors(19, 0, 1), {"timestamp": at(30), "level": "CRITICAL"},
             {"timestamp": at(31), "level": "WARNING"}]
    assert len(run("error_spike", logs(mixed))) == 1


def test_error_spike_several_services_at_once() -> None:
    frame = logs(errors(25, 0, 2, "a") + errors(10, 0, 2, "b") + errors(21, 600, 1, "c"))
    found = run("error_spike", frame)
    assert sorted(found.entity) == ["a", "c"]
    assert found.set_index("entity").peak.to_dict() == {"a": 25.0, "c": 21.0}


def test_failed_pattern_is_case_insensitive_and_grouped_per_user() -> None:
    frame = logs([
        {"timestamp": at(1), "message": "Login FAILED for u1", "user_id": "u1"},
        {"timestamp": at(2), "message": "login failed for u1", "user_id": "u1"},
        {"timestamp": at(3), "message": "payment failed", "user_id": "u2"},
        {"timestamp": at(4), "message": "all good", "user_id": "u3"},
    ])
    found = run("failed_message", frame)
    assert sorted(found.entity) == ["payments-api / u1", "payments-api / u2"]
    assert found.set_index("entity").points.to_dict()["payments-api / u1"] == 2


def test_user_log_spike_against_a_quiet_baseline_not_a_busy_one() -> None:
    rows: list[dict[str, Any]] = []
    for minute in range(0, 60, 10):  # quiet user: one event every 10 minutes for an hour
        rows.append({"timestamp": at(minute * 60), "user_id": "quiet"})
    for second in range(0, 3600, 10):  # busy user: 30 events per 5 minutes all along
        rows.append({"timestamp": at(second), "user_id": "busy"})
    rows += [{"timestamp": at(3600 + i * 5), "user_id": "quiet"} for i in range(40)]
    rows += [{"timestamp": at(3600 + i * 10), "user_id": "busy"} for i in range(30)]
    span = (at(3600), at(7200))
    found = run("user_log_spike", logs(rows), span)
    assert list(found.entity) == ["quiet"]
    assert found.iloc[0].peak >= 30


def metrics(rows: list[dict[str, Any]]) -> pd.DataFrame:
    base = {"service": "s", "host": "h1", "cpu_percent": 40.0, "latency_ms": 100.0}
    return pd.DataFrame([{**base, **row} for row in rows])


def samples(start: float, end: float, every: float, **values: Any) -> list[dict[str, Any]]:
    out, t = [], start
    while t <= end:
        out.append({"timestamp": at(t), **values})
        t += every
    return out


def test_cpu_sustained_needs_the_full_duration() -> None:
    found = run("cpu_sustained", metrics(samples(0, 180, 30, cpu_percent=85.0)))
    assert len(found) == 1 and found.iloc[0].peak == 180.0
    assert found.iloc[0].title == "CPU >= 80 % for 3 min on h1"
    assert run("cpu_sustained", metrics(samples(0, 150, 30, cpu_percent=85.0))).empty


def test_a_false_sample_or_a_long_gap_inside_a_sustained_condition_restarts_it() -> None:
    dip = [*samples(0, 120, 30, cpu_percent=90.0), {"timestamp": at(150), "cpu_percent": 50.0},
           *samples(180, 300, 30, cpu_percent=90.0)]
    assert run("cpu_sustained", metrics(dip)).empty
    gap = samples(0, 90, 30, cpu_percent=90.0) + samples(300, 420, 30, cpu_percent=90.0)
    assert run("cpu_sustained", metrics(gap)).empty  # 210 s without a sample > max_gap 2 min
    later = samples(0, 90, 30, cpu_percent=90.0) + samples(300, 500, 30, cpu_percent=90.0)
    assert len(run("cpu_sustained", metrics(later))) == 1  # 300..480 s is a full run


def test_latency_threshold_and_the_combined_rule() -> None:
    frame = metrics([{"timestamp": at(10), "latency_ms": 1000.0},
                     {"timestamp": at(20), "latency_ms": 1000.5},
                     {"timestamp": at(30), "latency_ms": 1500.0, "cpu_percent": 85.0,
                      "host": "h2"}])
    latency = run("latency_high", frame)
    assert sorted(latency.entity) == ["h1", "h2"]
    combined = run("cpu_and_latency", frame)
    assert list(combined.entity) == ["h2"] and combined.iloc[0].level == "critical"
    assert combined.iloc[0].title == "CPU >= 80 % and latency 1500 ms together on h2"


def transactions(rows: list[dict[str, Any]]) -> pd.DataFrame:
    base = {"user_id": "u1", "amount": 20.0}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_large_amount_is_strictly_above_ten_thousand() -> None:
    frame = transactions([{"timestamp": at(1), "amount": 10000.0},
                          {"timestamp": at(2), "amount": 10000.01, "user_id": "u2"}])
    found = run("large_amount", frame)
    assert list(found.entity) == ["u2"]
    assert found.iloc[0].title == "transaction of 10,000.01 by u2 (threshold 10,000)"


def test_rapid_transactions_more_than_ten_in_five_minutes() -> None:
    eleven = [{"timestamp": at(i * 25)} for i in range(11)]  # 11 within 250 s
    assert len(run("rapid_transactions", transactions(eleven))) == 1
    assert run("rapid_transactions", transactions(eleven[:10])).empty
    slow = [{"timestamp": at(i * 31)} for i in range(11)]  # 11 over 310 s: never 11 in 5 min
    assert run("rapid_transactions", transactions(slow)).empty


def test_a_persisting_condition_is_one_anomaly_per_realert_interval() -> None:
    # latency above 1000 ms every 10 s for 25 minutes: realert 10 min -> 3 anomalies, not 150.
    frame = metrics(samples(0, 1490, 10, latency_ms=1500.0))
    found = run("latency_high", frame)
    assert len(found) == 3
    assert found.points.sum() == 150
    assert list(found.window_start) == [at(0), at(600), at(1200)]


def test_micro_batches_give_the_same_anomalies_as_one_run() -> None:
    rows = (errors(30, 100, 3, "a") + errors(25, 1900, 5, "b")
            + [{"timestamp": at(s), "level": "INFO"} for s in range(0, 3600, 7)])
    frame = logs(rows)
    whole = run("error_spike", frame)
    parts = []
    lookback = timedelta(seconds=lookback_seconds([RULES["error_spike"]]))
    for k in range(0, 3600, 300):
        start, end = at(k), at(k + 300)
        stamps = pd.to_datetime(frame.timestamp, utc=True)
        visible = frame[(stamps >= start - lookback) & (stamps < end)]
        parts.append(run("error_spike", visible, (start, end)))
    merged = (pd.concat(parts).groupby("id")
              .agg(first_seen=("first_seen", "min"), last_seen=("last_seen", "max"),
                   peak=("peak", "max"), points=("points", "sum")).reset_index())
    expected = whole[["id", "first_seen", "last_seen", "peak", "points"]]
    def records(frame: pd.DataFrame) -> list[dict[Any, Any]]:
        return frame.sort_values("id").astype({"points": int, "peak": float}).to_dict("records")

    assert records(merged) == records(expected)
    assert len(whole) == 2


def test_detecting_twice_is_identical_and_ids_depend_on_rule_entity_window() -> None:
    frame = logs(errors(20, 60, 9))
    first, second = run("error_spike", frame), run("error_spike", frame)
    assert first.equals(second)
    assert list(first.columns) == ANOMALY_COLUMNS
    other = run("error_spike", logs(errors(20, 660, 9)))  # next realert bucket
    assert other.iloc[0].id != first.iloc[0].id


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("body", "message"), [
    ("rules: [{name: r, topic: audit, type: threshold, level: info}]",
     "topic 'audit' is not one of"),
    ("rules: [{name: r, topic: logs, type: magic, level: info}]", "type 'magic' is not one of"),
    ("rules: [{name: r, topic: logs, type: threshold, level: loud}]", "level 'loud'"),
    ("rules: [{name: r, topic: logs, type: window_count, level: info, group_by: [nope]}]",
     "group_by column 'nope' is not a logs field"),
    ("rules: [{name: r, topic: logs, type: window_count, level: info, group_by: [service],"
     " title: t, window: soon, threshold: 3}]", "window='soon' is not a duration"),
    ("rules: [{name: r, topic: metrics, type: threshold, level: info, group_by: [host],"
     " title: t, condition: {column: cpu_percent, op: '=>', value: 1}}]", "op '=>'"),
    ("rules: [{name: r, topic: metrics, type: threshold, level: info, group_by: [host],"
     " title: t, realert: 7m, condition: {column: cpu_percent, op: '>', value: 1}}]",
     "must divide an hour"),
    ("rules: [{name: r, topic: logs, type: threshold, level: info, group_by: [host],"
     " title: t, condition: {column: message, matches: '('}}]", "pattern is not a regex"),
    ("rules: {}", "expected a top-level 'rules:' list"),
])
def test_rule_mistakes_name_the_rule_and_field(tmp_path: Path, body: str,
                                               message: str) -> None:
    with pytest.raises(RuleError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_rules(_write(tmp_path, body))


def test_shipped_rules_load_and_reach_back_far_enough() -> None:
    rules: list[Rule] = load_rules()
    assert {r.name for r in rules} >= {"error_spike", "failed_message", "user_log_spike",
                                       "cpu_sustained", "latency_high", "cpu_and_latency",
                                       "large_amount", "rapid_transactions"}
    reach = lookback_by_topic(rules)
    assert reach["logs"] == 3900.0  # user_log_spike: 5 min window + 1 h baseline
    assert reach["metrics"] == 1920.0  # cpu_sustained: runs up to 30 min + a 2 min gap
    assert reach["transactions"] == 300.0  # rapid_transactions' 5 min window
    assert lookback_seconds(rules) == max(reach.values())


def test_entity_codes_agree_across_arrow_chunks_and_nulls() -> None:
    import pyarrow as pa

    from vigil.detect.frames import column_codes, entity_codes

    chunked = pa.chunked_array([pa.array(["a", "b", None]), pa.array(["b", "c", "a", None])])
    series = pd.Series(pd.arrays.ArrowExtensionArray(chunked))
    codes = column_codes(series)
    values = [None if v is pd.NA else v for v in series.tolist()]
    for i, left in enumerate(values):
        for j, right in enumerate(values):
            assert (left == right) == (codes[i] == codes[j])
    frame = pd.DataFrame({"s": ["x", "x", "y", "y"], "u": ["1", "2", "1", "1"]})
    pairs = entity_codes(frame, ("s", "u"))
    assert pairs[2] == pairs[3] and len(set(pairs.tolist())) == 3


def test_dictionary_columns_from_the_lake_detect_exactly_like_plain_strings() -> None:
    rows = (errors(25, 0, 2, "a") + errors(5, 0, 2, "b")
            + [{"timestamp": at(40 + i), "message": m, "user_id": u}
               for i, (m, u) in enumerate([("Payment FAILED", "u1"), ("ok", None),
                                           ("failed again", "u2"), ("fine", "u1")])])
    plain = logs(rows)
    categorical = plain.astype({c: "category" for c in ("service", "level", "message",
                                                         "user_id")})
    rules = [RULES["error_spike"], RULES["failed_message"]]
    expected = detect(rules, {"logs": plain}, *HOUR)
    assert set(expected.rule) == {"error_spike", "failed_message"}
    pd.testing.assert_frame_equal(detect(rules, {"logs": categorical}, *HOUR), expected)
    # As the lake returns them: Arrow dictionaries, each file's chunk with its own dictionary.
    table = pa.Table.from_pandas(plain, preserve_index=False)
    encoded = pa.schema([f.with_type(pa.dictionary(pa.int32(), pa.string()))
                         if f.name in ("service", "level", "message", "user_id") else f
                         for f in table.schema])
    from_lake = to_frame(pa.concat_tables([table.slice(0, 10).cast(encoded),
                                           table.slice(10).cast(encoded)]))
    assert isinstance(from_lake["user_id"].dtype, pd.ArrowDtype)
    pd.testing.assert_frame_equal(detect(rules, {"logs": from_lake}, *HOUR), expected)


def test_a_long_sustained_run_reads_the_same_from_any_look_back() -> None:
    # CPU hot from 09:00 for two hours; detect 10:00-11:00 reading from 09:00 or from the
    # rule's own look-back: the run's reported length is capped at `longest` either way.
    rule = RULES["cpu_sustained"]
    frame = metrics(samples(-3600, 3590, 10, cpu_percent=95.0))
    stamps = pd.to_datetime(frame.timestamp, utc=True)
    short = frame[stamps >= T0 - timedelta(seconds=rule.lookback)]
    found, found_short = run("cpu_sustained", frame), run("cpu_sustained", short)
    pd.testing.assert_frame_equal(found, found_short)
    assert found.peak.max() == rule.longest == 1800.0
    assert found.iloc[0].title == "CPU >= 80 % for 30 min or more on h1"
