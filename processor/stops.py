"""Why the ledger stops on purpose, and the exit code each reason gives (documented in the README).

A ``LedgerStop`` is not a bug: it is a condition the ledger refuses to work through, with a message
that says what happened and what the operator does. ``benefits-ledger`` prints it as one line
(``error: ...``) and exits with its code instead of a traceback. Bugs still crash with a traceback,
before anything of their batch is committed.
"""

from __future__ import annotations

# The codes of processor/exits.py, so a supervisor can tell "do not just restart me" (4) from "restart me
# when the service is back" (3).
from processor.exits import EXIT_INTEGRITY as EXIT_DATA_INTEGRITY
from processor.exits import EXIT_UNREACHABLE as EXIT_OUTAGE


class LedgerStop(RuntimeError):
    """A reason to stop the ledger, with the exit code and a one-line message for the operator."""

    exit_code = 1
    kind = "stop"

    def one_line(self) -> str:
        text = " ".join(str(self).split())
        return f"{self.kind} ({type(self).__name__}): {text}"


class DataIntegrityStop(LedgerStop):
    """The broker's log is not the one the ledger's positions belong to (lost, truncated or replaced).

    Continuing would skip records or apply them in the wrong place; nothing is skipped or re-applied.
    """

    exit_code = EXIT_DATA_INTEGRITY
    kind = "data integrity stop"


class OutageStop(LedgerStop):
    """A service (PostgreSQL, the broker) stayed unreachable longer than ``outage_retry_seconds_max``."""

    exit_code = EXIT_OUTAGE
    kind = "outage"
