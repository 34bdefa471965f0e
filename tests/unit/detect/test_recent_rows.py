"""The last minutes kept between runs equal a fresh read of the lake: later runs read only
what is new to them, a file landed late inside them is added, a file gone from the lake
drops them, and a start before them reads the lake."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from tests.unit.detect.test_past_cache import RULE, USERS, at, land_minute
from vigil.detect.reads import TopicReads, entity_filter, read_columns
from vigil.detect.recent_rows import SLACK, RecentRows
from vigil.lake import Lake, RawFiles

COLUMNS = read_columns([RULE])
ORDER = ["timestamp", "_partition", "_offset"]


def kept_and_fresh(lake: Lake, recent: RecentRows, users: list[str], start: float,
                   head: float) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """(from the kept rows or None, straight from the lake) for the users over
    [start, head), as a run whose listing reaches back to `start` reads them."""
    files = RawFiles(lake, "transactions", at(start), at(head))
    entities = {"user_id": pa.array(users)}
    kept = recent.read(files, COLUMNS, None, at(start), at(head), entity_filter(entities))
    reads = TopicReads(lake, {"transactions": (at(start), at(head))})
    fresh = plain(reads.narrowed([RULE], at(start), at(head), entities))
    return (None if kept is None else plain(kept)), fresh.sort_values(ORDER, ignore_index=True)


def runs_a_minute(tmp_path: Path, minutes: int) -> tuple[Lake, RecentRows, int]:
    """A lake of `minutes` minutes, each read after it landed as a run reads its window's
    past (five minutes back); the lake, the kept rows and the next offset."""
    lake, recent = Lake((tmp_path / "lake").as_uri()), RecentRows(tmp_path / "kept", "lake")
    offset = 0
    for minute in range(minutes):
        offset = land_minute(lake, minute, offset)
        kept_and_fresh(lake, recent, USERS, max(minute - 4, 0), minute + 1)
    return lake, recent, offset


def plain(table: pa.Table) -> pd.DataFrame:
    """Dictionary columns decoded: kept rows come as plain strings, a narrowed read not."""
    return pa.table([c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c
                     for c in table.itercolumns()], names=table.column_names).to_pandas()


def test_runs_are_served_from_kept_rows_once_they_reach_back(tmp_path: Path) -> None:
    lake, recent = Lake((tmp_path / "lake").as_uri()), RecentRows(tmp_path / "kept", "lake")
    offset = 0
    served = 0
    for minute in range(12):  # a run a minute: the window's five minutes before its batch
        offset = land_minute(lake, minute, offset)
        kept, fresh = kept_and_fresh(lake, recent, USERS[::3], minute - 4, minute + 1)
        if kept is not None:
            served += 1
            assert len(fresh) > 0
            pd.testing.assert_frame_equal(kept, fresh)
    # Kept from the first run's head on: served once they reach five minutes back.
    assert (recent.hits, recent.misses) == (served, 12 - served) and served >= 6


def test_kept_span_is_not_read_from_the_lake_again(tmp_path: Path) -> None:
    """Rewriting a kept file in place (a name is a pure function of its rows, so this never
    happens in a lake) shows which rows come from the kept copy."""
    lake, recent, offset = runs_a_minute(tmp_path, 7)
    per_minute = offset // 7
    land_minute(lake, 3, 3 * per_minute, users=USERS[:1])  # minute 3's file, same name
    assert len(list((tmp_path / "lake").rglob("*.parquet"))) == 7
    offset = land_minute(lake, 7, offset)
    kept, fresh = kept_and_fresh(lake, recent, USERS, 3, 8)
    assert kept is not None
    in_minute_3 = (kept["timestamp"] >= at(3)) & (kept["timestamp"] < at(4))
    assert kept[in_minute_3]["user_id"].nunique() == len(USERS)  # the kept copy
    assert fresh[(fresh["timestamp"] >= at(3)) & (fresh["timestamp"] < at(4))][
        "user_id"].nunique() < len(USERS)  # the lake's rewritten file


def test_a_file_landed_late_inside_the_kept_span_is_added(tmp_path: Path) -> None:
    lake, recent, _ = runs_a_minute(tmp_path, 7)
    land_minute(lake, 5, 0, partition=1, users=["late"])  # another partition, behind
    kept, fresh = kept_and_fresh(lake, recent, ["late", *USERS[:5]], 3, 7)
    assert kept is not None and (kept["user_id"] == "late").sum() == 20
    pd.testing.assert_frame_equal(kept, fresh)


def test_a_kept_file_gone_from_the_lake_drops_the_kept_rows(tmp_path: Path) -> None:
    lake, recent, _ = runs_a_minute(tmp_path, 7)
    minute_4 = next(p for p in (tmp_path / "lake").rglob("*.parquet")
                    if f"+t{int(at(4).timestamp() * 1e6)}_" in p.name)
    minute_4.unlink()
    kept, fresh = kept_and_fresh(lake, recent, USERS, 3, 7)
    assert kept is None and len(fresh) > 0  # read from the lake, kept afresh from here


def test_a_start_before_the_kept_rows_reads_the_lake_and_they_stay(tmp_path: Path) -> None:
    lake, recent, _ = runs_a_minute(tmp_path, 9)
    reach = (8 - 4) - SLACK.total_seconds() / 60  # the last run's start less the slack
    kept, _ = kept_and_fresh(lake, recent, USERS, reach - 1, 9)
    assert kept is None
    kept, fresh = kept_and_fresh(lake, recent, USERS, reach + 0.5, 9)  # still kept
    assert kept is not None
    pd.testing.assert_frame_equal(kept, fresh)
