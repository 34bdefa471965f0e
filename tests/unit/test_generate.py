from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from vigil.events import EVENT_TYPES, decode_batch, encode_batch
from vigil.generate import SCENARIOS, StreamSpec, SyntheticStream, resolve_scenarios

START = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC)
RATES = {"logs": 40.0, "metrics": 40.0, "transactions": 40.0}


def _all(stream: SyntheticStream, topic: str, seconds: int) -> pa.Table:
    return pa.concat_tables([stream.slice(topic, k) for k in range(seconds)])


def _seconds(table: pa.Table) -> np.ndarray:
    return table.column("timestamp").to_numpy().astype("datetime64[us]").astype(np.int64) / 1e6


def test_same_seed_same_stream_and_another_seed_differs() -> None:
    def make(seed: int) -> list[bytes]:
        s = SyntheticStream(StreamSpec(seed, START, RATES, resolve_scenarios(["all"]), 300))
        return [m for t in RATES for k in range(0, 300, 37)
                for m in encode_batch(s.slice(t, k), EVENT_TYPES[t])]

    assert make(3) == make(3)
    assert make(3) != make(4)


def test_slices_are_independent_of_the_order_they_are_asked_for() -> None:
    spec = StreamSpec(9, START, RATES, resolve_scenarios(["all"]), 300)
    forward = SyntheticStream(spec)
    backward = SyntheticStream(spec)
    got_backward = {k: backward.slice("logs", k) for k in reversed(range(60))}
    for k in range(60):
        assert forward.slice("logs", k).equals(got_backward[k])


def test_clean_stream_has_no_labels_and_stays_clear_of_the_fixed_rules() -> None:
    stream = SyntheticStream(StreamSpec(1, START, {"logs": 200, "metrics": 60,
                                                   "transactions": 200}, (), 900))
    assert stream.labels(0) == []
    logs = _all(stream, "logs", 900)
    assert not pc.any(pc.match_substring(logs.column("message"), "failed",
                                         ignore_case=True)).as_py()
    errors = logs.filter(pc.is_in(logs.column("level"), pa.array(["ERROR", "CRITICAL"])))
    frame = errors.select(["timestamp", "service"]).to_pandas()
    per_3min = frame.groupby([frame.timestamp.dt.floor("3min"), "service"]).size()
    assert per_3min.max() < 20, "baseline errors must not look like an error spike"
    metrics = _all(stream, "metrics", 900)
    assert pc.max(metrics.column("cpu_percent")).as_py() < 80
    assert pc.max(metrics.column("latency_ms")).as_py() < 1000
    txns = _all(stream, "transactions", 900)
    assert pc.max(txns.column("amount")).as_py() <= 9500
    per_user = txns.select(["user_id"]).to_pandas().value_counts()
    assert per_user.max() < 10, "no ordinary user looks like rapid-fire in 15 minutes"


def test_stream_is_realistic_in_shape() -> None:
    stream = SyntheticStream(StreamSpec(2, START, {"logs": 300, "metrics": 100,
                                                   "transactions": 300}, (), 600))
    logs = _all(stream, "logs", 60)
    assert len(pc.unique(logs.column("service"))) >= 20
    assert len(pc.unique(logs.column("host"))) >= 40
    assert len(pc.unique(pc.drop_null(logs.column("user_id")))) > 1000
    txns = _all(stream, "transactions", 60)
    amounts = txns.column("amount").to_numpy()
    assert np.percentile(amounts, 99) > 8 * np.median(amounts), "amounts are heavy-tailed"
    assert len(pc.unique(txns.column("country"))) >= 8
    # Daily cycle: load at 16:00 UTC is well above load at 04:00 UTC.
    day = SyntheticStream(StreamSpec(2, dt.datetime(2026, 11, 24, 4, tzinfo=dt.UTC),
                                     {"metrics": 100}, (), 86400))
    night = day.slice("metrics", 0).column("requests_per_sec").to_numpy().mean()
    peak = day.slice("metrics", 12 * 3600).column("requests_per_sec").to_numpy().mean()
    assert peak > 2.5 * night


def test_every_slice_encodes_and_decodes_cleanly() -> None:
    stream = SyntheticStream(StreamSpec(5, START, RATES, resolve_scenarios(["all"]), 300))
    for topic, kind in EVENT_TYPES.items():
        table = _all(stream, topic, 300)
        decoded = decode_batch(topic, encode_batch(table, kind))
        assert decoded.rejects == []
        assert decoded.table.equals(table)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_scenario_is_labelled_and_present_in_its_window(name: str) -> None:
    stream = SyntheticStream(StreamSpec(11, START, RATES, (name,), 4000))
    (label,) = stream.labels(0)
    assert (label.scenario, label.topic) == (name, SCENARIOS[name].topic)
    first = int(label.start.timestamp() - START.timestamp())
    last = int(label.end.timestamp() - START.timestamp()) + 1
    table = pa.concat_tables([stream.slice(label.topic, k) for k in range(first, last + 1)])
    t = _seconds(table)
    lo, hi = label.start.timestamp(), label.end.timestamp()
    mine = table.filter(pa.array((t >= lo) & (t <= hi)
                                 & (table.column(label.entity_field).to_numpy(
                                     zero_copy_only=False) == label.entity)))
    assert mine.num_rows > 0
    if "events" in label.details:
        assert mine.num_rows >= label.details["events"]
    assert _SCENARIO_CHECKS.get(name, lambda _m: True)(mine), name


def _levels(table: pa.Table, level: str) -> int:
    return int(pc.sum(pc.equal(table.column("level"), level)).as_py())


def _min(table: pa.Table, column: str) -> float:
    return float(pc.min(table.column(column)).as_py())


def _max(table: pa.Table, column: str) -> float:
    return float(pc.max(table.column(column)).as_py())


_SCENARIO_CHECKS: dict[str, Callable[[pa.Table], bool]] = {
    "error_burst": lambda m: _levels(m, "ERROR") >= 40,
    "failed_login_storm": lambda m: pc.sum(pc.match_substring(
        m.column("message"), "Login failed")).as_py() == 30,
    "cpu_sustained": lambda m: _min(m, "cpu_percent") >= 85,
    "latency_spike": lambda m: _min(m, "latency_ms") > 1000,
    "cpu_latency": lambda m: _min(m, "cpu_percent") >= 85 and _min(m, "latency_ms") > 1000,
    "latency_shift": lambda m: 300 < float(np.median(m.column("latency_ms").to_numpy())) < 500,
    "cpu_creep": lambda m: _max(m, "cpu_percent") < 80,
    "memory_leak": lambda m: _max(m, "memory_percent") > 90,
    "large_amount": lambda m: _max(m, "amount") > 10000,
    "rapid_fire": lambda m: m.num_rows >= 25,
    "card_testing": lambda m: (len(pc.unique(m.column("merchant_id"))) >= 30
                               and _max(m, "amount") <= 2.0),
    "unusual_country": lambda m: m.num_rows == 3,
}


def test_unusual_country_differs_from_home() -> None:
    stream = SyntheticStream(StreamSpec(11, START, RATES, ("unusual_country",), 4000))
    (label,) = stream.labels(0)
    assert label.details["country"] != label.details["home_country"]


def test_scenarios_repeat_each_horizon_with_fresh_placements() -> None:
    stream = SyntheticStream(StreamSpec(1, START, RATES, resolve_scenarios(["all"]), 600))
    first, second = stream.labels(0), stream.labels(1)
    assert len(first) == len(second) == len(SCENARIOS)
    assert all(b.start.timestamp() - START.timestamp() >= 600 for b in second)
    assert [a.entity for a in first] != [b.entity for b in second]


def test_unknown_scenario_names_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'cpu_spike': choose from"):
        resolve_scenarios(["cpu_spike"])
    assert resolve_scenarios(["all"]) == tuple(SCENARIOS)
