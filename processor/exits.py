"""Exit codes and the one-line errors every command ends with instead of a traceback.

| code | meaning |
|---|---|
| 0 | done, nothing to report |
| 1 | done, and what it found is not clean (rejected lines, a missed discrepancy, a mismatch) |
| 2 | usage: a bad option or argument, an invalid setting, a database that does not exist |
| 3 | a service is unreachable: the message names it and the setting that points at it |
| 4 | a deliberate stop to protect the data (a truncated log, a broken archive): do not just restart |

A bug is not translated: it keeps its traceback (and exit 1) so that it can be fixed.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTEGRITY = 4

DATABASE_SETTING = "LEDGER_DATABASE_URL"
BROKER_SETTING = "LEDGER_KAFKA_BOOTSTRAP_SERVERS"


class LedgerExit(Exception):
    """An expected way for a command to end: a one-line message and its exit code."""

    code = EXIT_FINDINGS

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(LedgerExit):
    code = EXIT_USAGE


class ServiceUnreachable(LedgerExit):
    code = EXIT_UNREACHABLE


class IntegrityStop(LedgerExit):
    code = EXIT_INTEGRITY


def _host_ports(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for part in bootstrap.split(","):
        part = part.strip()
        if not part:
            continue
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"{BROKER_SETTING}: {part!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise UsageError(f"{BROKER_SETTING} is empty")
    return out


def probe_broker(bootstrap: str, timeout_s: float, *, setting: str = BROKER_SETTING) -> None:
    """Raise ServiceUnreachable unless some bootstrap server accepts a TCP connection within timeout_s.

    The Kafka clients retry for 30 s or more before they give up; this answers in ``timeout_s``.
    """
    reasons = []
    deadline = time.monotonic() + timeout_s
    for host, port in _host_ports(bootstrap):
        left = max(0.1, deadline - time.monotonic())
        try:
            with socket.create_connection((host, port), timeout=left):
                return
        except OSError as exc:
            reasons.append(f"{host}:{port}: {exc.strerror or exc}")
    raise ServiceUnreachable(f"Kafka unreachable: no broker of {setting}={bootstrap} answers ({'; '.join(reasons)})")


def probe_database(dsn: str, timeout_s: float, *, setting: str = DATABASE_SETTING) -> None:
    """Raise ServiceUnreachable (the server does not answer) or UsageError (it answers, but the database
    does not exist or refuses the login)."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout_s))):
            return
    except psycopg.OperationalError as exc:
        raise database_error(exc, dsn, setting=setting) from exc


def database_error(exc: BaseException, dsn: str, *, setting: str = DATABASE_SETTING) -> LedgerExit:
    """The one-line form of a failed PostgreSQL connection."""
    import psycopg

    text = " ".join(str(exc).split())
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        info = {}
    where = f"{info.get('host') or 'local socket'}:{info.get('port') or 5432}"
    name = info.get("dbname") or "postgres"
    if "does not exist" in text and "database" in text:
        return UsageError(f"database {name!r} does not exist on {where}: run `benefits-ledger migrate` to create it"
                          f" (or check --database / LEDGER_DATABASE_NAME / {setting})")
    if "password authentication failed" in text or "no password supplied" in text:
        return UsageError(f"PostgreSQL at {where} refused the login ({text.split(':')[-1].strip()}): check {setting}"
                          " and LEDGER_DATABASE_PASSWORD")
    return ServiceUnreachable(f"PostgreSQL unreachable at {where} ({setting}): {_short(text)}")


def _short(text: str, limit: int = 200) -> str:
    # libpq's message repeats the address and adds a hint on a second line; the first clause is the reason
    text = text.split(" Is the server running")[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify(exc: BaseException) -> LedgerExit | None:
    """The LedgerExit an exception stands for, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, LedgerExit):
        return exc
    from processor.stops import LedgerStop

    if isinstance(exc, LedgerStop):  # a truncated or replaced log (4), an outage past its bound (3)
        return LedgerExit(exc.one_line(), exc.exit_code)
    from pydantic import ValidationError

    from processor.settings import PlanFileError

    if isinstance(exc, PlanFileError):
        return UsageError(str(exc))
    from processor.keys import KeyRequired
    from projections.postgres import MigrationNeedsAdmin

    if isinstance(exc, KeyRequired | MigrationNeedsAdmin):  # set up before it can run (processor/keys.py, roles)
        return UsageError(str(exc))
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"LEDGER_{'__'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        return UsageError(f"invalid settings: {problems}")
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        return ServiceUnreachable(f"PostgreSQL unreachable ({DATABASE_SETTING}): {_short(' '.join(str(exc).split()))}")
    import aiokafka.errors
    import kafka.errors

    lost = tuple(getattr(module, name) for module in (kafka.errors, aiokafka.errors)
                 for name in ("NoBrokersAvailable", "KafkaTimeoutError", "KafkaConnectionError")
                 if hasattr(module, name))
    if isinstance(exc, lost):
        return ServiceUnreachable(f"Kafka unreachable ({BROKER_SETTING}): {exc}")
    return None


def _write_error(line: str) -> None:
    """The final line on stderr, in the log format in force: with JSON logs it is a JSON log line too."""
    from processor import logs

    if logs.current_format == "json":
        import logging

        logging.getLogger("benefits_ledger").error(line.removeprefix("error: "))
    else:
        print(line, file=sys.stderr)


def run(fn: Callable[[], int], *, stderr: Callable[[str], None] | None = None) -> int:
    """Run a command; an expected failure becomes one line on stderr and its exit code."""
    write = stderr or _write_error
    try:
        return int(fn())
    except KeyboardInterrupt:
        write("interrupted; everything started was stopped")
        return 130
    except Exception as exc:
        known = classify(exc)
        if known is None:
            raise
        write(f"error: {known}")
        return known.code
