"""One log format for the whole process (the ledger's loggers, Faust, aiokafka): plain lines or JSON lines.

``LEDGER_LOG_FORMAT=json`` gives one JSON object per line (python-json-logger) with ``time``, ``level``,
``logger`` and ``message`` (and ``exc_info`` for a traceback, still on the one line). Neither format
writes terminal escape codes: no colour handler is installed, whether or not stderr is a terminal.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import IO, Any, Literal

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"

LogFormat = Literal["text", "json"]

# The format configure() installed last: the final error line of a command follows it (processor/exits.py).
current_format: LogFormat = "text"

# Libraries that log a line per record or per request at INFO: kept at WARNING unless DEBUG is asked for.
_CHATTY = ("aiokafka", "kafka", "faust", "mode")


def logging_config(fmt: LogFormat, level: str = "INFO", stream: IO[str] | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary: one handler on stderr for the root logger."""
    formatter: dict[str, Any]
    if fmt == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "datefmt": DATE_FORMAT,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    else:
        formatter = {"format": TEXT_FORMAT, "datefmt": DATE_FORMAT}
    library_level = "DEBUG" if level == "DEBUG" else "WARNING"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ledger": formatter},
        "handlers": {"ledger": {"class": "logging.StreamHandler", "formatter": "ledger",
                                "stream": stream or sys.stderr}},
        "root": {"level": "WARNING", "handlers": ["ledger"]},
        "loggers": {
            "benefits_ledger": {"level": level, "propagate": True},
            "processor": {"level": level, "propagate": True},
            **{name: {"level": library_level, "propagate": True} for name in _CHATTY},
        },
    }


def configure(fmt: LogFormat = "text", level: str = "INFO", stream: IO[str] | None = None) -> dict[str, Any]:
    """Install the one handler; returns the config (``up`` hands the same one to the Faust worker)."""
    global current_format
    config = logging_config(fmt, level, stream)
    logging.config.dictConfig(config)
    current_format = fmt
    logging.captureWarnings(True)
    return config
