"""The outage policy without services: what is waited for, for how long, and what is said.

The integration side (real PostgreSQL crashed, a real broker cut off) is tests/faults/test_outages.py.
"""

from __future__ import annotations

import asyncio
import logging

import aiokafka.errors as ae
import kafka.errors as ke
import psycopg
import pytest

from processor.retry import Outage, RepeatFilter, is_broker_outage, is_database_outage, retry_async, retry_sync
from processor.stops import EXIT_DATA_INTEGRITY, EXIT_OUTAGE, OutageStop

LOG = logging.getLogger("test.outage")


def test_only_errors_that_mean_the_service_is_away_are_waited_for() -> None:
    assert is_database_outage(psycopg.OperationalError("connection refused"))
    assert is_database_outage(psycopg.errors.AdminShutdown("terminating connection"))
    assert not is_database_outage(psycopg.errors.NumericValueOutOfRange("bigint out of range"))
    assert not is_database_outage(psycopg.errors.UniqueViolation("duplicate key"))
    # the transient UnknownError writing to a new dead-letter topic, and the usual suspects
    for exc in (ae.UnknownError(), ae.KafkaConnectionError(), ae.KafkaTimeoutError(), ae.NodeNotReadyError(),
                ae.RequestTimedOutError(), ae.UnknownTopicOrPartitionError(), ke.KafkaTimeoutError(),
                ConnectionRefusedError()):
        assert is_broker_outage(exc), exc
    assert not is_broker_outage(ae.MessageSizeTooLargeError())
    assert not is_broker_outage(ValueError("a bug"))


def test_a_transient_error_is_retried_and_the_outage_ends_when_it_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    async def send() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ae.UnknownError("transient")
        return "sent"

    outage = Outage("the dead-letter topic", 30, LOG)
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        assert asyncio.run(retry_async(outage, send, is_broker_outage)) == "sent"
    assert len(calls) == 3 and not outage.down
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, "one line when it starts, one when it ends: not one per attempt"
    assert messages[0].startswith("waiting for the dead-letter topic (UnknownError")
    assert "retrying with backoff for up to 30 s (outage_retry_seconds_max)" in messages[0]
    assert messages[1].startswith("the dead-letter topic is back after")


def test_an_error_that_is_not_an_outage_is_raised_at_once() -> None:
    calls = []

    def write() -> None:
        calls.append(1)
        raise psycopg.errors.NumericValueOutOfRange("bigint out of range")

    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        retry_sync(Outage("PostgreSQL", 30, LOG), write, is_database_outage)
    assert calls == [1]


def test_past_the_bound_the_outage_is_a_stop_with_exit_code_75_and_a_message_that_says_what_to_do() -> None:
    outage = Outage("PostgreSQL", 0.3, LOG)

    def down() -> None:
        raise psycopg.OperationalError("connection to server failed: No such file or directory")

    with pytest.raises(OutageStop) as stop:
        retry_sync(outage, down, is_database_outage)
    assert stop.value.exit_code == EXIT_OUTAGE == 3 != EXIT_DATA_INTEGRITY == 4
    line = stop.value.one_line()
    assert line.startswith("outage (OutageStop): PostgreSQL unavailable for 0 s (outage_retry_seconds_max=0)")
    assert "No such file or directory" in line and "Nothing was lost" in line and "\n" not in line


def test_backoff_doubles_up_to_five_seconds_and_never_past_the_bound() -> None:
    outage = Outage("PostgreSQL", 3600, LOG)
    delays = [outage.failed(psycopg.OperationalError("x")) for _ in range(12)]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6] and max(delays) == 5.0
    short = Outage("PostgreSQL", 1.0, LOG)
    assert all(short.failed(psycopg.OperationalError("x")) <= 1.0 for _ in range(3))


def test_repeated_client_errors_are_rate_limited_and_tracebacks_become_one_line() -> None:
    flt = RepeatFilter(window_s=60)

    def record(msg: str, exc: BaseException | None = None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc is not None else None
        return logging.LogRecord("aiokafka.conn", logging.ERROR, __file__, 1, msg, (), info)

    passed = [flt.filter(record("Unable connect to node with id %s")) for _ in range(500)]
    assert passed.count(True) == 1, "500 identical errors, one line"
    other = record("Error receiving network data", ConnectionResetError("reset by peer"))
    assert flt.filter(other) and other.exc_info is None
    assert other.getMessage() == "Error receiving network data (ConnectionResetError: reset by peer)"
