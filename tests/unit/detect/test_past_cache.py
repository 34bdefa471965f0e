"""A few entities' long pasts kept between runs equal a fresh read of the lake: new runs
read only what landed after them, a late file in their span or an entity new to them is
read and added (the entity from only the files that may hold it), and a longer reach
reads the lake again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa

from tests.unit.detect.test_reads import DEFAULTS
from vigil.detect.past_cache import KEEP_LIMIT, PastCache
from vigil.detect.reads import TopicReads
from vigil.detect.rules import load_rules
from vigil.lake import Lake, RawFiles, epoch_us, file_name, hour_dir, raw_schema

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RULE = next(r for r in load_rules() if r.name == "rapid_transactions")  # by user_id
USERS = [f"u{i}" for i in range(40)]


def land_minute(lake: Lake, minute: int, first_offset: int, partition: int = 0,
                users: list[str] = USERS) -> int:
    """One file of transactions, one per user every 3 s of the minute; its name carries its
    span as a landed file's does. Returns the next offset."""
    stamps = [T0 + timedelta(minutes=minute, seconds=s) for s in range(0, 60, 3)]
    rows = [{**DEFAULTS["transactions"], "timestamp": t, "user_id": u}
            for t in stamps for u in users]
    frame = pd.DataFrame(rows)
    frame["event_id"] = frame["transaction_id"] = [f"p{partition}-{first_offset + i}"
                                                    for i in range(len(frame))]
    frame["_partition"] = partition
    frame["_offset"] = range(first_offset, first_offset + len(frame))
    frame["_ingested_at"] = frame["_kafka_timestamp"] = frame["timestamp"]
    schema = raw_schema("transactions")
    table = pa.Table.from_pandas(frame.reindex(columns=schema.names), schema=schema,
                                 preserve_index=False)
    span = (epoch_us(stamps[0]), epoch_us(stamps[-1]))
    hour = stamps[0].replace(minute=0, second=0)
    name = file_name("transactions", partition, first_offset, span)
    lake.write(f"{hour_dir('raw', 'transactions', hour)}/{name}", table)
    return first_offset + len(frame)


def filled(tmp_path: Path, minutes: int) -> tuple[Lake, PastCache, int]:
    """A lake holding `minutes` of transactions, an empty cache, and the next offset."""
    lake, cache = Lake((tmp_path / "lake").as_uri()), PastCache(tmp_path / "kept", "lake")
    offset = 0
    for minute in range(minutes):
        offset = land_minute(lake, minute, offset)
    return lake, cache, offset


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def both(lake: Lake, cache: PastCache, users: list[str], start: float, end: float,
         head: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(through the cache, straight from the lake) for the users over [start, end)."""
    reads = TopicReads(lake, {"transactions": (at(start), at(end))}, cache)
    entities = {"user_id": pa.array(users)}
    kept = reads.past([RULE], at(start), at(end), entities, at(head))
    fresh = reads.narrowed([RULE], at(start), at(end), entities)
    order = ["timestamp", "_partition", "_offset"]
    return (kept.to_pandas().sort_values(order, ignore_index=True),
            fresh.to_pandas().sort_values(order, ignore_index=True))


def test_a_later_run_reads_only_what_landed_after_the_kept_rows(tmp_path: Path) -> None:
    lake, cache, offset = filled(tmp_path, 30)
    kept, fresh = both(lake, cache, ["u1", "u2"], 0, 30, head=29)
    assert (cache.hits, cache.misses) == (0, 1)
    pd.testing.assert_frame_equal(kept, fresh)
    assert len(kept) == 2 * 20 * 30

    for minute in (30, 31):  # the next runs: the look-back moves on with the batch
        offset = land_minute(lake, minute, offset)
        kept, fresh = both(lake, cache, ["u2"], minute - 29, minute + 1, head=minute)
        pd.testing.assert_frame_equal(kept, fresh)
        assert len(kept) == 20 * 30
    assert (cache.hits, cache.misses) == (2, 1)


def test_a_late_file_in_the_kept_span_is_added_to_the_kept_rows(tmp_path: Path) -> None:
    lake, cache, _ = filled(tmp_path, 20)
    both(lake, cache, ["u1"], 0, 20, head=19)
    # Partition 1 lands late: events ten minutes back, inside what is kept.
    land_minute(lake, 10, 0, partition=1, users=["u1", "u7"])
    kept, fresh = both(lake, cache, ["u1"], 1, 21, head=20)
    assert (cache.hits, cache.misses) == (1, 1)  # added, not the whole span read again
    pd.testing.assert_frame_equal(kept, fresh)
    assert (kept["_partition"] == 1).sum() == 20  # the late rows are there
    kept, fresh = both(lake, cache, ["u1"], 2, 21, head=20)  # and kept from now on
    pd.testing.assert_frame_equal(kept, fresh)
    assert (cache.hits, cache.misses) == (2, 1)


def test_a_kept_file_gone_from_the_lake_reads_the_span_again(tmp_path: Path) -> None:
    lake, cache, _ = filled(tmp_path, 20)
    both(lake, cache, ["u1"], 0, 20, head=19)
    gone = next(p for p in lake.files("raw", "transactions", at(0), at(20)) if "+t" in p)
    lake.fs.delete_file(gone)  # its rows must not outlive it
    kept, fresh = both(lake, cache, ["u1"], 0, 20, head=19)
    pd.testing.assert_frame_equal(kept, fresh)
    assert len(kept) == 20 * 19 and (cache.hits, cache.misses) == (0, 2)


def test_entities_new_to_the_kept_rows_join_them_and_earlier_starts_read_the_lake(
        tmp_path: Path) -> None:
    lake, cache, _ = filled(tmp_path, 20)
    both(lake, cache, ["u1"], 5, 20, head=19)
    for users, start in ((["u3"], 5), (["u1", "u3"], 6), (["u1"], 2), (["u1", "u3"], 3)):
        kept, fresh = both(lake, cache, users, start, 20, head=19)
        pd.testing.assert_frame_equal(kept, fresh)
        assert set(kept["user_id"]) == set(users)
    # u3 joined u1's kept rows; reaching back to minute 2 read the lake again (u1 alone),
    # and u3 joined that from minute 3.
    assert (cache.hits, cache.added, cache.misses) == (3, 2, 2)


def test_a_whole_batch_of_entities_is_not_kept(tmp_path: Path) -> None:
    lake, cache = Lake((tmp_path / "lake").as_uri()), PastCache(tmp_path / "kept", "lake")
    land_minute(lake, 0, 0)
    many = [f"x{i}" for i in range(KEEP_LIMIT + 1)] + ["u1"]
    kept, fresh = both(lake, cache, many, 0, 1, head=1)
    pd.testing.assert_frame_equal(kept, fresh)
    assert len(kept) == 20 and cache.misses == 0  # read straight from the lake
    assert not (tmp_path / "kept").exists()


def test_an_entity_new_to_the_kept_rows_is_read_from_the_files_that_may_hold_it(
        tmp_path: Path) -> None:
    lake, cache = Lake((tmp_path / "lake").as_uri()), PastCache(tmp_path / "kept", "lake")
    offset = 0
    for minute in range(20):  # a new user, s1, shows up in the last three minutes
        offset = land_minute(lake, minute, offset, users=USERS + ["s1"] * (minute >= 17))
    both(lake, cache, ["u1"], 0, 20, head=19)
    assert cache.presence is not None
    cache.index("transactions", "user_id", RawFiles(lake, "transactions", at(0), at(20)),
                at(0), at(20))
    assert cache.presence.indexed == 20
    cache.presence.opened = cache.presence.skipped = 0
    # A file ruled out is never opened: one without s1, its rows of u1 already kept, is
    # unreadable while the kept rows are read (a scan opening it would fail).
    ruled_out = Path(next(p for p in lake.files("raw", "transactions", at(5), at(6))
                          if "+t" in p))
    landed = ruled_out.read_bytes()
    ruled_out.write_bytes(b"not parquet")
    entities = {"user_id": pa.array(["u1", "s1"])}
    reads = TopicReads(lake, {"transactions": (at(0), at(20))}, cache)
    kept = reads.past([RULE], at(0), at(20), entities, at(19)).to_pandas()
    ruled_out.write_bytes(landed)
    fresh = reads.narrowed([RULE], at(0), at(20), entities).to_pandas()
    order = ["timestamp", "_partition", "_offset"]
    pd.testing.assert_frame_equal(kept.sort_values(order, ignore_index=True),
                                  fresh.sort_values(order, ignore_index=True))
    assert (kept["user_id"] == "s1").sum() == 3 * 20
    assert (cache.hits, cache.added, cache.misses) == (1, 1, 1)
    # The kept rows end a minute before the batch: of the 18 files up to there, only s1's
    # (minute 17; at most one more falsely "may hold") were opened for it; the tail was
    # read for both users.
    assert cache.presence.skipped >= 16 and 1 <= cache.presence.opened <= 2
