"""The `vigil` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vigil import cliargs
from vigil.settings import Settings, SettingsError

if TYPE_CHECKING:
    from vigil.services import ServiceStatus


def _services_up(settings: Settings, args: argparse.Namespace) -> int:
    from vigil import services

    services.up(settings, with_s3=args.s3)
    _print_status(settings)
    if args.s3:
        print(f"\nS3 mode: export S3_ENDPOINT_URL=http://127.0.0.1:{settings.s3_port} "
              f"VIGIL_LAKE_URL=s3://{settings.s3_bucket or 'vigil-lake'}/lake")
    return 0


def _services_down(settings: Settings, args: argparse.Namespace) -> int:
    from vigil import services

    services.down(settings)
    return 0


def _services_status(settings: Settings, args: argparse.Namespace) -> int:
    statuses = _print_status(settings)
    return 0 if all(s.healthy or s.state in {"stopped", "off"} for s in statuses) else 1


def _print_status(settings: Settings) -> list[ServiceStatus]:
    from vigil import services

    statuses = services.status(settings)
    print(f"{'service':<9} {'state':<12} {'health':<8} {'address':<28} process")
    for entry in statuses:
        print(entry.line())
    print(f"lake: {settings.lake_url}")
    return statuses


def _status(settings: Settings, args: argparse.Namespace) -> int:
    """Services, then per-partition lag: offsets in Kafka not yet landed in the lake."""
    from vigil.kafka import broker_answers
    from vigil.pipeline_state import landing_lag
    from vigil.settings import TOPICS

    statuses = _print_status(settings)
    if not broker_answers(settings.kafka_bootstrap):
        print(f"\nkafka at {settings.kafka_bootstrap} is unreachable: no lag to show")
        return 1
    print(f"\nlanding lag (consumer group {settings.deployment!r}: high watermark minus "
          "landed offset)")
    print(f"{'topic':<14} {'partition':>9} {'high':>12} {'landed':>12} {'lag':>10}")
    total = 0
    for row in landing_lag(settings.kafka_bootstrap, settings.deployment, TOPICS):
        total += row.lag
        shown = f"{row.landed:,}" if row.landed >= 0 else "-"
        print(f"{row.topic:<14} {row.partition:>9} {row.high:>12,} {shown:>12} "
              f"{row.lag:>10,}")
    print(f"{'total':<14} {'':>9} {'':>12} {'':>12} {total:>10,}")
    return 0 if all(s.healthy or s.state in {"stopped", "off"} for s in statuses) else 1


def _db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from vigil.migrate import migrate

    applied = migrate(settings.database_url, report=print,
                      reader_password=settings.reader_password)
    if not applied:
        print("database schema is up to date")
    return 0


def _init(settings: Settings, args: argparse.Namespace) -> int:
    """Prepare external services (compose, production): schema, topics, bucket."""
    from vigil.kafka import ensure_topics
    from vigil.migrate import migrate
    from vigil.settings import TOPICS

    applied = migrate(settings.database_url, report=print,
                      reader_password=settings.reader_password)
    print(f"database: {len(applied)} migration(s) applied, schema up to date")
    changed = ensure_topics(settings.kafka_bootstrap, TOPICS, settings.kafka_partitions)
    print(f"kafka: topics {', '.join(TOPICS)} ready"
          + (f" (created or grown: {', '.join(changed)})" if changed else ""))
    if settings.lake_is_s3 and settings.s3_bucket:
        from vigil.objectstore import create_bucket, s3_client

        create_bucket(s3_client(settings), settings.s3_bucket, settings.aws_region)
        print(f"s3: bucket {settings.s3_bucket} ready")
    return 0


def _produce(settings: Settings, args: argparse.Namespace) -> int:
    import signal
    from datetime import UTC, datetime

    from vigil.generate import StreamSpec, SyntheticStream, resolve_scenarios
    from vigil.kafka import ensure_topics
    from vigil.produce import EventSender, LabelWriter, ProgressLine, produce_stream

    names = (["all"] if args.scenarios == "all" else []) + (args.scenario or [])
    try:
        scenarios = resolve_scenarios(names) if names else ()
    except ValueError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return 2
    rates = {t: r for t, r in args.rate.items() if args.topics is None or t in args.topics}
    start = args.start or datetime.now(UTC).replace(microsecond=0)
    spec = StreamSpec(seed=args.seed, start=start, rates=rates, scenarios=scenarios,
                      horizon=float(args.duration or 3600))
    labels_path = args.labels
    if scenarios and labels_path is None:
        labels_path = settings.state_dir / "labels" / f"produce-{start:%Y%m%dT%H%M%SZ}.jsonl"
    created = ensure_topics(settings.kafka_bootstrap, list(rates), settings.kafka_partitions)
    if created:
        print(f"created topics: {', '.join(created)}")
    pace = "as fast as possible" if args.speed is None else f"{args.speed:g}x real time"
    print(f"producing to {settings.kafka_bootstrap}: "
          + ", ".join(f"{t} {r:g}/s" for t, r in rates.items())
          + f" of event time, {pace}, seed {args.seed}"
          + (f", for {args.duration} s" if args.duration else ", until Ctrl-C")
          + (f"\nscenarios: {', '.join(scenarios)}; labels -> {labels_path}" if scenarios
             else ""), flush=True)
    stop = {"requested": False}

    def request_stop(_signum: int, _frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    sender = EventSender(settings.kafka_bootstrap)
    labels = LabelWriter(labels_path)
    progress = ProgressLine(sys.stderr, args.duration, sys.stderr.isatty())
    report = produce_stream(sender, SyntheticStream(spec), list(rates), args.duration,
                            args.speed, labels, progress, lambda: stop["requested"])
    print(report.summary())
    if labels_path is not None:
        print(f"{labels.count} scenario label(s) written to {labels_path}")
    return 1 if report.total(report.failed) else 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from vigil.events import event_type
    from vigil.kafka import ensure_topics
    from vigil.produce import EventSender
    from vigil.replay import ReplayError, plan_replay, send_plan

    kind = event_type(args.topic)
    try:
        plan = plan_replay(args.file, kind, dict(args.map or []), dict(args.set or []))
    except ReplayError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return 2
    for name, how in plan.filled.items():
        print(f"{name}: not in the file, filled with {how}")
    shown = plan.bad if args.strict else plan.bad[:20]
    for bad in shown[:1] if args.strict else shown:
        print(f"{args.file.name} {bad.line}: {bad.reason}", file=sys.stderr)
    if len(plan.bad) > len(shown):
        print(f"... and {len(plan.bad) - len(shown)} more rows that do not fit the schema",
              file=sys.stderr)
    if plan.bad and args.strict:
        print(f"vigil: --strict: stopped at the first row that does not fit {args.topic}; "
              "nothing was sent", file=sys.stderr)
        return 1
    ensure_topics(settings.kafka_bootstrap, [args.topic], settings.kafka_partitions)
    sender = EventSender(settings.kafka_bootstrap)
    pace = "as fast as possible" if args.speed is None else f"at {args.speed:g}x"
    print(f"replaying {plan.table.num_rows:,} of {plan.rows:,} rows from {args.file} to "
          f"{args.topic} {pace}", flush=True)
    send_plan(sender, plan, args.speed)
    report = sender.report
    print(report.summary() if report.queued else "nothing to send")
    print(f"skipped {len(plan.bad):,} rows that do not fit the {args.topic} schema"
          if plan.bad else "every row fit the schema")
    return 1 if report.total(report.failed) else 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from vigil.platform import run_platform

    return run_platform(settings, with_s3=args.s3)


def _api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    port = args.port or settings.api_port
    print(f"vigil API: http://{args.host}:{port}  (docs: /docs)", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=port, log_level="warning")
    return 0


def _rules_check(settings: Settings, args: argparse.Namespace) -> int:
    from vigil.detect.rules import DEFAULT_RULES, RuleError, load_rules

    args.file = args.file or DEFAULT_RULES
    try:
        rules = load_rules(args.file, include_disabled=True)
    except RuleError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return 2
    for rule in rules:
        print(f"{rule.name:<32} {rule.topic:<13} {rule.type:<18} {rule.level:<9} "
              f"by {', '.join(rule.group_by)}{'' if rule.enabled else '  (disabled)'}")
    print(f"{args.file}: {len(rules)} rules, valid")
    return 0


def _evaluate_nab(settings: Settings, args: argparse.Namespace) -> int:
    from vigil.detect.rules import DEFAULT_RULES, RuleError, load_rules
    from vigil.evaluation import nab, nab_corpus, nab_score

    args.data = args.data or nab_corpus.default_dir()
    try:
        rules = [r for r in load_rules(args.rules or DEFAULT_RULES, include_disabled=True)
                 if r.likelihood is not None and (args.rule is None or r.name == args.rule)]
        corpus = nab_corpus.load(args.data)
    except (RuleError, nab_corpus.CorpusError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return 2
    if not rules:
        print(f"vigil: no anomaly_likelihood rule{f' named {args.rule!r}' if args.rule else ''}"
              f" in {args.rules or DEFAULT_RULES}", file=sys.stderr)
        return 2
    profiles = nab_score.load_profiles(args.data / "config" / "profiles.json")
    for rule in rules:
        results, files = nab.evaluate(rule, corpus, profiles)
        print(nab.report(rule, args.data, results, files), flush=True)
    return 0


def _evaluate_scenarios(settings: Settings, args: argparse.Namespace) -> int:
    from vigil.cliargs import DEFAULT_MIX
    from vigil.detect.rules import DEFAULT_RULES, RuleError, load_rules
    from vigil.evaluation import scenarios

    try:
        rules = load_rules(args.rules or DEFAULT_RULES, include_disabled=args.include_disabled)
    except RuleError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return 2
    rates = {topic: args.rate * share for topic, share in DEFAULT_MIX.items()}
    runs = []
    for seed in args.seeds:
        print(f"seed {seed}: generating 3 h and detecting ...", file=sys.stderr, flush=True)
        runs.append(scenarios.run_seed(rules, seed, rates))
    lines = scenarios.summarise(runs, rules)
    print(scenarios.report(lines, args.seeds, args.rate))
    return 1 if any(line.expected and line.recall < 1 for line in lines) else 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from vigil.demo import run_demo

    return run_demo(settings, duration=args.duration, rate=args.rate, span=args.span,
                    seed=args.seed, keep_running=args.keep_running)


def _alerts_sink(settings: Settings, args: argparse.Namespace) -> int:
    import threading

    from vigil.alerts_sink import AlertSink

    sink = AlertSink(args.store, port=args.port).start()
    print(f"alert sink: {sink.url}  (set DISCORD_WEBHOOK_URL to it; storing in {args.store})",
          flush=True)
    try:
        threading.Event().wait()
    finally:
        sink.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil", description="Real-time compliance and anomaly monitoring over Kafka.")
    commands = parser.add_subparsers(dest="command", required=True)

    svc = commands.add_parser("services", help="the local Kafka, PostgreSQL and S3 servers")
    svc_cmds = svc.add_subparsers(dest="action", required=True)
    svc_up = svc_cmds.add_parser("up", help="start what is not running; waits until ready")
    svc_up.add_argument("--s3", action="store_true", help="also start a loopback S3 server")
    svc_up.set_defaults(handler=_services_up)
    svc_cmds.add_parser("down", help="stop what `up` started").set_defaults(
        handler=_services_down)
    svc_cmds.add_parser("status", help="each service, its address and health").set_defaults(
        handler=_services_status)

    commands.add_parser(
        "status", help="services, and how far the lake is behind Kafka per partition"
    ).set_defaults(handler=_status)

    db = commands.add_parser("db", help="the PostgreSQL schema")
    db_cmds = db.add_subparsers(dest="action", required=True)
    db_cmds.add_parser("migrate", help="apply pending sql/ migrations").set_defaults(
        handler=_db_migrate)

    prod = commands.add_parser(
        "produce", help="send a synthetic stream with labelled anomaly scenarios to Kafka",
        description="Send realistic logs, metrics and transactions; inject labelled "
                    "anomaly scenarios. Rates are events per second of event time.")
    prod.add_argument("--rate", type=cliargs.rates, default=cliargs.rates("100"),
                      help="total events/s (split logs 50%%, metrics 20%%, transactions 30%%)"
                           " or per topic: logs=200,metrics=50 (default 100)")
    prod.add_argument("--duration", type=cliargs.duration, default=None,
                      help="event time to produce: 90, 5m, 2h (default: until Ctrl-C)")
    prod.add_argument("--speed", type=cliargs.speed, default=1.0,
                      help="1 = real time (default), 60x, or max")
    prod.add_argument("--scenario", action="append", metavar="NAME",
                      help="inject a scenario (repeatable); see --list-scenarios")
    prod.add_argument("--scenarios", choices=["all"], help="inject every scenario")
    prod.add_argument("--list-scenarios", action="store_true", help="list scenarios and exit")
    prod.add_argument("--seed", type=int, default=42, help="same seed, same stream")
    prod.add_argument("--labels", type=Path, help="where to write ground-truth labels (JSONL)")
    prod.add_argument("--start", type=cliargs.utc_time,
                      help="event time of the first event (default: now)")
    prod.add_argument("--topics", type=lambda s: [t.strip() for t in s.split(",")],
                      help="comma-separated subset of logs,metrics,transactions")
    prod.set_defaults(handler=_produce)

    rep = commands.add_parser(
        "replay", help="replay a CSV, NDJSON or Parquet file into a topic",
        description="Send a real dataset's rows as events, keeping their timestamps. "
                    "Example (NAB): vigil replay ec2_cpu_utilization_825cc2.csv "
                    "--topic metrics --map value=cpu_percent --set service=ec2")
    rep.add_argument("file", type=Path)
    rep.add_argument("--topic", required=True, choices=["logs", "metrics", "transactions"])
    rep.add_argument("--map", type=cliargs.assignment, action="append", metavar="COLUMN=FIELD",
                     help="rename a file column to an event field (repeatable)")
    rep.add_argument("--set", type=cliargs.assignment, action="append", metavar="FIELD=VALUE",
                     help="give a field the same value on every event (repeatable)")
    rep.add_argument("--speed", type=cliargs.speed, default=None,
                     help="pace by the rows' timestamps: 1, 60x ... or max (default: max)")
    rep.add_argument("--strict", action="store_true",
                     help="stop at the first row that does not fit, before sending anything")
    rep.set_defaults(handler=_replay)

    commands.add_parser(
        "init", help="apply migrations, create topics and the bucket on configured services"
    ).set_defaults(handler=_init)

    run = commands.add_parser(
        "run", help="start the services and the Dagster UI; Ctrl-C stops what it started")
    run.add_argument("--s3", action="store_true", help="also start a loopback S3 server")
    run.set_defaults(handler=_run)

    rules = commands.add_parser("rules", help="the detection rules")
    rules_cmds = rules.add_subparsers(dest="action", required=True)
    check = rules_cmds.add_parser("check", help="validate the rules file; list its rules")
    check.add_argument("--file", type=Path, default=None,
                       help="a rules file (default: vigil/detect/rules.yaml)")
    check.set_defaults(handler=_rules_check)

    evaluate = commands.add_parser("evaluate", help="measure detection quality")
    evaluate_cmds = evaluate.add_subparsers(dest="action", required=True)
    nab = evaluate_cmds.add_parser(
        "nab", help="score the metric detectors on the NAB corpus as NAB does")
    nab.add_argument("--data", type=Path, default=None,
                     help="NAB folder with data/, labels/, config/ (default: $VIGIL_NAB_DIR "
                          "or ../shared/datasets/nab)")
    nab.add_argument("--rules", type=Path, default=None, help="a rules file")
    nab.add_argument("--rule", default=None, help="only this anomaly_likelihood rule")
    nab.set_defaults(handler=_evaluate_nab)
    scen = evaluate_cmds.add_parser(
        "scenarios", help="every scenario, several seeds, through the detection engine: "
                          "precision, recall, F1, delay per scenario and rule (exit 1 if a "
                          "threshold scenario is missed)")
    scen.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")],
                      default=[1, 2, 3], help="comma-separated seeds (default 1,2,3)")
    scen.add_argument("--rate", type=float, default=100.0,
                      help="events/s of event time across topics (default 100)")
    scen.add_argument("--rules", type=Path, default=None, help="a rules file")
    scen.add_argument("--include-disabled", action="store_true",
                      help="also judge rules switched off with enabled: false")
    scen.set_defaults(handler=_evaluate_scenarios)

    demo = commands.add_parser(
        "demo", help="start everything, produce traffic with every scenario, print a summary")
    demo.add_argument("--duration", type=int, default=180,
                      help="seconds of producing (wall time, default 180)")
    demo.add_argument("--span", type=int, default=1800,
                      help="seconds of event time produced in that time (default 1800)")
    demo.add_argument("--rate", type=float, default=100.0,
                      help="events per second of event time (default 100)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--keep-running", action="store_true",
                      help="leave the stack up after the summary; Ctrl-C stops it")
    demo.set_defaults(handler=_demo)

    alerts = commands.add_parser("alerts", help="alert delivery tools")
    alerts_cmds = alerts.add_subparsers(dest="action", required=True)
    sink = alerts_cmds.add_parser(
        "sink", help="a local Discord-compatible webhook receiver that prints and stores")
    sink.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    sink.add_argument("--store", type=Path, default=Path(".vigil/alerts.jsonl"),
                      help="JSON-lines file of received messages")
    sink.set_defaults(handler=_alerts_sink)

    api = commands.add_parser("api", help="serve the REST API (OpenAPI docs at /docs)")
    api.add_argument("--port", type=int, default=None,
                     help="port (default: VIGIL_API_PORT or 8000)")
    api.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    api.set_defaults(handler=_api)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "list_scenarios", False):
        from vigil.generate import SCENARIOS

        for scenario in SCENARIOS.values():
            print(f"{scenario.name:<20} {scenario.topic:<13} {scenario.description}")
        return 0
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return 2
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        return handler(settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from vigil.migrate import MigrationError
        from vigil.services.process import ServiceError

        if isinstance(exc, ServiceError | MigrationError):
            print(f"vigil: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
