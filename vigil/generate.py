"""Synthetic event streams with injected, labelled anomaly scenarios.

The world: 24 services on 2-4 hosts each in three regions, a user population sized so that
an ordinary user stays far below the per-user rules (about 0.3 transactions per 5 minutes),
2,000 merchants, daily load cycles in the metrics, noisy values, heavy-tailed amounts.

Deterministic: a stream is a pure function of (seed, start, rates, scenarios, horizon).
Time is cut into one-second slices and slice k of a topic draws from its own generator
seeded with (seed, topic, k), so output does not depend on how a consumer paces or batches.

Scenarios repeat every `horizon` seconds (the run's duration, or an hour for endless runs);
each placement yields one ground-truth Label. The baseline is kept clear of the fixed rules
on purpose — no baseline log says "failed", no baseline amount exceeds 9,500, no baseline
host sustains 80 % CPU — so every alert of those rules maps to a labelled scenario.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vigil.events import EVENT_TYPES, TIMESTAMP, EventType

SLICE_SECONDS = 1
_TOPIC_INDEX = {"logs": 1, "metrics": 2, "transactions": 3}

# name, base latency (ms), relative log volume, user-facing
_SERVICES: tuple[tuple[str, float, float, bool], ...] = (
    ("api-gateway", 45, 6.0, True), ("auth", 120, 3.0, True), ("payments-api", 150, 3.0, True),
    ("checkout", 130, 2.5, True), ("cart", 60, 2.5, True), ("catalog", 80, 2.0, True),
    ("search", 110, 2.5, True), ("recommendations", 170, 1.5, True),
    ("user-profile", 70, 1.5, True), ("notifications", 90, 1.0, False),
    ("email-sender", 160, 0.6, False), ("inventory", 95, 1.2, False),
    ("shipping", 140, 0.8, True), ("pricing", 55, 1.0, False), ("fraud-scoring", 120, 1.2, False),
    ("ledger", 100, 0.8, False), ("reporting", 180, 0.4, False), ("media-cdn", 35, 1.5, True),
    ("session-store", 25, 1.0, False), ("feature-flags", 30, 0.5, False),
    ("billing", 125, 0.7, True), ("support-desk", 150, 0.3, True),
    ("audit-log", 65, 0.6, False), ("webhooks", 115, 0.5, False),
)
_REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
# country, currency, share of users
_COUNTRIES: tuple[tuple[str, str, float], ...] = (
    ("US", "USD", 0.34), ("GB", "GBP", 0.12), ("DE", "EUR", 0.11), ("FR", "EUR", 0.09),
    ("ES", "EUR", 0.05), ("IT", "EUR", 0.05), ("NL", "EUR", 0.04), ("CA", "CAD", 0.06),
    ("AU", "AUD", 0.04), ("JP", "JPY", 0.04), ("SE", "SEK", 0.03), ("IE", "EUR", 0.03),
)
_UNUSUAL_COUNTRIES = ("NG", "VN", "BR", "ID", "PK", "RO")
_MERCHANT_CATEGORIES = ("grocery", "electronics", "travel", "fashion", "restaurants", "gaming",
                        "digital-goods", "pharmacy", "fuel", "home")
_PAYMENT_METHODS = (("card", 0.70), ("wallet", 0.18), ("bank_transfer", 0.10), ("crypto", 0.02))
_STATUSES = (("approved", 0.93), ("declined", 0.05), ("pending", 0.015), ("refunded", 0.005))
_MERCHANTS = 2000
_ERRORS_PER_SERVICE_PER_SECOND = 1.0 / 120  # ~1.5 per 3 minutes: far below a 20-in-3 spike

# (prefix, suffix) around a number; a message is prefix + number + suffix.
_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "DEBUG": (("db pool stats: active connections=", ""), ("cache lookup took ", " us"),
              ("feature flag evaluation cost ", " us")),
    "INFO": (("request completed in ", " ms"), ("GET /api/v1/orders returned 200 in ", " ms"),
             ("processed batch of ", " items"), ("session refreshed, ttl ", " s"),
             ("POST /api/v1/cart returned 201 in ", " ms"), ("cache hit ratio ", " %")),
    "WARNING": (("slow query took ", " ms"), ("retry budget at ", " %"),
                ("queue depth ", " above soft limit")),
    "ERROR": (("upstream timeout after ", " ms"), ("database connection reset (code ", ")"),
              ("unhandled exception in worker ", ""), ("HTTP 503 from dependency after ", " ms")),
    "CRITICAL": (("out of memory: heap at ", " %"), ("circuit breaker open, dependency shard ", ""),
                 ("disk almost full: ", " % used")),
}
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _hash_u64(values: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 of (values + salt): per-entity attributes without storing a population."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(salt & 0xFFFFFFFFFFFFFFFF)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _unit(values: np.ndarray, salt: int) -> np.ndarray:
    return (_hash_u64(values, salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def _hex(raw: np.ndarray) -> np.ndarray:
    """(n, k) uint8 -> n hex strings of 2k characters, vectorised."""
    return _HEX[raw].view(f"S{2 * raw.shape[1]}").ravel()


def _uuids(rng: np.random.Generator, n: int) -> pa.Array:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    h = _hex(raw).view(np.uint8).reshape(n, 32)
    dashed = np.full((n, 36), ord("-"), dtype=np.uint8)
    dashed[:, :8], dashed[:, 9:13], dashed[:, 14:18] = h[:, :8], h[:, 8:12], h[:, 12:16]
    dashed[:, 19:23], dashed[:, 24:] = h[:, 16:20], h[:, 20:]
    return pa.array(dashed.view("S36").ravel(), pa.binary(36)).cast(pa.string())


def _numbers(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def _labels(prefix: str, numbers: np.ndarray, width: int = 0) -> pa.Array:
    """prefix + zero-padded number, built in Arrow (numpy's char functions are slow)."""
    text = _numbers(numbers)
    if width:
        text = pc.utf8_lpad(text, width, "0")
    return pc.binary_join_element_wise(prefix, text, "")


_DICTIONARIES: dict[int, tuple[object, pa.Array]] = {}


def _take(names: np.ndarray | tuple[str, ...], index: np.ndarray) -> pa.Array:
    """Names picked by index: a take from a small dictionary, not n Python strings."""
    cached = _DICTIONARIES.get(id(names))
    if cached is None or cached[0] is not names:
        cached = (names, pa.array(list(names), pa.string()))
        if isinstance(names, tuple) or len(_DICTIONARIES) < 256:
            _DICTIONARIES[id(names)] = cached
    return cached[1].take(pa.array(np.asarray(index, dtype=np.int64)))


def _hex_strings(rng: np.random.Generator, n: int, nbytes: int) -> pa.Array:
    raw = _hex(rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8))
    return pa.array(raw, pa.binary(2 * nbytes)).cast(pa.string())


@dataclass(frozen=True)
class Label:
    """Ground truth for one injected scenario."""

    scenario: str
    topic: str
    entity_field: str  # which event field names the entity: service, host or user_id
    entity: str
    start: datetime
    end: datetime
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "topic": self.topic,
                "entity_field": self.entity_field, "entity": self.entity,
                "start": self.start.isoformat().replace("+00:00", "Z"),
                "end": self.end.isoformat().replace("+00:00", "Z"), "details": self.details}


class World:
    """Services, hosts, users and merchants; fixed for a seed."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 0])
        self.seed = seed
        self.service_names = np.array([s[0] for s in _SERVICES])
        self.service_latency = np.array([s[1] for s in _SERVICES], dtype=np.float64)
        volume = np.array([s[2] for s in _SERVICES])
        self.service_weight = volume / volume.sum()
        self.service_user_facing = np.array([s[3] for s in _SERVICES])
        hosts_per_service = rng.integers(2, 5, size=len(_SERVICES))
        self.host_service = np.repeat(np.arange(len(_SERVICES)), hosts_per_service)
        self.host_first = np.concatenate([[0], np.cumsum(hosts_per_service)[:-1]])
        self.hosts_per_service = hosts_per_service
        n_hosts = len(self.host_service)
        self.host_region = rng.integers(0, len(_REGIONS), size=n_hosts)
        suffix = rng.integers(0x1000, 0xFFFF, size=n_hosts)
        self.host_names = np.array([
            f"{self.service_names[s]}-{_REGIONS[r].split('-')[0]}{_REGIONS[r][-1]}-{x:04x}"
            for s, r, x in zip(self.host_service, self.host_region, suffix, strict=True)])
        self.host_cpu = rng.uniform(12, 35, size=n_hosts)
        self.host_memory = rng.uniform(30, 55, size=n_hosts)
        self.host_latency_factor = rng.uniform(0.9, 1.1, size=n_hosts)
        self.host_rps = rng.uniform(40, 400, size=n_hosts)
        self.country_codes = np.array([c[0] for c in _COUNTRIES])
        self.country_currency = np.array([c[1] for c in _COUNTRIES])
        shares = np.array([c[2] for c in _COUNTRIES])
        self.country_cdf = np.cumsum(shares / shares.sum())

    @property
    def n_hosts(self) -> int:
        return len(self.host_service)

    def user_country(self, users: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.country_cdf, _unit(users, self.seed * 31 + 7), side="right")

    def user_amount_scale(self, users: np.ndarray) -> np.ndarray:
        return 12.0 * np.exp(2.2 * _unit(users, self.seed * 31 + 11))  # median spend 12-108

    def merchant_category(self, merchants: np.ndarray) -> pa.Array:
        pick = (_unit(merchants, self.seed * 31 + 13) * len(_MERCHANT_CATEGORIES)).astype(int)
        return _take(_MERCHANT_CATEGORIES, pick)


def daily_load(epoch_seconds: np.ndarray) -> np.ndarray:
    """0.2 at 04:00 UTC to 1.0 at 16:00 UTC."""
    hours = (epoch_seconds / 3600.0) % 24
    return 0.6 + 0.4 * np.sin(2 * np.pi * (hours - 10) / 24)


# ------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Placement:
    """Where and when one scenario instance happens."""

    scenario: str
    start: float  # epoch seconds
    end: float
    entity: int  # host, service or user index
    rng_seed: tuple[int, ...]


@dataclass(frozen=True)
class Scenario:
    name: str
    topic: str
    entity_kind: str  # host | service | user
    seconds: float  # nominal duration, shrunk to fit short streams
    description: str


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("error_burst", "logs", "service", 180,
             "40 ERROR logs on one service within 3 minutes"),
    Scenario("failed_login_storm", "logs", "user", 300,
             "30 'Login failed' logs for one user within 5 minutes"),
    Scenario("user_log_spike", "logs", "user", 600,
             "one user's log volume jumps to ~40 per minute for 10 minutes"),
    Scenario("cpu_sustained", "metrics", "host", 480, "CPU 85-97 % on one host for 8 minutes"),
    Scenario("latency_spike", "metrics", "host", 180,
             "latency 1,200-2,500 ms on one host for 3 minutes"),
    Scenario("cpu_latency", "metrics", "host", 360,
             "CPU 85-97 % and latency 1,100-2,000 ms together on one host for 6 minutes"),
    Scenario("latency_shift", "metrics", "host", 1800,
             "latency level shift from ~120 ms to ~400 ms on one host for 30 minutes"),
    Scenario("cpu_creep", "metrics", "host", 3600,
             "CPU creeping from its baseline up to 76 % over an hour (never 80 %)"),
    Scenario("memory_leak", "metrics", "host", 3600,
             "memory climbing from its baseline to 96 % over an hour"),
    Scenario("large_amount", "transactions", "user", 1,
             "one transaction of 12,000-60,000"),
    Scenario("rapid_fire", "transactions", "user", 240,
             "25 transactions by one user within 4 minutes"),
    Scenario("card_testing", "transactions", "user", 600,
             "40 small (0.50-2.00) attempts at 40 merchants in 10 minutes, mostly declined"),
    Scenario("unusual_country", "transactions", "user", 1200,
             "3 transactions from a country far from the user's home within 20 minutes"),
)}


def resolve_scenarios(names: list[str]) -> tuple[str, ...]:
    """Validate scenario names; 'all' selects every scenario."""
    if "all" in names:
        return tuple(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario {unknown[0]!r}: choose from "
                         f"{', '.join(SCENARIOS)} or 'all'")
    return tuple(dict.fromkeys(names))


# ------------------------------------------------------------------------------- the stream


@dataclass(frozen=True)
class StreamSpec:
    seed: int
    start: datetime
    rates: dict[str, float]  # events per second of event time, per topic
    scenarios: tuple[str, ...] = ()
    horizon: float = 3600.0  # scenarios are placed once per horizon

    def __post_init__(self) -> None:
        for topic, rate in self.rates.items():
            if topic not in EVENT_TYPES:
                raise ValueError(f"unknown topic {topic!r}")
            if not rate > 0:
                raise ValueError(f"rate for {topic} must be > 0, got {rate}")


class SyntheticStream:
    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.world = World(spec.seed)
        self.t0 = spec.start.astimezone(UTC).timestamp()
        self._placements: dict[int, list[Placement]] = {}
        self._extra: dict[tuple[str, tuple[int, ...]], pa.Table] = {}

    # --- users: population scaled to traffic, see module docstring
    def population(self, topic: str) -> int:
        rate = self.spec.rates.get(topic, 1.0)
        return max(5000, int(rate * 1000))

    def user_ids(self, users: np.ndarray) -> pa.Array:
        return _labels("u", users, 7)

    # --- scenarios
    def cycle_of(self, second: float) -> int:
        return int(second // self.spec.horizon)

    def placements(self, cycle: int) -> list[Placement]:
        if cycle not in self._placements:
            self._placements[cycle] = self._place(cycle)
        return self._placements[cycle]

    def _place(self, cycle: int) -> list[Placement]:
        spec, world = self.spec, self.world
        rng = np.random.default_rng([spec.seed, 99, cycle])
        horizon = spec.horizon
        hosts = rng.permutation(world.n_hosts)
        services = list(rng.permutation(len(_SERVICES)))
        out: list[Placement] = []
        for i, name in enumerate(spec.scenarios):
            scenario = SCENARIOS[name]
            if scenario.topic not in spec.rates:
                continue
            seconds = min(scenario.seconds, max(1.0, 0.3 * horizon))
            offset = rng.uniform(0.05 * horizon, max(0.05 * horizon, 0.95 * horizon - seconds))
            start = self.t0 + cycle * horizon + offset
            if scenario.entity_kind == "host":  # one scenario per host, so labels stay clean
                entity = self._host_for(name, hosts)
                hosts = hosts[hosts != entity]
            elif scenario.entity_kind == "service":
                entity = int(services.pop(0))
            else:
                entity = int(rng.integers(0, self.population(scenario.topic)))
            out.append(Placement(name, start, start + seconds, entity,
                                 (spec.seed, 77, cycle, i)))
        return out

    def _host_for(self, name: str, candidates: np.ndarray) -> int:
        if name == "latency_shift":  # a ~120 ms service, so the shift to 400 ms is subtle
            near = np.abs(self.world.service_latency[self.world.host_service[candidates]] - 120)
            return int(candidates[np.argmin(near)])
        return int(candidates[0])

    def labels(self, cycle: int) -> list[Label]:
        return [self._label(p) for p in self.placements(cycle)]

    def _label(self, p: Placement) -> Label:
        scenario, world = SCENARIOS[p.scenario], self.world
        entity_field = {"host": "host", "service": "service", "user": "user_id"}[
            scenario.entity_kind]
        details: dict[str, Any] = {"description": scenario.description}
        if scenario.entity_kind == "host":
            entity = str(world.host_names[p.entity])
            details["service"] = str(world.service_names[world.host_service[p.entity]])
        elif scenario.entity_kind == "service":
            entity = str(world.service_names[p.entity])
        else:
            entity = str(self.user_ids(np.array([p.entity]))[0].as_py())
        if scenario.topic in ("logs", "transactions"):
            table = self._scenario_events(p)
            times = table.column("timestamp").to_numpy().astype("datetime64[us]").astype(
                np.int64) / 1e6
            start, end = float(times.min()), float(times.max())
            details["events"] = table.num_rows
            if p.scenario == "unusual_country":
                details["home_country"] = str(world.country_codes[
                    world.user_country(np.array([p.entity]))[0]])
                details["country"] = table.column("country")[0].as_py()
        else:
            start, end = p.start, p.end
        return Label(p.scenario, scenario.topic, entity_field, entity,
                     _dt(start), _dt(end), details)

    # --- slices
    def slice_count(self, topic: str, k: int) -> int:
        rate = self.spec.rates[topic]
        return int(math.floor(rate * (k + 1)) - math.floor(rate * k))

    def slice(self, topic: str, k: int) -> pa.Table:
        """Events of `topic` with event time in [start + k s, start + (k + 1) s)."""
        rng = np.random.default_rng([self.spec.seed, _TOPIC_INDEX[topic], k])
        n = self.slice_count(topic, k)
        times = self.t0 + k + np.sort(rng.random(n))
        base = _BUILDERS[topic](self, rng, times, k)
        active = [p for p in self._active(k) if SCENARIOS[p.scenario].topic == topic]
        if topic == "metrics":
            base = _apply_metric_scenarios(self, base, active)
        extra = [self._scenario_slice(p, k) for p in active if p.scenario in _EVENT_SCENARIOS]
        extra = [t for t in extra if t.num_rows]
        if extra:
            base = pa.concat_tables([base, *extra])
            order = np.argsort(base.column("timestamp").to_numpy(), kind="stable")
            base = base.take(pa.array(order))
        return base

    def _active(self, k: int) -> list[Placement]:
        lo, hi = self.t0 + k, self.t0 + k + 1
        cycles = {self.cycle_of(k), self.cycle_of(k) - 1}
        return [p for c in sorted(cycles) if c >= 0 for p in self.placements(c)
                if p.start < hi and p.end + 1 >= lo]

    def _scenario_events(self, p: Placement) -> pa.Table:
        key = (p.scenario, p.rng_seed)
        if key not in self._extra:
            rng = np.random.default_rng(list(p.rng_seed))
            self._extra[key] = _EVENT_SCENARIOS[p.scenario](self, rng, p)
        return self._extra[key]

    def _scenario_slice(self, p: Placement, k: int) -> pa.Table:
        table = self._scenario_events(p)
        seconds = table.column("timestamp").to_numpy().astype("datetime64[us]").astype(
            np.int64) / 1e6
        mask = (seconds >= self.t0 + k) & (seconds < self.t0 + k + 1)
        return table.filter(pa.array(mask))

    def span(self, topic: str, seconds: int) -> pa.Table:
        """The topic's events of the first `seconds` seconds, in one table."""
        return pa.concat_tables([self.slice(topic, k) for k in range(seconds)])

    def batches(self, topics: list[str], slices: range) -> Iterator[tuple[str, int, pa.Table]]:
        for k in slices:
            for topic in topics:
                yield topic, k, self.slice(topic, k)


def _dt(seconds: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=round(seconds * 1e6))


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array(np.round(seconds * 1e6).astype("int64").astype("datetime64[us]"), TIMESTAMP)


def _choice_index(rng: np.random.Generator, options: tuple[tuple[str, float], ...], n: int
                  ) -> np.ndarray:
    cdf = np.cumsum([o[1] for o in options])
    return np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n)), len(options) - 1)


def _table(kind: EventType, columns: dict[str, Any]) -> pa.Table:
    n = len(next(iter(columns.values())))
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in kind.fields]
    return pa.Table.from_arrays(arrays, schema=kind.schema)


def _choose(rng: np.random.Generator, options: tuple[tuple[str, float], ...], n: int
            ) -> pa.Array:
    return _take(tuple(o[0] for o in options), _choice_index(rng, options, n))


def _ips(values: np.ndarray, salt: int) -> pa.Array:
    """A stable private address per entity: 10.a.b.c from its hash."""
    h = _hash_u64(values, salt)
    parts = [_numbers(((h >> np.uint64(s)) & np.uint64(0xFF)).astype(np.int64))
             for s in (0, 8, 16)]
    return pc.binary_join_element_wise("10", *parts, ".")


# ------------------------------------------------------------------------------- base builders


_TEMPLATE_LEVEL = np.concatenate([[li] * len(_TEMPLATES[name])
                                  for li, name in enumerate(_LEVELS)])
_TEMPLATE_FIRST = np.array([int(np.argmax(li == _TEMPLATE_LEVEL)) for li in range(len(_LEVELS))])
_TEMPLATE_COUNT = np.array([len(_TEMPLATES[name]) for name in _LEVELS])
_TEMPLATE_PREFIX = tuple(t[0] for name in _LEVELS for t in _TEMPLATES[name])
_TEMPLATE_SUFFIX = tuple(t[1] for name in _LEVELS for t in _TEMPLATES[name])


def _messages(rng: np.random.Generator, level: np.ndarray) -> pa.Array:
    pick = _TEMPLATE_FIRST[level] + (rng.random(len(level)) * _TEMPLATE_COUNT[level]).astype(int)
    numbers = _numbers(rng.lognormal(4.0, 0.8, size=len(level)))
    return pc.binary_join_element_wise(_take(_TEMPLATE_PREFIX, pick), numbers,
                                       _take(_TEMPLATE_SUFFIX, pick), "")


def _logs(stream: SyntheticStream, rng: np.random.Generator, times: np.ndarray,
          k: int) -> pa.Table:
    world, n = stream.world, len(times)
    service = np.searchsorted(np.cumsum(world.service_weight), rng.random(n) * 0.999999)
    host = world.host_first[service] + (rng.random(n) * world.hosts_per_service[service]).astype(
        int)
    rate = stream.spec.rates["logs"]
    p_error = min(0.02, len(_SERVICES) * _ERRORS_PER_SERVICE_PER_SECOND / rate)
    cdf = np.cumsum([0.10, 0.85 - 1.1 * p_error, 0.05, p_error, 0.1 * p_error])
    level = np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n)), 4)
    has_user = pa.array(world.service_user_facing[service] & (rng.random(n) < 0.6))
    users = rng.integers(0, stream.population("logs"), size=n)
    null = pa.scalar(None, pa.string())
    return _table(EVENT_TYPES["logs"], {
        "event_id": _uuids(rng, n), "timestamp": _timestamps(times),
        "service": _take(world.service_names, service),
        "host": _take(world.host_names, host),
        "level": _take(_LEVELS, level),
        "message": _messages(rng, level),
        "user_id": pc.if_else(has_user, stream.user_ids(users), null),
        "ip": pc.if_else(has_user, _ips(users, stream.spec.seed), _ips(host + 1_000_000, 5)),
        "trace_id": _hex_strings(rng, n, 8),
    })


def _metrics(stream: SyntheticStream, rng: np.random.Generator, times: np.ndarray,
             k: int) -> pa.Table:
    world, n = stream.world, len(times)
    rate = stream.spec.rates["metrics"]
    first = math.floor(rate * k)
    host = (first + np.arange(n)) % world.n_hosts  # round-robin: every host reports regularly
    service = world.host_service[host]
    load = daily_load(times)
    cpu = world.host_cpu[host] + 25 * load + rng.normal(0, 4, n)
    memory = world.host_memory[host] + 5 * load + rng.normal(0, 1.5, n)
    latency = (world.service_latency[service] * world.host_latency_factor[host]
               * (1 + 0.3 * load) * rng.lognormal(0, 0.15, n))
    rps = world.host_rps[host] * load * rng.lognormal(0, 0.1, n)
    error_rate = 0.002 + 0.003 * load + np.abs(rng.normal(0, 0.001, n))
    return _table(EVENT_TYPES["metrics"], {
        "event_id": _uuids(rng, n), "timestamp": _timestamps(times),
        "service": _take(world.service_names, service),
        "host": _take(world.host_names, host),
        "cpu_percent": pa.array(np.round(np.clip(cpu, 0, 100), 2)),
        "memory_percent": pa.array(np.round(np.clip(memory, 0, 100), 2)),
        "latency_ms": pa.array(np.round(latency, 1)),
        "requests_per_sec": pa.array(np.round(rps, 1)),
        "error_rate": pa.array(np.round(np.clip(error_rate, 0, 1), 5)),
        "region": _take(_REGIONS, world.host_region[host]),
    })


def _transactions(stream: SyntheticStream, rng: np.random.Generator, times: np.ndarray,
                  k: int, users: np.ndarray | None = None, countries: np.ndarray | None = None,
                  amounts: np.ndarray | None = None, merchants: np.ndarray | None = None,
                  statuses: pa.Array | None = None) -> pa.Table:
    world, n = stream.world, len(times)
    if users is None:
        users = rng.integers(0, stream.population("transactions"), size=n)
    home = world.user_country(users)
    country = (_take(world.country_codes, home) if countries is None
               else _take(tuple(countries), np.arange(n)))
    if amounts is None:
        amounts = np.minimum(world.user_amount_scale(users) * rng.lognormal(0, 1.0, n), 9500)
    if merchants is None:
        merchants = np.minimum((rng.pareto(1.2, n) * 40).astype(np.int64), _MERCHANTS - 1)
    if statuses is None:
        statuses = _choose(rng, _STATUSES, n)
    has_ip = pa.array(rng.random(n) < 0.5)
    return _table(EVENT_TYPES["transactions"], {
        "event_id": _uuids(rng, n), "timestamp": _timestamps(times),
        "transaction_id": pc.binary_join_element_wise("tx-", _hex_strings(rng, n, 10), ""),
        "user_id": stream.user_ids(users),
        "amount": pa.array(np.round(np.maximum(amounts, 0.01), 2)),
        "currency": _take(world.country_currency, home),
        "merchant_id": _labels("m", merchants, 5),
        "country": country,
        "payment_method": _choose(rng, _PAYMENT_METHODS, n),
        "status": statuses,
        "merchant_category": world.merchant_category(merchants),
        "ip": pc.if_else(has_ip, _ips(users, stream.spec.seed + 1),
                         pa.scalar(None, pa.string())),
    })


_BUILDERS: dict[str, Callable[[SyntheticStream, np.random.Generator, np.ndarray, int],
                              pa.Table]] = {
    "logs": _logs, "metrics": _metrics, "transactions": _transactions}


# ------------------------------------------------------------------------------- injections


def _apply_metric_scenarios(stream: SyntheticStream, table: pa.Table,
                            active: list[Placement]) -> pa.Table:
    if not active or table.num_rows == 0:
        return table
    world = stream.world
    hosts = table.column("host").to_numpy(zero_copy_only=False)
    times = table.column("timestamp").to_numpy().astype("datetime64[us]").astype(np.int64) / 1e6
    cols = {name: table.column(name).to_numpy().copy()
            for name in ("cpu_percent", "memory_percent", "latency_ms")}
    for p in active:
        rows = np.flatnonzero((hosts == world.host_names[p.entity])
                              & (times >= p.start) & (times <= p.end))
        if rows.size == 0:
            continue
        noise = np.random.default_rng([*p.rng_seed, int(times[rows[0]] * 1e3)])
        progress = (times[rows] - p.start) / max(p.end - p.start, 1.0)
        if p.scenario in ("cpu_sustained", "cpu_latency"):
            cols["cpu_percent"][rows] = noise.uniform(85, 97, rows.size)
        if p.scenario == "latency_spike":
            cols["latency_ms"][rows] = noise.uniform(1200, 2500, rows.size)
        if p.scenario == "cpu_latency":
            cols["latency_ms"][rows] = noise.uniform(1100, 2000, rows.size)
        if p.scenario == "latency_shift":
            cols["latency_ms"][rows] = 400 * noise.lognormal(0, 0.08, rows.size)
        if p.scenario == "cpu_creep":
            base = cols["cpu_percent"][rows]
            cols["cpu_percent"][rows] = np.minimum(base + progress * np.maximum(76 - base, 0),
                                                   78.5)
        if p.scenario == "memory_leak":
            base = cols["memory_percent"][rows]
            cols["memory_percent"][rows] = base + progress * (96 - base)
    for name, values in cols.items():
        index = table.schema.get_field_index(name)
        digits = 1 if name == "latency_ms" else 2
        table = table.set_column(index, name, pa.array(np.round(values, digits)))
    return table


def _spread(rng: np.random.Generator, p: Placement, n: int) -> np.ndarray:
    return p.start + np.sort(rng.random(n)) * max(p.end - p.start, 1e-3)


def _log_events(stream: SyntheticStream, rng: np.random.Generator, times: np.ndarray,
                service: int, level: str, messages: pa.Array, user: int | None) -> pa.Table:
    world, n = stream.world, len(times)
    host = world.host_first[service] + rng.integers(0, world.hosts_per_service[service], n)
    users = np.full(n, user if user is not None else 0)
    return _table(EVENT_TYPES["logs"], {
        "event_id": _uuids(rng, n), "timestamp": _timestamps(times),
        "service": _take(world.service_names, np.full(n, service)),
        "host": _take(world.host_names, host),
        "level": pa.array([level] * n, pa.string()),
        "message": messages,
        "user_id": (stream.user_ids(users) if user is not None
                    else pa.nulls(n, pa.string())),
        "ip": _ips(users, stream.spec.seed),
        "trace_id": _hex_strings(rng, n, 8),
    })


def _error_burst(stream: SyntheticStream, rng: np.random.Generator, p: Placement) -> pa.Table:
    times = _spread(rng, p, 40)
    messages = _messages(rng, np.full(40, _LEVELS.index("ERROR")))
    return _log_events(stream, rng, times, p.entity, "ERROR", messages, None)


def _failed_login_storm(stream: SyntheticStream, rng: np.random.Generator,
                        p: Placement) -> pa.Table:
    times = _spread(rng, p, 30)
    user_id = stream.user_ids(np.array([p.entity]))[0].as_py()
    reasons = ("invalid password", "invalid one-time code", "account locked")
    messages = pc.binary_join_element_wise(f"Login failed for user {user_id}: ",
                                           _take(reasons, rng.integers(0, 3, 30)), "")
    auth = int(np.flatnonzero(stream.world.service_names == "auth")[0])
    return _log_events(stream, rng, times, auth, "WARNING", messages, p.entity)


def _user_log_spike(stream: SyntheticStream, rng: np.random.Generator,
                    p: Placement) -> pa.Table:
    n = max(20, int(40 * (p.end - p.start) / 60))
    times = _spread(rng, p, n)
    facing = np.flatnonzero(stream.world.service_user_facing)
    service = int(rng.choice(facing))
    messages = pc.binary_join_element_wise("GET /api/v1/orders returned 200 in ",
                                           _numbers(rng.integers(20, 200, n)), " ms", "")
    return _log_events(stream, rng, times, service, "INFO", messages, p.entity)


def _large_amount(stream: SyntheticStream, rng: np.random.Generator, p: Placement) -> pa.Table:
    times = np.array([p.start])
    return _transactions(stream, rng, times, 0, users=np.array([p.entity]),
                         amounts=np.round(rng.uniform(12000, 60000, 1), 2),
                         statuses=pa.array(["approved"]))


def _rapid_fire(stream: SyntheticStream, rng: np.random.Generator, p: Placement) -> pa.Table:
    times = _spread(rng, p, 25)
    return _transactions(stream, rng, times, 0, users=np.full(25, p.entity))


def _card_testing(stream: SyntheticStream, rng: np.random.Generator, p: Placement) -> pa.Table:
    times = _spread(rng, p, 40)
    statuses = pa.array(np.where(rng.random(40) < 0.75, "declined", "approved"))
    return _transactions(stream, rng, times, 0, users=np.full(40, p.entity),
                         amounts=np.round(rng.uniform(0.5, 2.0, 40), 2),
                         merchants=rng.choice(_MERCHANTS, 40, replace=False),
                         statuses=statuses)


def _unusual_country(stream: SyntheticStream, rng: np.random.Generator,
                     p: Placement) -> pa.Table:
    times = _spread(rng, p, 3)
    country = _UNUSUAL_COUNTRIES[int(rng.integers(0, len(_UNUSUAL_COUNTRIES)))]
    return _transactions(stream, rng, times, 0, users=np.full(3, p.entity),
                         countries=np.full(3, country))


_EVENT_SCENARIOS: dict[str, Callable[[SyntheticStream, np.random.Generator, Placement],
                                     pa.Table]] = {
    "error_burst": _error_burst, "failed_login_storm": _failed_login_storm,
    "user_log_spike": _user_log_spike, "large_amount": _large_amount,
    "rapid_fire": _rapid_fire, "card_testing": _card_testing,
    "unusual_country": _unusual_country,
}
