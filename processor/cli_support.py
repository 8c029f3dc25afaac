"""What the commands of processor/cli.py share: plain JSON on stdout (--json) and the settings."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from typing import Any


def json_default(value: object) -> object:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, default=json_default, sort_keys=False) + "\n")


def dsn_dbname(dsn: str | None) -> str | None:
    import psycopg

    return psycopg.conninfo.conninfo_to_dict(dsn).get("dbname") if dsn else None  # type: ignore[return-value]


def load_settings() -> Any:
    from processor.settings import Settings

    return Settings()
