from __future__ import annotations

from vigil.cursor import IngestPolicy, dump_cursor, load_cursor, plan_next
from vigil.ingest import OffsetRange, run_key


def test_first_tick_starts_earliest_and_caps_the_run_fairly() -> None:
    marks = {"logs": {0: (0, 900), 1: (5, 20)}, "metrics": {0: (0, 0)}}
    plan = plan_next({}, marks, IngestPolicy(max_records_per_run=100))
    assert plan.ranges == [OffsetRange("logs", 0, 0, 85), OffsetRange("logs", 1, 5, 20)]
    assert plan.records == 100
    assert plan.cursor == {"logs": {0: 85, 1: 20}, "metrics": {0: 0}}
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
