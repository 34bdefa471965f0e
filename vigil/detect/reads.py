"""One detection run's reads of the lake: each rule reads only its columns over its own
span, and every read of a topic scans one dataset, so a file's footer is parsed once per
run however many rules read it (an hour holds thousands of small files under load)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from vigil.detect.engine import EVIDENCE, to_frame
from vigil.detect.rules import Rule
from vigil.lake import Lake, scan_events


class TopicReads:
    def __init__(self, lake: Lake, spans: dict[str, tuple[datetime, datetime]]) -> None:
        """`spans`: per topic, the widest [start, end) any read of this run will ask for."""
        self._datasets = {topic: lake.raw_dataset(topic, start, end, dictionary=True)
                          for topic, (start, end) in spans.items()}

    def frame(self, rules: list[Rule], start: datetime, end: datetime,
              only: pd.DataFrame | None = None) -> pd.DataFrame:
        """Events of the rules' topic in [start, end) with the columns they read; `only`
        keeps the entities it lists (its columns are group_by columns)."""
        columns = sorted(set().union(*(r.columns() for r in rules)) | set(EVIDENCE))
        where = None if only is None else entity_filter(only)
        return to_frame(scan_events(self._datasets[rules[0].topic], start, end, columns,
                                    dictionary=True, where=where))


def entity_filter(entities: pd.DataFrame) -> pads.Expression:
    """Rows whose every group column holds one of the listed values: a superset of the
    listed entities when they have several columns, which is safe for its callers."""
    condition: pads.Expression | None = None
    for column in entities.columns:
        listed = entities[column].astype(object)
        values = list(listed.dropna().unique())
        field = pads.field(column)
        test = field.isin(pa.array(values)) if values else field.is_null()
        if values and listed.isna().any():
            test = test | field.is_null()
        condition = test if condition is None else condition & test
    assert condition is not None, "entities need at least one column"
    return condition
