"""The embedded stack against the real Tansu binary and the real embedded PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from processor.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    EmbeddedStack,
    broker_cluster_id,
    resolve_endpoints,
    stop_postgres_in,
)
from processor.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def postmasters_for(data_dir: Path) -> list[psutil.Process]:
    """Live (non-zombie) postgres processes serving data_dir."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        if proc.info["name"] == "postgres" and proc.info["status"] != psutil.STATUS_ZOMBIE:
            if proc.info["cmdline"] and str(data_dir.resolve()) in proc.info["cmdline"]:
                found.append(proc)
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run_child(code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True, env=env
    )


# -------------------------------------------------------------------------------------------- broker


def test_broker_round_trip(broker: EmbeddedBroker) -> None:
    topic = f"embedded-test-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send(topic, key=b"member-1", value=b"hello", partition=1, headers=[("h", b"v")])
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    try:
        partition = TopicPartition(topic, 1)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        records: list[Any] = []
        deadline = time.monotonic() + 10
        while not records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    assert [(r.key, r.value, r.headers) for r in records] == [(b"member-1", b"hello", [("h", b"v")])]


def test_cluster_id_is_reported_and_unique(broker: EmbeddedBroker) -> None:
    assert broker_cluster_id(broker.bootstrap) == broker.cluster_id
    with EmbeddedBroker() as second:
        assert second.bootstrap != broker.bootstrap
        assert second.cluster_id != broker.cluster_id
        assert broker_cluster_id(second.bootstrap) == second.cluster_id
        pid = second.pid
        assert pid is not None
    assert not alive(pid)
    assert second.pid is None
    second.stop()  # idempotent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_broker_dies_with_a_killed_parent() -> None:
    child = run_child(
        """
        import time
        from processor.embedded import EmbeddedBroker
        broker = EmbeddedBroker().start()
        print(broker.pid, flush=True)
        time.sleep(120)
        """
    )
    assert child.stdout is not None
    broker_pid = int(child.stdout.readline())
    assert alive(broker_pid)
    child.kill()
    child.wait()
    assert wait_dead(broker_pid), "Tansu outlived its SIGKILLed parent"


# ---------------------------------------------------------------------------------------- postgres


def test_postgres_start_twice_reuses_the_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "dirs" / "postgres"
    first, second = EmbeddedPostgres(data_dir), EmbeddedPostgres(data_dir)
    try:
        dsn = first.start()
        pid = first.pid
        assert pid is not None and alive(pid)
        assert second.start() == dsn
        assert second.pid == pid
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        first.stop()
        assert alive(pid), "stopped while another handle in this process still used it"
    finally:
        first.stop()
        second.stop()
    assert wait_dead(pid)
    assert postmasters_for(data_dir) == []


def test_postgres_reuses_the_server_of_a_killed_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "postgres"
    child = run_child(
        f"""
        import os, signal
        from processor.embedded import EmbeddedPostgres
        pg = EmbeddedPostgres({str(data_dir)!r})
        pg.start()
        print(pg.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert child.stdout is not None
    orphan_pid = int(child.stdout.readline())
    child.wait()
    try:
        assert alive(orphan_pid), "the PostgreSQL daemon is expected to outlive a killed parent"
        with EmbeddedPostgres(data_dir) as pg:
            assert pg.pid == orphan_pid
            with psycopg.connect(pg.dsn) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        assert wait_dead(orphan_pid)
        assert postmasters_for(data_dir) == []
    finally:
        stop_postgres_in(data_dir)


def test_stop_postgres_in_stops_a_left_over_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "postgres"
    child = run_child(
        f"""
        import os, signal
        from processor.embedded import EmbeddedPostgres
        EmbeddedPostgres({str(data_dir)!r}).start()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    child.wait()
    try:
        assert postmasters_for(data_dir) != []
        assert stop_postgres_in(data_dir) is True
        assert postmasters_for(data_dir) == []
        assert stop_postgres_in(data_dir) is False
    finally:
        stop_postgres_in(data_dir)


def test_postgres_data_survives_stop_and_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "postgres"
    pg = EmbeddedPostgres(data_dir)
    try:
        with psycopg.connect(pg.start()) as conn:
            conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO kept VALUES (1, 'still here')")
        first_pid = pg.pid
        pg.stop()
        assert first_pid is not None and wait_dead(first_pid)
        assert postmasters_for(data_dir) == []

        with psycopg.connect(pg.start()) as conn:
            assert conn.execute("SELECT note FROM kept WHERE id = 1").fetchone() == ("still here",)
        assert pg.pid != first_pid
    finally:
        pg.stop()
    assert postmasters_for(data_dir) == []


def test_pg_dsn_is_a_fresh_private_database(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert name is not None and name[0].startswith("test_")
    assert tables == (0,)


# ------------------------------------------------------------------------------------------- stack


def test_embedded_stack_starts_and_stops_both(tmp_path: Path) -> None:
    with EmbeddedStack(tmp_path / "postgres") as stack:
        broker_pid, pg_pid = stack.broker.pid, stack.postgres.pid
        assert broker_cluster_id(stack.bootstrap) == stack.cluster_id
        with psycopg.connect(stack.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert broker_pid is not None and not alive(broker_pid)
    assert pg_pid is not None and wait_dead(pg_pid)


def test_resolve_endpoints_uses_configured_services(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    with resolve_endpoints(settings) as (bootstrap, dsn, cluster_id):
        assert bootstrap == settings.kafka_bootstrap_servers
        assert dsn == settings.database_url
        assert cluster_id is None
    assert not (settings.data_dir / "postgres").exists()


def test_resolve_endpoints_embedded_stops_everything_on_sigterm(tmp_path: Path) -> None:
    child = run_child(
        f"""
        import time
        from processor.embedded import resolve_endpoints
        from processor.settings import Settings
        settings = Settings(data_dir={str(tmp_path)!r})
        with resolve_endpoints(settings) as (bootstrap, dsn, cluster_id):
            print(bootstrap, cluster_id, dsn, flush=True)
            time.sleep(120)
        """
    )
    assert child.stdout is not None
    bootstrap, cluster_id, dsn = child.stdout.readline().split()
    try:
        assert broker_cluster_id(bootstrap) == cluster_id
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        broker_pids = [p.pid for p in psutil.Process(child.pid).children() if "tansu" in p.name()]
        assert len(broker_pids) == 1
        assert postmasters_for(tmp_path / "postgres") != []

        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 128 + signal.SIGTERM
        assert wait_dead(broker_pids[0])
        assert postmasters_for(tmp_path / "postgres") == []
    finally:
        if child.poll() is None:
            child.kill()
        stop_postgres_in(tmp_path / "postgres")
