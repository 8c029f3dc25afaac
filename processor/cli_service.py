"""Running the ledger: ``up`` (the processor, the relay, the notifier), ``migrate`` and ``accept-log``."""

from __future__ import annotations

import argparse
import logging
import sys

from processor import exits
from processor.cli_support import load_settings, print_json
from processor.exits import EXIT_OK, EXIT_USAGE  # documented in processor/exits.py


def cmd_up(args: argparse.Namespace) -> int:
    import os
    import signal

    from processor.app import faust_app, open_ledger
    from processor.health import OpsServer
    from processor.logs import logging_config
    from processor.retry import quiet_repeats
    from processor.stops import LedgerStop

    settings = load_settings()
    if settings.demo_clock:
        raise exits.UsageError("LEDGER_DEMO_CLOCK is a demo-only setting: a ledger in service records events"
                               " at the time it accepts them; unset it")
    process = args.role in ("all", "processor")
    relay = args.role in ("all", "relay")
    # the notifier runs on its own role, or with all of them once an SMTP server is configured
    notify = args.role == "notifier" or (args.role == "all" and settings.notifier.smtp_host is not None)
    if args.role == "notifier" and settings.notifier.smtp_host is None:
        print("error: --role notifier needs an SMTP server: set LEDGER_NOTIFIER__SMTP_HOST", file=sys.stderr)
        return EXIT_USAGE
    level = args.loglevel.upper() if args.loglevel else settings.log_level
    stopped: list[LedgerStop] = []

    def on_stop(reason: LedgerStop) -> None:
        """A reason to stop (not a bug): end the worker as SIGTERM would, and exit with its code."""
        if not stopped:
            stopped.append(reason)
            os.kill(os.getpid(), signal.SIGTERM)

    with open_ledger(settings, database=args.database) as ledger:
        logging.getLogger("benefits_ledger").warning(
            "ledger up: broker %s, log %s, role %s", ledger.bootstrap, ledger.log_id, args.role
        )
        health = ledger.new_health()
        ops = OpsServer(health, settings.metrics_host, settings.metrics_port).start() if (
            settings.metrics_port is not None) else None
        app = faust_app(ledger, relay=relay, process=process, notify=notify, on_stop=on_stop)
        from faust.worker import Worker

        # The worker installs the same one-format handler (Faust's own would add colour codes).
        # --json: a service's output is its log, so JSON lines
        worker = Worker(app, loglevel=level, quiet=True, redirect_stdouts=False,
                        logging_config=logging_config("json" if args.json else settings.log_format, level))
        quiet_repeats()  # a broker that is gone makes the Kafka clients log an error per retry
        code = EXIT_OK
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            if ops is not None:
                ops.stop()
    if stopped:
        raise stopped[0]  # exits.run prints it as one line and exits with its code (3 or 4)
    if ledger.failure is not None:
        raise ledger.failure  # exits.run turns a lost service into 3; a bug keeps its traceback
    return code


def cmd_accept_log(args: argparse.Namespace) -> int:
    """Continue on a replaced log (LogReplaced) as a new log of the same cluster, from offset 0."""
    from processor.app import open_store
    from processor.embedded import broker_cluster_id
    from processor.kafka_clients import kafka_python_options

    settings = load_settings()
    if settings.kafka_bootstrap_servers is None:
        print("error: the embedded broker starts a new log each time `up` starts: there is nothing to accept",
              file=sys.stderr)
        return EXIT_USAGE
    exits.probe_broker(settings.kafka_bootstrap_servers, settings.connect_timeout_s)
    cluster = broker_cluster_id(settings.kafka_bootstrap_servers, **kafka_python_options(settings),
                                bootstrap_timeout_ms=int(settings.connect_timeout_s * 1000))
    with open_store(settings, database=args.database) as store:
        retired, new = store.start_new_log(cluster, args.reason)
    result = {"cluster_id": cluster, "retired_log_id": retired, "log_id": new}
    if args.json:
        print_json(result)
    else:
        print(f"log {retired} retired (its positions and archive stay as they are); the ledger now reads cluster"
              f" {cluster} as log {new}, from offset 0 of every partition: start `benefits-ledger up`")
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create the database if needed and apply the migrations (reading commands never do)."""
    from processor.app import open_store

    with open_store(load_settings(), database=args.database, migrate=True) as store:
        versions = store.applied_migrations() if hasattr(store, "applied_migrations") else []
        dsn = getattr(store, "dsn", "")
    import psycopg

    name = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname") if dsn else None
    if args.json:
        print_json({"database": name, "migrations": versions})
    else:
        print(f"database {name}: {len(versions)} migrations applied, the last {versions[-1] if versions else '-'}")
    return EXIT_OK
