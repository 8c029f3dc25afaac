"""The ``replay`` and ``verify-archive`` commands (wired into processor/cli.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


def _default(value: object) -> object:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(obj: object) -> str:
    return json.dumps(obj, default=_default)


@contextlib.contextmanager
def _dsn(args: argparse.Namespace) -> Iterator[tuple[str, Any]]:
    """The database DSN (embedded server kept running for the duration) and the settings."""
    from processor.app import open_store
    from processor.settings import Settings

    settings = Settings()
    with open_store(settings, database=args.database) as store:
        dsn = getattr(store, "dsn", None)
        if not isinstance(dsn, str):  # pragma: no cover - open_store always gives a PostgresStore
            raise RuntimeError("replay needs the PostgreSQL store")
        yield dsn, settings


@contextlib.contextmanager
def _progress(enabled: bool, total: int | None, what: str) -> Iterator[Callable[[int], None]]:
    """A progress bar with events per second on stderr (only on a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>10} events/s"), TimeElapsedColumn(),
        console=console, disable=not (enabled and console.is_terminal),
    )
    task = progress.add_task(what, total=total, rate="-")

    def step(n: int) -> None:
        elapsed = progress.tasks[0].elapsed or 0.0
        progress.update(task, completed=n, rate=f"{n / elapsed:,.0f}" if elapsed > 0 else "-")

    with progress:
        yield step


def cmd_replay(args: argparse.Namespace) -> int:
    if args.verify:
        return _verify(args)
    return _statements(args)


def _verify(args: argparse.Namespace) -> int:
    from replay.archive import archive_size, connect
    from replay.verify import verify

    with _dsn(args) as (dsn, settings):
        with connect(dsn) as conn:
            total = archive_size(conn)
            conn.rollback()
        with _progress(not args.json, total, "replaying the archive") as step:
            report = verify(dsn, settings.plan, progress=step, workers=args.workers,
                            accounts_max=settings.replay_accounts_max, bytes_max=settings.replay_bytes_max)
    if args.json:
        sys.stdout.write(dumps({"events_replayed": report.events_replayed, "rows_compared": report.rows_compared,
                                "mismatches": report.mismatches, "mismatches_found": report.mismatches_found})
                         + "\n")
    else:
        for m in report.mismatches:
            fields = f" [{', '.join(m['fields'])}]" if m["fields"] else ""
            print(f"MISMATCH {m['table']} {m['key']}: {m['problem']}{fields}")
            print(f"  live:   {dumps(m['live'])}")
            print(f"  replay: {dumps(m['replay'])}")
        tables = ", ".join(f"{t} {n:,}" for t, n in report.tables.items())
        more = report.mismatches_found > len(report.mismatches)
        shown = f" (the first {len(report.mismatches):,} shown)" if more else ""
        print(f"{report.events_replayed:,} events replayed, {report.rows_compared:,} rows compared ({tables}):"
              f" {report.mismatches_found} mismatches{shown}")
    return EXIT_OK if report.ok else EXIT_FINDINGS


def _statements(args: argparse.Namespace) -> int:
    from processor.settings import Settings
    from replay.books import load_books
    from replay.fold import ReplayError
    from replay.render import report_csv, report_json, report_table
    from replay.statements import TimeParseError, build_report, parse_known_at, parse_through

    fmt = "json" if args.json and args.format is None else (args.format or "table")
    if fmt == "pdf" and not args.out:
        print("error: --format pdf writes a file: give --out FILE", file=sys.stderr)
        return EXIT_USAGE
    try:  # a bad date is a usage error before anything is opened
        known_at = parse_known_at(args.known_at, tz=Settings().plan.timezone)
        through = parse_through(args.through)
    except TimeParseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with _dsn(args) as (dsn, settings):
        plan = settings.plan
        try:
            with _progress(fmt == "table" or args.out is not None, None, "replaying") as step:
                books = load_books(dsn, plan, known_at=known_at, account_id=args.account, progress=step,
                                   verify=fmt in ("html", "pdf"))
        except ReplayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FINDINGS
    res = books.result
    if args.account is not None and args.account not in res.accounts:
        print(f"account {args.account} is not in the archive as known at {known_at.isoformat()}", file=sys.stderr)
        return EXIT_FINDINGS
    data: str | bytes
    if fmt in ("html", "pdf"):
        from replay.documents import DocumentError, html_to_pdf, render_document

        kind = "member" if args.account else "agency" if args.payer else "books"
        try:
            page = render_document(kind, books, payer_id=args.payer, account_id=args.account, through=through)
        except DocumentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FINDINGS
        data = html_to_pdf(page) if fmt == "pdf" else page
    else:
        report = build_report(res, plan, known_at=known_at, through=through, known_at_input=args.known_at,
                              through_input=args.through, account_id=args.account, payer_id=args.payer,
                              issued_on=books.issued_on)
        if fmt == "json":
            data = dumps(report_json(report)) + "\n"
        elif fmt == "csv":
            data = report_csv(report)
        else:
            data = report_table(report)
    return write_output(data, args.out, f"{fmt}, known at {known_at.isoformat()}")


def write_output(data: str | bytes, out: str | None, what: str) -> int:
    """Write to ``out`` (or stdout); binary data needs a file."""
    if out:
        path = Path(out)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
        print(f"wrote {out} ({what})", file=sys.stderr)
    elif isinstance(data, bytes):
        print("error: this format is binary: give --out FILE", file=sys.stderr)
        return EXIT_USAGE
    else:
        sys.stdout.write(data)
    return EXIT_OK


def _archive_checker(settings: Any, dsn: str) -> Callable[[], dict[str, Any]]:
    """Recompute the hash chain and check the signed checkpoints (projections/anchor.py); the result is
    ``verify-archive --json``'s document. Raises processor.keys.KeyRequired without an anchor key."""
    from processor.app import running_embedded_broker
    from processor.keys import anchor_key
    from projections.anchor import anchor_logs, archive_identity, verify_anchors
    from projections.postgres import PostgresStore
    from replay.archive import connect

    key = anchor_key(settings)

    def check() -> dict[str, Any]:
        archive = archive_identity(dsn)
        logs = anchor_logs(settings, archive, settings.kafka_bootstrap_servers or running_embedded_broker(settings))
        store = PostgresStore(dsn)
        try:
            chain = store.verify_archive()
        finally:
            store.close()
        with connect(dsn) as conn:
            try:
                anchors = verify_anchors(conn, key, logs, archive)
            finally:
                conn.rollback()
        broken: dict[str, Any] | None = None
        if chain.first_broken is not None:
            b = chain.first_broken
            broken = {"seq": b.seq, "partition": b.partition, "event_id": b.event_id, "reason": b.reason,
                      "kind": b.kind}
        elif anchors.findings:
            f = anchors.findings[0]
            broken = {"seq": f.seq, "partition": f.partition, "event_id": f.event_id, "reason": f.reason,
                      "kind": f.kind}
        return {"events_checked": chain.events_checked, "partitions": chain.partitions, "first_broken": broken,
                "checkpoints": anchors.checkpoints, "events_unanchored": anchors.events_unanchored,
                "checkpoint_logs": anchors.logs,
                "anchor_findings": [{"kind": f.kind, "partition": f.partition, "seq": f.seq, "event_id": f.event_id,
                                     "reason": f.reason} for f in anchors.findings]}

    return check


def cmd_verify_archive(args: argparse.Namespace) -> int:
    """Recompute the archive's hash chain and check its signed checkpoints; name the first broken link,
    a truncated tail or a rewritten one. Exit 0 clean, 1 broken, 2 no anchor key (outside the demo)."""
    from processor.app import open_store
    from processor.settings import Settings

    settings = Settings()
    with open_store(settings, database=args.database) as store:
        dsn = getattr(store, "dsn", None)
        if not isinstance(dsn, str):  # pragma: no cover - open_store always gives a PostgresStore
            raise RuntimeError("this store keeps no hash chain")
        doc = _archive_checker(settings, dsn)()
    broken = doc["first_broken"]
    if args.json:
        sys.stdout.write(dumps(doc) + "\n")
    else:
        if broken is None:
            print(f"archive intact: {doc['events_checked']:,} events checked over {doc['partitions']} partition"
                  f" chains")
        else:
            print(f"BROKEN at seq {broken['seq']} (partition {broken['partition']}, event {broken['event_id']}):"
                  f" {broken['reason']}; {doc['events_checked']:,} events checked")
        for f in doc["anchor_findings"][1 if broken is not None and broken["kind"] not in ("chain", "head") else 0:]:
            print(f"  {f['kind']}: {f['reason']}")
        print(f"{doc['checkpoints']:,} signed checkpoints checked ({', '.join(doc['checkpoint_logs'])});"
              f" {doc['events_unanchored']:,} events archived since the last checkpoint of their partition")
    return EXIT_OK if broken is None else EXIT_FINDINGS


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Projections afresh from the archive in a new schema, verified, switched in atomically."""
    from replay.rebuild import rebuild

    with _dsn(args) as (dsn, settings), _progress(not args.json, None, "rebuilding") as step:
        check = _archive_checker(settings, dsn)  # refuses to rebuild over an archive that fails verification

        def archive_problem() -> str | None:
            broken = check()["first_broken"]
            return None if broken is None else (f"seq {broken['seq']} (partition {broken['partition']},"
                                                f" event {broken['event_id']}): {broken['reason']}")

        report = rebuild(dsn, settings.plan, switch=not args.no_switch, progress=step, check_archive=archive_problem,
                         accounts_max=settings.replay_accounts_max, bytes_max=settings.replay_bytes_max)
    if args.json:
        sys.stdout.write(dumps(report.as_json()) + "\n")
    else:
        for m in report.mismatches[:50]:
            print(f"MISMATCH {m['table']} {m['key']}: {m['problem']} {m['fields']}")
        print(f"{report.events_replayed:,} events replayed into schema {report.built_schema}"
              f" ({report.rows_compared:,} rows verified, {len(report.mismatches)} mismatches)")
        if report.switched:
            print(f"switched: {report.live_schema} is the rebuilt schema ({report.caught_up} events caught up"
                  f" under the lock); the previous one is kept as {report.retired_schema}")
        elif report.archive_problem is not None:
            print(f"NOT rebuilt: the archive fails verification ({report.archive_problem}); run verify-archive")
        elif report.mismatches:
            print(f"NOT switched: the rebuilt schema {report.built_schema} does not verify; it is kept for inspection")
        else:
            print(f"not switched (--no-switch): inspect {report.built_schema}, then drop it or run rebuild again")
    return EXIT_OK if not report.mismatches else EXIT_FINDINGS


def add_audit_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``replay`` (and later audit) subcommands of ``benefits-ledger``."""
    p = sub.add_parser(
        "replay", parents=[common],
        help="the books as known at recorded time R for coverage months through E, or --verify replay = live",
    )
    p.add_argument("--verify", action="store_true",
                   help="fold the whole archive and compare every projection row with the live tables")
    p.add_argument("--workers", type=int, default=1,
                   help="--verify: fold the partitions in this many processes (same snapshot)")
    p.add_argument("--known-at", dest="known_at", metavar="R",
                   help="recorded time: a date (end of that day, plan time zone), YYYY-MM, or an ISO time;"
                   " default now")
    p.add_argument("--through", metavar="E", help="last coverage month reported (YYYY-MM or a date); default all")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--account", help="one member account")
    who.add_argument("--payer", help="one paying agency (or a direct-pay member's account)")
    p.add_argument("--format", choices=["table", "json", "csv", "html", "pdf"], default=None,
                   help="output format (default table, json with --json); html and pdf are the statement"
                   " documents: a member's with --account, an agency's with --payer, every agency without")
    p.add_argument("--out", metavar="FILE", help="write the report to FILE instead of stdout")
    p.set_defaults(fn=cmd_replay)

    va = sub.add_parser("verify-archive", parents=[common],
                        help="recompute the archive's hash chain and name the first broken link")
    va.set_defaults(fn=cmd_verify_archive)

    rb = sub.add_parser("rebuild", parents=[common],
                        help="rebuild the projections from the archive in a new schema, verify, switch atomically")
    rb.add_argument("--no-switch", action="store_true", help="build and verify only; keep the live schema")
    rb.set_defaults(fn=cmd_rebuild)

    from replay.report_commands import add_report_parsers

    add_report_parsers(sub, common)
