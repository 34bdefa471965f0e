"""One detection run's reads of the lake: each rule reads only its columns over its own
span, and each read opens only the files that may hold its span (by their names), a file's
footer parsed once per run however many reads open it (an hour holds thousands of small
files under load; most reads want its last seconds).

Before a batch, a rule needs the past only of the entities the batch holds: a firing
depends on its own entity's events alone. So the past is read narrowed to those entities
(and to the rule's `where`), as plain strings: testing a few thousand ids against every
row's string is several times cheaper than unifying the dictionaries of minutes of logs
(over a million distinct user ids in five minutes at 20,000 events/s)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from vigil.detect.engine import EVIDENCE, epoch_us, may_fire, recent_reach, to_frame
from vigil.detect.frames import micros
from vigil.detect.past_cache import KEEP_LIMIT, PastCache
from vigil.detect.recent_rows import RecentRows
from vigil.detect.rules import Rule
from vigil.lake import GROUPING_FIELDS, Lake, RawFiles, raw_schema, scan_events

# Past this many entities in a batch (a whole bucket recomputed) the past is read whole.
NARROW_LIMIT = 100_000


class TopicReads:
    def __init__(self, lake: Lake, spans: dict[str, tuple[datetime, datetime]],
                 cache: PastCache | None = None, recent: RecentRows | None = None) -> None:
        """`spans`: per topic, the widest [start, end) any read of this run will ask for;
        `cache`: where the long pasts of a few entities are kept between runs; `recent`:
        where the last minutes of each topic are."""
        self._files = {topic: RawFiles(lake, topic, start, end)
                       for topic, (start, end) in spans.items()}
        self._cache = cache
        self._recent = recent

    def table(self, rules: list[Rule], start: datetime, end: datetime) -> pa.Table:
        """Events of the rules' topic in [start, end) with the columns they read, grouping
        columns as Arrow dictionaries (one per column), ordered by time."""
        return scan_events(self._files[rules[0].topic].dataset(start, end, dictionary=True),
                           start, end, read_columns(rules), dictionary=True)

    def narrowed(self, rules: list[Rule], start: datetime, end: datetime,
                 entities: dict[str, pa.Array], where: pads.Expression | None = None
                 ) -> pa.Table:
        """Like `table`, only rows of the `entities` listed (each group column's values: a
        superset of the entities when there are several columns) that also meet `where`."""
        topic = rules[0].topic
        condition = entity_filter(entities)
        if where is not None:
            condition = condition & where
        rows = scan_events(self._files[topic].dataset(start, end), start, end,
                           read_columns(rules), where=condition)
        return as_dictionaries(rows, raw_schema(topic, dictionary=True))

    def past(self, rules: list[Rule], start: datetime, end: datetime,
             entities: dict[str, pa.Array], head: datetime) -> pa.Table:
        """`narrowed` (no `where`) for a few entities' long look-back: from the rows kept
        by earlier runs where they still hold, else from the lake (past_cache.py).
        `head`: the first event of the batch being detected."""
        if self._cache is None or len(entities) != 1:  # several columns: a superset
            return self.narrowed(rules, start, end, entities)
        ((column, values),) = entities.items()
        if values.null_count or not pa.types.is_string(values.type) or len(values) > KEEP_LIMIT:
            return self.narrowed(rules, start, end, entities)
        topic, columns = rules[0].topic, read_columns(rules)
        files = self._files[topic]

        def scan(low: datetime, high: datetime, values: pa.Array, only: set[str] | None
                 ) -> pa.Table:
            return scan_events(files.dataset(low, high, only=only), low, high, columns,
                               where=entity_filter({column: values}))

        rows = self._cache.read(topic, column, columns, values, start, end, head,
                                files.names, scan)
        return as_dictionaries(rows, raw_schema(topic, dictionary=True))

    def with_past(self, rules: list[Rule], batch: pa.Table, since: datetime,
                  head: datetime) -> pd.DataFrame:
        """The `batch` (a `table` from `head` on) with, before it, the past each rule's
        first read needs (`recent_reach` before `since`) of the entities in the batch from
        `since` on that any of the rules could fire at (`may_fire`). The rules share their
        group columns and pushed-down `where`."""
        columns = read_columns(rules)
        recent = batch.select(columns)
        needing = [r for r in rules if recent_reach(r) > 0]
        if not needing or recent.num_rows == 0:
            return to_frame(recent)
        start = min(since - pd.Timedelta(seconds=recent_reach(r)) for r in needing)
        if start >= head:
            return to_frame(recent)
        frame = to_frame(recent)
        detected = micros(frame) >= epoch_us(since)
        firing = np.logical_or.reduce([may_fire(r, frame) for r in needing])
        entities = distinct(recent.filter(pa.array(detected & firing)), rules[0].group_by)
        if all(len(values) == 0 for values in entities.values()):
            return frame
        where = pushed_where(rules[0])
        if max(len(values) for values in entities.values()) <= NARROW_LIMIT:
            past = self._recent_past(rules, start, head, entities, where)
        else:  # a whole bucket recomputed: a filter this long costs more than it saves
            past = scan_events(self._files[rules[0].topic].dataset(start, head, dictionary=True),
                               start, head, columns, dictionary=True, where=where)
        # The past ends before `head`: both parts in time order, so is their concatenation.
        joined = pa.concat_tables([past.select(columns), recent]).unify_dictionaries()
        return to_frame(joined)


    def _recent_past(self, rules: list[Rule], start: datetime, head: datetime,
                     entities: dict[str, pa.Array], where: pads.Expression | None
                     ) -> pa.Table:
        """`narrowed` over [start, head), from the kept last minutes once they reach back
        to `start` (recent_rows.py)."""
        if self._recent is not None:
            rows = self._recent.read(self._files[rules[0].topic], read_columns(rules), where,
                                     start, head, entity_filter(entities))
            if rows is not None:
                return as_dictionaries(rows, raw_schema(rules[0].topic, dictionary=True))
        return self.narrowed(rules, start, head, entities, where)


def read_columns(rules: list[Rule]) -> list[str]:
    return sorted(set().union(*(r.columns() for r in rules)) | set(EVIDENCE))


def pushed_where(rule: Rule) -> pads.Expression | None:
    """The rule's `where` as a scan filter, for the rule types whose firings apply it to
    every row (a forest or likelihood rule does not; neither is pushed down)."""
    if rule.where is None or rule.type not in ("window_count", "baseline_ratio", "sustained"):
        return None
    if not set(rule.where.columns()) <= GROUPING_FIELDS:  # string columns: `in` compares alike
        return None
    return rule.where.expression()


def share_key(rule: Rule) -> tuple[tuple[str, ...], str]:
    """Rules with equal keys share one narrowed read of the past."""
    where = pushed_where(rule)
    return rule.group_by, "" if where is None else str(where)


def distinct(table: pa.Table, columns: tuple[str, ...]) -> dict[str, pa.Array]:
    """Each column's distinct values (decoded from a dictionary; null among them if any)."""
    found = {}
    for name in columns:
        values = pc.unique(table.column(name))
        found[name] = values.dictionary_decode() if pa.types.is_dictionary(values.type) \
            else values
    return found


def entity_filter(entities: dict[str, pa.Array]) -> pads.Expression:
    """Rows whose every group column holds one of its listed values: a superset of the
    listed entities when they have several columns, which is safe for its callers."""
    condition: pads.Expression | None = None
    for name, values in entities.items():
        present = values.drop_null()
        field = pads.field(name)
        test = field.isin(present) if len(present) else field.is_null()
        if len(present) and values.null_count:
            test = test | field.is_null()
        condition = test if condition is None else condition & test
    assert condition is not None, "entities need at least one column"
    return condition


def as_dictionaries(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A plain read cast to the dictionary read's types (a small, narrowed table)."""
    columns = []
    for name in table.column_names:
        column = table.column(name)
        wanted = schema.field(name).type
        if pa.types.is_dictionary(wanted) and not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column.combine_chunks()).cast(wanted)
        columns.append(column)
    return pa.table(columns, schema=pa.schema([schema.field(n) for n in table.column_names]))
