"""What goes into the ledger: ``publish`` (JSON lines), ``ingest`` (X12 834/820, CSV, JSON lines)
and ``deadletter list`` / ``retry`` (records that could not be applied)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

from processor.cli_support import load_settings, print_json
from processor.exits import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE  # documented in processor/exits.py


def cmd_publish(args: argparse.Namespace) -> int:
    from events import codec
    from processor.app import publisher, running_embedded_broker
    from processor.tables import ProgressPublisher, progress_bar

    settings = load_settings()
    bootstrap = settings.kafka_bootstrap_servers or running_embedded_broker(settings)
    if bootstrap is None:
        print("error: no broker: set LEDGER_KAFKA_BOOTSTRAP_SERVERS or start `benefits-ledger up` first",
              file=sys.stderr)
        return EXIT_USAGE
    path = Path(args.file)
    errors: list[dict[str, Any]] = []
    events = []
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                events.append(codec.decode_input(line))
            except codec.EventDecodeError as exc:
                errors.append({"file": str(path), "line": lineno, "field": exc.field, "reason": exc.reason})
    with progress_bar(not args.json) as bar, ProgressPublisher(publisher(settings, bootstrap), bar) as pub:
        records = pub.publish(events)
    result = {"file": str(path), "events": len(events), "records": records, "errors": errors}
    if args.json:
        print_json(result)
    else:
        for e in errors:
            print(f"{e['file']}:{e['line']}: {e['field'] or '-'}: {e['reason']}", file=sys.stderr)
        print(f"published {len(events)} events ({records} records) from {path}; {len(errors)} lines rejected")
    return EXIT_FINDINGS if errors else EXIT_OK


def cmd_deadletter_list(args: argparse.Namespace) -> int:
    from processor.app import open_store

    with open_store(load_settings(), database=args.database) as store:
        rows = store.dead_letters(limit=args.limit)
    if args.json:
        print_json([msgspec.structs.asdict(r) for r in rows])
        return EXIT_OK
    for r in rows:
        print(f"{r.topic}[{r.partition}]@{r.offset} {r.event_id or '-'} {r.field or '-'}: {r.reason}")
    print(f"{len(rows)} dead letters", file=sys.stderr)
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    import contextlib

    from events.adapters.ingest import ingest
    from processor.app import publisher, running_embedded_broker
    from processor.keys import KeyRequired, member_id_key
    from processor.tables import ProgressPublisher, progress_bar, spinner

    settings = load_settings()
    try:
        member_id_key(settings)  # pseudonyms need a real key: refuse before reading any file
    except KeyRequired as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bootstrap = None
    if not args.dry_run:
        bootstrap = settings.kafka_bootstrap_servers or running_embedded_broker(settings)
        if bootstrap is None:
            print("error: no broker: set LEDGER_KAFKA_BOOTSTRAP_SERVERS or start `benefits-ledger up` first"
                  " (or use --dry-run)", file=sys.stderr)
            return EXIT_USAGE
    with contextlib.ExitStack() as stack:
        ledger: Any = None
        agency_accounts: Any = None
        if args.compare:
            from processor.app import open_store

            store = stack.enter_context(open_store(settings, database=args.database))

            def current_coverages(accounts: list[str]) -> dict[str, Any]:
                balances = {a: store.balance(a) for a in accounts}
                return {a: b.coverages for a, b in balances.items() if b is not None}

            ledger = current_coverages
            agency_accounts = store.agency_accounts
        bar = stack.enter_context(progress_bar(not args.json))
        stack.enter_context(spinner(bar, f"reading {len(args.files)} file(s)"))
        report = ingest(args.files, settings, dry_run=args.dry_run, strict=args.strict, ledger=ledger,
                        agency_accounts=agency_accounts,
                        publisher=lambda: ProgressPublisher(publisher(settings, bootstrap or ""), bar),
                        ack_dir=Path(args.ack) if args.ack else None)
    if args.json:
        print_json(report.to_json())
    else:
        out, err = report.text_lines()
        for line in err:
            print(line, file=sys.stderr)
        for line in out:
            print(line)
    return EXIT_FINDINGS if report.errors else EXIT_OK


def cmd_deadletter_retry(args: argparse.Namespace) -> int:
    from events.adapters.deadletter import resubmit, select
    from processor.app import open_store, publisher, running_embedded_broker

    settings = load_settings()
    with open_store(settings, database=args.database) as store:
        rows = select(store.dead_letters(limit=args.limit), topic=args.topic, event_id=args.event_id,
                      reason=args.reason)
    if args.dry_run:
        done = [{"topic": r.topic, "partition": r.partition, "offset": r.offset, "event_id": r.event_id,
                 "reason": r.reason} for r in rows]
    else:
        bootstrap = settings.kafka_bootstrap_servers or running_embedded_broker(settings)
        if bootstrap is None:
            print("error: no broker: set LEDGER_KAFKA_BOOTSTRAP_SERVERS or start `benefits-ledger up` first",
                  file=sys.stderr)
            return EXIT_USAGE
        with publisher(settings, bootstrap) as pub:
            done = [r.to_dict() for r in resubmit(rows, pub)]
    if args.json:
        print_json({"dry_run": args.dry_run, "resubmitted": done})
    else:
        for d in done:
            print(f"{d['topic']}[{d['partition']}]@{d['offset']} {d['event_id'] or '-'}: was {d['reason']}")
        verb = "would resubmit" if args.dry_run else "resubmitted"
        print(f"{verb} {len(done)} dead letters", file=sys.stderr)
    return EXIT_OK
