"""Operator-friendly argument values: rates, durations, speeds, times, column mappings.

Each parser raises argparse.ArgumentTypeError with what was wrong and what to write instead,
which argparse prints as a one-line usage error.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime

from vigil.settings import TOPICS

DEFAULT_MIX = {"logs": 0.5, "metrics": 0.2, "transactions": 0.3}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def rates(text: str) -> dict[str, float]:
    """`300` (total, split logs 50 % / metrics 20 % / transactions 30 %) or
    `logs=200,metrics=50` (per topic)."""
    try:
        if "=" not in text:
            total = float(text)
            if total <= 0:
                raise ValueError
            return {topic: total * share for topic, share in DEFAULT_MIX.items()}
        out: dict[str, float] = {}
        for part in text.split(","):
            topic, value = part.split("=", 1)
            topic = topic.strip()
            if topic not in TOPICS:
                raise argparse.ArgumentTypeError(
                    f"unknown topic {topic!r} in --rate: use {', '.join(TOPICS)}")
            out[topic] = float(value)
            if out[topic] <= 0:
                raise ValueError
        return out
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid rate {text!r}: write events per second, e.g. 300 or "
            "logs=200,metrics=50,transactions=100") from None


def duration(text: str) -> int:
    """`90`, `90s`, `5m`, `2h`, `1d` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: e.g. 90, 90s, 5m, 2h")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"duration {text!r} is under one second")
    return round(seconds)


def speed(text: str) -> float | None:
    """`1` (real time), `60x`, `max` (None: as fast as possible)."""
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text.strip().lower().removesuffix("x"))
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid speed {text!r}: e.g. 1, 60x or max")
    return value


def utc_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO 8601, e.g. 2026-11-24T12:00:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def assignment(text: str) -> tuple[str, str]:
    """`source=target` for --map and --set."""
    if "=" not in text or not text.split("=", 1)[0].strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    left, right = text.split("=", 1)
    return left.strip(), right.strip()
