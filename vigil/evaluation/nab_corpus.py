"""The NAB corpus on disk: `data/<category>/<file>.csv` (timestamp,value), windows in
`labels/combined_windows.json`, profiles in `config/profiles.json`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vigil.evaluation.nab_score import Labelled
from vigil.settings import PROJECT_ROOT

DEFAULT_DIR = PROJECT_ROOT.parent / "shared" / "datasets" / "nab"


class CorpusError(ValueError):
    """The corpus folder is missing or malformed; the message says which file and what to do."""


def default_dir() -> Path:
    return Path(os.environ.get("VIGIL_NAB_DIR", DEFAULT_DIR))


@dataclass(frozen=True)
class Series:
    name: str  # <category>/<file>.csv, the key NAB's labels use
    timestamps: np.ndarray  # datetime64[ns]
    values: np.ndarray  # float
    labelled: Labelled


def _windows(name: str, timestamps: np.ndarray, limits: list[list[str]]
             ) -> tuple[tuple[int, int], ...]:
    windows = []
    for start, end in limits:
        first = int(np.searchsorted(timestamps, np.datetime64(pd.Timestamp(start)), "left"))
        last = int(np.searchsorted(timestamps, np.datetime64(pd.Timestamp(end)), "right")) - 1
        if first > last:
            raise CorpusError(f"{name}: window {start} .. {end} holds no row")
        windows.append((first, last))
    return tuple(windows)


def load(directory: Path) -> list[Series]:
    """Every labelled CSV under `directory/data`, sorted by name."""
    labels_path = directory / "labels" / "combined_windows.json"
    if not labels_path.is_file():
        raise CorpusError(f"no NAB labels at {labels_path}: point --data (or VIGIL_NAB_DIR) "
                          "at a folder holding data/, labels/ and config/")
    labels = json.loads(labels_path.read_text())
    found = []
    for path in sorted((directory / "data").glob("*/*.csv")):
        name = f"{path.parent.name}/{path.name}"
        if name not in labels:
            raise CorpusError(f"{path}: not in {labels_path}; NAB files are keyed "
                              "<category>/<file>.csv")
        frame = pd.read_csv(path)
        if list(frame.columns[:2]) != ["timestamp", "value"]:
            raise CorpusError(f"{path}: expected columns timestamp,value, "
                              f"found {list(frame.columns)}")
        timestamps = pd.to_datetime(frame["timestamp"]).to_numpy(dtype="datetime64[ns]")
        values = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=float)
        windows = _windows(name, timestamps, labels[name])
        found.append(Series(name, timestamps, values, Labelled(name, len(values), windows)))
    if not found:
        raise CorpusError(f"no CSV files under {directory / 'data'}")
    return found
