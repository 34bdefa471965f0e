from __future__ import annotations

import argparse
import datetime as dt

import pytest

from vigil import cliargs


def test_rates_total_and_per_topic() -> None:
    assert cliargs.rates("100") == {"logs": 50.0, "metrics": 20.0, "transactions": 30.0}
    assert cliargs.rates("logs=5,transactions=2.5") == {"logs": 5.0, "transactions": 2.5}


@pytest.mark.parametrize("bad", ["fast", "0", "-3", "logs=x", "audit=3"])
def test_bad_rates(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"rate|topic"):
        cliargs.rates(bad)


def test_durations_speeds_and_times() -> None:
    assert [cliargs.duration(v) for v in ("90", "90s", "5m", "2h", "1d")] == [
        90, 90, 300, 7200, 86400]
    assert cliargs.speed("max") is None
    assert cliargs.speed("60x") == 60.0
    assert cliargs.utc_time("2026-11-24T12:00:00+02:00") == dt.datetime(
        2026, 11, 24, 10, tzinfo=dt.UTC)
    for parser, bad in ((cliargs.duration, "soon"), (cliargs.speed, "0x"),
                        (cliargs.utc_time, "noon"), (cliargs.assignment, "novalue")):
        with pytest.raises(argparse.ArgumentTypeError):
            parser(bad)
