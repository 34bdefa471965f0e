from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

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


def test_rules_check_lists_valid_rules_and_names_a_mistake(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vigil.cli import main

    assert main(["rules", "check"]) == 0
    assert "11 rules, valid" in capsys.readouterr().out
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - name: x\n    topic: logs\n")
    assert main(["rules", "check", "--file", str(bad)]) == 2
    assert "rule 'x': missing 'type'" in capsys.readouterr().err
