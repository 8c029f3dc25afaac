"""Shared fixtures: the embedded broker and PostgreSQL, started only by tests that ask for them."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from processor.embedded import EmbeddedBroker, EmbeddedPostgres, stop_postgres_in
from processor.settings import Settings, TopicSettings

_INTEGRATION_DIRS = ("integration", "e2e", "faults")
_SERVICE_FIXTURES = {"broker", "pg_server", "pg_dsn"}
_previous_sigterm: Any = None

# Keys of the test runs (processor/keys.py): outside the embedded demo the ledger refuses to ingest or
# process without keys of at least 32 bytes. Subprocesses get them through ledger_keys_env().
TEST_KEYS = {
    "LEDGER_MEMBER_ID_HMAC_KEY": "test-member-id-key-0123456789abcdef0123456789",
    "LEDGER_ANCHOR_HMAC_KEY": "test-anchor-key-0123456789abcdef0123456789abcdef",
}


# Every write checks that no month changed without being marked dirty (projections/model.py), in the
# test process and in the ledger processes the tests start.
CHECKS = {"LEDGER_CHECK_MONTH_WRITES": "1"}


def ledger_keys_env() -> dict[str, str]:
    return {**TEST_KEYS, **CHECKS}


def pytest_configure(config: pytest.Config) -> None:
    """Turn SIGTERM into KeyboardInterrupt so pytest still runs fixture teardown (stops servers)."""
    global _previous_sigterm
    os.environ.update(TEST_KEYS)  # also for module- and session-scoped fixtures (before _test_keys runs)
    os.environ.update(CHECKS)
    if threading.current_thread() is threading.main_thread():

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        _previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _previous_sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _previous_sigterm)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests under tests/integration, tests/e2e or using the servers as ``integration``."""
    for item in items:
        parts = Path(str(item.path)).parts
        uses_services = bool(_SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        if uses_services or any(d in parts for d in _INTEGRATION_DIRS):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _no_ledger_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep LEDGER_* variables of the developer's shell out of Settings built by tests."""
    for name in list(os.environ):
        if name.startswith("LEDGER_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _test_keys(_no_ledger_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**TEST_KEYS, **CHECKS}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One Tansu broker for the whole session (tests use unique topic names)."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """One embedded PostgreSQL for the whole session, stopped at the end whatever happened."""
    data_dir = tmp_path_factory.mktemp("pg-session") / "postgres"
    server = EmbeddedPostgres(data_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        stop_postgres_in(data_dir)  # belt and braces: nothing may outlive the session


@pytest.fixture
def pg_dsn(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """DSN of a fresh, empty database for this test only (dropped afterwards)."""
    import psycopg
    from psycopg import sql

    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_server.dsn_for(name)
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def unique_topics(suffix: str | None = None) -> TopicSettings:
    """Topic names private to one test (the session broker is shared)."""
    suffix = suffix or uuid.uuid4().hex[:12]
    defaults = TopicSettings()
    return TopicSettings(
        **{field: f"{getattr(defaults, field)}.{suffix}" for field in TopicSettings.model_fields}
    )


@pytest.fixture
def settings_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Settings]:
    """Build Settings against the session broker and a fresh database; keyword arguments override.

    The broker and database start only when the factory is first called. Every call in one test
    uses the same topics and database, so several processors in a test see the same records.
    """
    topics = unique_topics()

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"topics": topics, "partitions": 4, "data_dir": tmp_path}
        if "kafka_bootstrap_servers" not in overrides:
            values["kafka_bootstrap_servers"] = request.getfixturevalue("broker").bootstrap
        if "database_url" not in overrides:
            values["database_url"] = request.getfixturevalue("pg_dsn")
        values.update(overrides)
        return Settings(**values)

    return build
