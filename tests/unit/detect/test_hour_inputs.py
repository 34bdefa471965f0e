"""What a whole-hour detection read vs. what the lake holds when it may write."""

from datetime import UTC, datetime, timedelta

from vigil.detect.hours import HourInputs
from vigil.lake import epoch_us, file_name

HOUR = datetime(2026, 11, 24, 10, tzinfo=UTC)


def _file(topic: str, offset: int, first: datetime, last: datetime) -> str:
    return file_name(topic, 0, offset, (epoch_us(first), epoch_us(last)))


def _inputs(files: dict[str, set[str]]) -> HourInputs:
    return HourInputs("digest", {topic: frozenset(names) for topic, names in files.items()})


def test_nothing_landed_since_the_read() -> None:
    read = _inputs({"logs": {_file("logs", 0, HOUR, HOUR + timedelta(minutes=5))}})
    assert read.landed_since(read) == {}


def test_each_topic_counts_from_the_first_event_of_what_landed_since() -> None:
    old = _file("logs", 0, HOUR, HOUR + timedelta(minutes=5))
    read = _inputs({"logs": {old}, "metrics": {_file("metrics", 0, HOUR, HOUR)}})
    now = _inputs({"logs": {old, _file("logs", 10, HOUR + timedelta(minutes=9),
                                       HOUR + timedelta(minutes=12)),
                            _file("logs", 20, HOUR + timedelta(minutes=7),  # a late batch
                                  HOUR + timedelta(minutes=8))},
                   "metrics": set(read.files["metrics"]),
                   "transactions": {_file("transactions", 0, HOUR + timedelta(minutes=30),
                                          HOUR + timedelta(minutes=31))}})
    assert read.landed_since(now) == {"logs": HOUR + timedelta(minutes=7),
                                      "transactions": HOUR + timedelta(minutes=30)}


def test_a_file_gone_since_the_read_counts_too_and_a_name_without_times_from_the_epoch() -> None:
    gone = _file("metrics", 0, HOUR + timedelta(minutes=2), HOUR + timedelta(minutes=3))
    read = _inputs({"metrics": {gone}, "logs": set()})
    now = _inputs({"metrics": set(), "logs": {file_name("logs", 0, 0)}})
    assert read.landed_since(now) == {"metrics": HOUR + timedelta(minutes=2),
                                      "logs": datetime(1970, 1, 1, tzinfo=UTC)}
