"""Detection rules as data: parsed from YAML, validated with errors that name rule and field."""

from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import yaml

from vigil.detect.likelihood import LikelihoodSpec
from vigil.events import EVENT_TYPES

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")
LEVELS = ("info", "warning", "critical")
TYPES = ("threshold", "window_count", "sustained", "baseline_ratio", "isolation_forest",
         "anomaly_likelihood")
BASELINES = ("entity", "global")
_OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal,
        "==": np.equal, "!=": np.not_equal}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class RuleError(ValueError):
    """A rule file that cannot be used; the message names the rule and the field."""


def dictionary_parts(column: pd.Series) -> tuple[pd.Series, np.ndarray] | None:
    """(distinct values, each row's code with -1 for null) of a dictionary-encoded column —
    a pandas categorical or an Arrow dictionary as read from the lake; None otherwise."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return pd.Series(column.cat.categories), column.cat.codes.to_numpy(np.int64)
    if isinstance(column.dtype, pd.ArrowDtype) and pa.types.is_dictionary(
            column.dtype.pyarrow_dtype):
        chunked = column.array._pa_array
        array = chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)
        codes = array.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return array.dictionary.to_pandas(), codes
    return None


@dataclass(frozen=True)
class Condition:
    """A per-event boolean test; a tree of all_of / any_of over column tests."""

    spec: dict[str, Any]

    def columns(self) -> list[str]:
        if "all_of" in self.spec or "any_of" in self.spec:
            parts = self.spec.get("all_of") or self.spec.get("any_of") or []
            return [c for part in parts for c in Condition(part).columns()]
        return [self.spec["column"]]

    def expression(self) -> pads.Expression | None:
        """The same test as a scan filter, where Arrow's answers equal `mask`'s for every
        row (`in` and `not_null`, combined); None for any other test."""
        spec = self.spec
        combined = spec.get("all_of") or spec.get("any_of")
        if combined is not None:
            parts = [Condition(p).expression() for p in combined]
            if not parts or any(p is None for p in parts):
                return None
            join = operator.and_ if "all_of" in spec else operator.or_
            return functools.reduce(join, parts)
        field = pads.field(spec["column"])
        if "in" in spec and all(isinstance(v, str) for v in spec["in"]):
            return field.isin(pa.array(spec["in"], pa.string()))
        if "not_null" in spec:
            return field.is_valid() if spec["not_null"] else field.is_null()
        return None

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        spec = self.spec
        if "all_of" in spec:
            return np.logical_and.reduce([Condition(p).mask(frame) for p in spec["all_of"]])
        if "any_of" in spec:
            return np.logical_or.reduce([Condition(p).mask(frame) for p in spec["any_of"]])
        column = frame[spec["column"]]
        distinct = dictionary_parts(column)
        if distinct is not None:
            # Test each distinct value once (and null once), then spread the answers by code.
            values, codes = distinct
            tested = pd.concat([values, pd.Series([None], dtype=values.dtype)],
                               ignore_index=True)
            answers = Condition(spec).mask(pd.DataFrame({spec["column"]: tested}))
            return answers[codes]  # code -1 (null) picks the answer for null, appended last
        if "op" in spec:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
            with np.errstate(invalid="ignore"):
                result: np.ndarray = _OPS[spec["op"]](values, float(spec["value"]))
            return result & ~np.isnan(values)
        if "in" in spec:
            return column.isin(spec["in"]).to_numpy()
        if "not_null" in spec:
            present = column.notna().to_numpy()
            return present if spec["not_null"] else ~present
        text = column.astype("string")
        case = bool(spec.get("case_sensitive", False))
        if "contains" in spec:
            found = text.str.contains(str(spec["contains"]), case=case, regex=False)
        else:
            found = text.str.contains(str(spec["matches"]), case=case, regex=True)
        return found.fillna(False).to_numpy(dtype=bool)


@dataclass(frozen=True)
class ForestSpec:
    """An isolation_forest rule's model: which features, trained on how much history."""

    features: tuple[str, ...]  # "col", "log:col", "count:5m", "gap:5m"
    training: float  # seconds of history before the hour that train its model
    min_training: int  # fewer training rows than this: the hour is not scored
    max_training: int  # training rows sampled (evenly in time) from the history
    trees: int
    quantile: float  # fire above this quantile of the training scores ...
    min_score: float  # ... and never below this score ...
    min_deviation: float  # ... with a feature this many robust sigmas from usual
    baseline: str  # entity: features relative to each entity's own history; global

    def feature_window(self, feature: str) -> float:
        kind, _, arg = feature.partition(":")
        return seconds(arg, "", feature) if kind in ("count", "gap") else 0.0

    def source_columns(self) -> set[str]:
        return {f.partition(":")[2] if f.startswith("log:") else f
                for f in self.features if f.partition(":")[0] not in ("count", "gap")}


@dataclass(frozen=True)
class Rule:
    name: str
    topic: str
    type: str
    level: str
    group_by: tuple[str, ...]
    realert: float  # seconds
    title: str
    condition: Condition | None = None  # threshold, sustained
    where: Condition | None = None  # window_count, baseline_ratio
    window: float = 0.0
    threshold: float = 0.0
    duration: float = 0.0
    max_gap: float = 0.0
    longest: float = 0.0  # sustained: runs are reported up to this long
    baseline: float = 0.0
    ratio: float = 0.0
    min_count: float = 0.0
    value_column: str | None = None
    forest: ForestSpec | None = None  # isolation_forest
    likelihood: LikelihoodSpec | None = None  # anomaly_likelihood
    enabled: bool = True  # a disabled rule is validated and evaluated, never run

    @property
    def detector(self) -> str:
        if self.likelihood is not None:
            return "anomaly_likelihood"
        return "isolation_forest" if self.forest is not None else "rules"

    @property
    def lookback(self) -> float:
        """How far before a detected hour the rule must read to decide its first event."""
        if self.forest is not None:  # its features' windows; training reads separately
            return max(self.forest.feature_window(f) for f in self.forest.features)
        if self.likelihood is not None:
            return self.likelihood.lookback
        # A sustained run's reported length is capped at `longest`, so reading `longest +
        # max_gap` back is enough for any read span to give the same value.
        return max(self.window + self.baseline, max(self.duration, self.longest) + self.max_gap)

    def columns(self) -> set[str]:
        used = set(self.group_by) | {"timestamp"}
        for cond in (self.condition, self.where):
            if cond is not None:
                used |= set(cond.columns())
        if self.value_column:
            used.add(self.value_column)
        if self.forest is not None:
            used |= self.forest.source_columns()
        if self.likelihood is not None:
            used.add(self.likelihood.column)
        return used


def seconds(text: Any, rule: str, field: str) -> float:
    match = _DURATION.match(str(text))
    if not match:
        raise RuleError(f"rule {rule!r}: {field}={text!r} is not a duration like 90s, 3m, 1h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def load_rules(path: Path = DEFAULT_RULES, include_disabled: bool = False) -> list[Rule]:
    """The rules the pipeline runs; with `include_disabled`, also those switched off
    (`enabled: false`), which `vigil rules check` and `vigil evaluate` still look at."""
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RuleError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise RuleError(f"{path}: expected a top-level 'rules:' list")
    rules = [parse_rule(entry) for entry in document["rules"]]
    names = [r.name for r in rules]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise RuleError(f"{path}: rule names must be unique; repeated: {', '.join(duplicated)}")
    return [r for r in rules if include_disabled or r.enabled]


def parse_rule(entry: Any) -> Rule:
    if not isinstance(entry, dict) or not entry.get("name"):
        raise RuleError(f"every rule needs a name; got {entry!r}")
    name = str(entry["name"])

    def need(field: str) -> Any:
        if field not in entry:
            raise RuleError(f"rule {name!r}: missing {field!r}")
        return entry[field]

    topic, kind, level = need("topic"), need("type"), need("level")
    if topic not in EVENT_TYPES:
        raise RuleError(f"rule {name!r}: topic {topic!r} is not one of {', '.join(EVENT_TYPES)}")
    if kind not in TYPES:
        raise RuleError(f"rule {name!r}: type {kind!r} is not one of {', '.join(TYPES)}")
    if level not in LEVELS:
        raise RuleError(f"rule {name!r}: level {level!r} is not one of {', '.join(LEVELS)}")
    fields = set(EVENT_TYPES[topic].names)
    group_by = tuple(need("group_by"))
    for column in group_by:
        if column not in fields:
            raise RuleError(f"rule {name!r}: group_by column {column!r} is not a {topic} field")
    realert = seconds(entry.get("realert", "10m"), name, "realert")
    if realert > 3600 or 3600 % realert:
        # Buckets then never straddle an hour: detecting hour H recomputes its anomalies whole.
        raise RuleError(f"rule {name!r}: realert={entry.get('realert')!r} must divide an hour "
                        "(e.g. 1m, 5m, 10m, 15m, 30m, 1h)")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError(f"rule {name!r}: enabled={enabled!r} must be true or false")
    rule_args: dict[str, Any] = {
        "name": name, "topic": topic, "type": kind, "level": level, "group_by": group_by,
        "realert": realert, "enabled": enabled,
        "title": str(need("title")),
    }
    if kind in ("threshold", "sustained"):
        rule_args["condition"] = _condition(need("condition"), name, "condition", fields)
    if "where" in entry:
        rule_args["where"] = _condition(entry["where"], name, "where", fields)
    if kind in ("window_count", "baseline_ratio"):
        rule_args["window"] = seconds(need("window"), name, "window")
    if kind == "window_count":
        rule_args["threshold"] = _number(need("threshold"), name, "threshold")
    if kind == "sustained":
        rule_args["duration"] = seconds(need("duration"), name, "duration")
        rule_args["max_gap"] = seconds(entry.get("max_gap", "2m"), name, "max_gap")
        rule_args["longest"] = max(seconds(entry.get("longest", "30m"), name, "longest"),
                                   rule_args["duration"])
    if kind == "baseline_ratio":
        rule_args["baseline"] = seconds(need("baseline"), name, "baseline")
        rule_args["ratio"] = _number(need("ratio"), name, "ratio")
        rule_args["min_count"] = _number(entry.get("min_count", 1), name, "min_count")
    if kind == "isolation_forest":
        rule_args["forest"] = _forest(entry, name, topic)
    if kind == "anomaly_likelihood":
        rule_args["likelihood"] = _likelihood(entry, name, topic)
        rule_args["threshold"] = _number(entry.get("threshold", 1.5), name, "threshold")
        rule_args["value_column"] = None  # the value is the surprise, not the measurement
    value_column = entry.get("value_column")
    if value_column is None and rule_args.get("condition") is not None:
        numeric = [c for c in rule_args["condition"].columns() if c in _numeric_fields(topic)]
        value_column = numeric[-1] if numeric else None
    if value_column is not None and value_column not in fields:
        raise RuleError(f"rule {name!r}: value_column {value_column!r} is not a {topic} field")
    rule_args["value_column"] = value_column
    return Rule(**rule_args)


def _forest(entry: dict[str, Any], rule: str, topic: str) -> ForestSpec:
    features = entry.get("features")
    if not isinstance(features, list) or not features:
        raise RuleError(f"rule {rule!r}: features must be a non-empty list, e.g. "
                        "[cpu_percent, log:latency_ms, count:5m]")
    numeric = _numeric_fields(topic)
    for feature in map(str, features):
        kind, _, arg = feature.partition(":")
        if kind in ("count", "gap"):
            seconds(arg, rule, f"features {feature!r}")
        elif (arg if kind == "log" else feature) not in numeric:
            raise RuleError(f"rule {rule!r}: feature {feature!r} is not a numeric {topic} "
                            f"field ({', '.join(sorted(numeric))}), log:<field>, count:<window> "
                            "or gap:<window>")
    baseline = str(entry.get("baseline", "entity"))
    if baseline not in BASELINES:
        raise RuleError(f"rule {rule!r}: baseline {baseline!r} is not one of "
                        f"{', '.join(BASELINES)}")
    quantile = _number(entry.get("quantile", 0.9), rule, "quantile")
    if not 0 < quantile < 1:
        raise RuleError(f"rule {rule!r}: quantile={quantile} must be between 0 and 1")
    return ForestSpec(
        features=tuple(map(str, features)),
        training=seconds(entry.get("training", "2h"), rule, "training"),
        min_training=int(_number(entry.get("min_training", 500), rule, "min_training")),
        max_training=int(_number(entry.get("max_training", 20000), rule, "max_training")),
        trees=int(_number(entry.get("trees", 100), rule, "trees")),
        quantile=quantile,
        min_score=_number(entry.get("min_score", 0.5), rule, "min_score"),
        min_deviation=_number(entry.get("min_deviation", 6), rule, "min_deviation"),
        baseline=baseline)


def _likelihood(entry: dict[str, Any], rule: str, topic: str) -> LikelihoodSpec:
    column = entry.get("column")
    numeric = _numeric_fields(topic)
    if column not in numeric:
        raise RuleError(f"rule {rule!r}: column {column!r} is not a numeric {topic} field "
                        f"({', '.join(sorted(numeric))})")
    points = {}
    for field in ("baseline_points", "average_points", "history_points", "warmup_points",
                  "quiet_points"):
        if field in entry:
            value = _number(entry[field], rule, field)
            if value < 1 or value != int(value):
                raise RuleError(f"rule {rule!r}: {field}={entry[field]!r} must be a whole "
                                "number of points >= 1")
            points[field] = int(value)
    spec = LikelihoodSpec(column=str(column), **points,
                          cap=_number(entry.get("cap", 20), rule, "cap"),
                          min_spread=_number(entry.get("min_spread", 0.05), rule, "min_spread"),
                          lookback=seconds(entry.get("lookback", "12h"), rule, "lookback"))
    if spec.warmup_points > min(spec.baseline_points, spec.history_points):
        raise RuleError(f"rule {rule!r}: warmup_points={spec.warmup_points} must not exceed "
                        "baseline_points or history_points")
    return spec


def _numeric_fields(topic: str) -> set[str]:
    import pyarrow as pa

    return {f.name for f in EVENT_TYPES[topic].fields if pa.types.is_floating(f.type)}


def _number(value: Any, rule: str, field: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RuleError(f"rule {rule!r}: {field}={value!r} is not a number") from None


def _condition(spec: Any, rule: str, field: str, columns: set[str]) -> Condition:
    if not isinstance(spec, dict):
        raise RuleError(f"rule {rule!r}: {field} must be a mapping, got {spec!r}")
    for combinator in ("all_of", "any_of"):
        if combinator in spec:
            parts = spec[combinator]
            if not isinstance(parts, list) or not parts:
                raise RuleError(f"rule {rule!r}: {field}.{combinator} needs a list of conditions")
            for part in parts:
                _condition(part, rule, f"{field}.{combinator}", columns)
            return Condition(spec)
    column = spec.get("column")
    if column not in columns:
        raise RuleError(f"rule {rule!r}: {field} column {column!r} is not a field of the topic")
    tests = [k for k in ("op", "in", "not_null", "contains", "matches") if k in spec]
    if len(tests) != 1:
        raise RuleError(f"rule {rule!r}: {field} needs exactly one of op, in, not_null, "
                        f"contains, matches; got {sorted(spec)}")
    if "op" in spec:
        if spec["op"] not in _OPS:
            raise RuleError(f"rule {rule!r}: {field} op {spec['op']!r} is not one of "
                            f"{' '.join(_OPS)}")
        _number(spec.get("value"), rule, f"{field}.value")
    if "matches" in spec:
        try:
            re.compile(str(spec["matches"]))
        except re.error as exc:
            raise RuleError(f"rule {rule!r}: {field} pattern is not a regex: {exc}") from None
    return Condition(spec)
