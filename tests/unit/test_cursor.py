from __future__ import annotations

from vigil.cursor import IngestPolicy, dump_cursor, load_cursor, plan_next
from vigil.ingest import OffsetRange, run_key


def test_first_tick_starts_earliest_and_caps_the_run_in_proportion() -> None:
    marks = {"logs": {0: (0, 900), 1: (5, 20)}, "metrics": {0: (0, 0)}}
    plan = plan_next({}, marks, IngestPolicy(max_records_per_run=100))
    # 900 and 15 owed: 98.4 and 1.6 of the 100, rounded so that the budget is spent.
    assert plan.ranges == [OffsetRange("logs", 0, 0, 98), OffsetRange("logs", 1, 5, 7)]
    assert plan.records == 100
    assert plan.cursor == {"logs": {0: 98, 1: 7}, "metrics": {0: 0}}
    assert plan.lag == {"logs": {0: 900, 1: 15}, "metrics": {0: 0}}
    assert any("new partition" in note for note in plan.notes)


def test_latest_skips_history_and_later_partitions_are_picked_up() -> None:
    plan = plan_next({}, {"logs": {0: (0, 500)}}, IngestPolicy(start="latest"))
    assert plan.ranges == [] and plan.cursor == {"logs": {0: 500}}
    grown = {"logs": {0: (0, 510), 1: (0, 7)}}
    plan = plan_next(plan.cursor, grown, IngestPolicy(start="latest"))
    assert plan.ranges == [OffsetRange("logs", 0, 500, 510)]
    assert plan.cursor["logs"] == {0: 510, 1: 7}


def test_nothing_new_means_no_ranges_and_an_unchanged_cursor() -> None:
    cursor = {"logs": {0: 10}}
    plan = plan_next(cursor, {"logs": {0: (0, 10)}}, IngestPolicy())
    assert plan.ranges == [] and plan.cursor == cursor and plan.total_lag == 0


def test_retention_gap_jumps_to_the_low_watermark_with_a_note() -> None:
    plan = plan_next({"logs": {0: 3}}, {"logs": {0: (50, 60)}}, IngestPolicy())
    assert plan.ranges == [OffsetRange("logs", 0, 50, 60)]
    assert "offsets 3-49 were deleted by retention" in plan.notes[0]


def test_cursor_round_trips_through_json_and_run_keys_name_the_ranges() -> None:
    cursor = {"metrics": {2: 7, 0: 3}, "logs": {1: 1}}
    assert load_cursor(dump_cursor(cursor)) == cursor
    assert load_cursor(None) == {}
    key = run_key([OffsetRange("metrics", 1, 5, 9), OffsetRange("logs", 0, 0, 4)])
    assert key == "logs:0:0-4,metrics:1:5-9"


def test_a_busy_partition_keeps_pace_in_time_and_none_is_starved() -> None:
    """Partitions owing 6,000, 3,000 and 5 records (two minutes of a fast, a slow and an
    almost idle producer) each land the same share of what they owe; the idle one moves."""
    marks = {"logs": {0: (0, 6000), 1: (0, 3000), 2: (0, 5)}}
    plan = plan_next({}, marks, IngestPolicy(max_records_per_run=900))
    taken = {r.partition: r.end - r.start for r in plan.ranges}
    assert sum(taken.values()) == 900
    assert abs(taken[0] - 2 * taken[1]) <= 2 and taken[2] >= 1
    owed = {0: 6000, 1: 3000, 2: 5}
    shares = [taken[p] / owed[p] for p in owed]
    assert max(shares) - min(shares) < 0.11  # the same fraction of each backlog, +- rounding
