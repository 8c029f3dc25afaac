"""Issue 12, item 7: a database superuser who rewrites or truncates the archive and makes the hash chain
agree again (the database's own archive_chain_link(), a rewound archive_chain_head) is caught by the
checkpoints signed outside the database: verify-archive names the tampering and exits 1, rebuild
refuses to switch."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from processor.app import open_ledger
from processor.entrypoints.demo import generate, run_program
from processor.settings import Settings
from projections.postgres import PostgresStore
from tests.conftest import ledger_keys_env
from tests.e2e.test_cli import cli_argv

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Ledger:
    settings: Settings
    dsn: str  # a superuser's: the tamperer's
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli_argv(*args), env=self.env, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL, check=False)

    def verify_archive(self) -> tuple[int, dict]:  # type: ignore[type-arg]
        run = self.cli("verify-archive", "--json")
        assert run.returncode in (0, 1), run.stderr
        return run.returncode, json.loads(run.stdout)

    def anchor_file(self) -> Path:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        return Path(self.settings.data_dir) / "anchors" / f"{row[0]}.jsonl"


@pytest.fixture
def ledger(settings_factory: Callable[..., Settings]) -> Ledger:
    """A small program through the real pipeline; the processor checkpoints every few events."""
    settings = settings_factory(anchor_interval_events_max=7)
    with open_ledger(settings) as running:
        asyncio.run(run_program(running, generate(members=20, months=3, seed=21)))
    assert settings.database_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update({"PYTHONPATH": str(REPO_ROOT), "LEDGER_DATA_DIR": str(settings.data_dir),
                "LEDGER_DATABASE_URL": settings.database_url,
                "LEDGER_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "", **ledger_keys_env()})
    found = Ledger(settings, settings.database_url, env)
    code, doc = found.verify_archive()
    assert code == 0 and doc["first_broken"] is None and doc["anchor_findings"] == []
    assert doc["checkpoints"] >= 4 and doc["events_unanchored"] == 0, doc
    return found


def chain_is_intact(dsn: str) -> bool:
    store = PostgresStore(dsn)
    try:
        return store.verify_archive().intact
    finally:
        store.close()


def newest_row(dsn: str) -> tuple[int, int, str]:
    """(seq, partition, event_id) of the newest event of the partition with the most events."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT seq, partition, event_id FROM archive WHERE partition = (SELECT partition FROM archive"
            " GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1) ORDER BY seq DESC LIMIT 1").fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), str(row[2])


def test_deleting_the_newest_event_and_rewinding_the_head_is_named_a_truncated_tail(ledger: Ledger) -> None:
    seq, partition, event_id = newest_row(ledger.dsn)
    with psycopg.connect(ledger.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE archive DISABLE TRIGGER archive_no_update_delete")
        conn.execute("DELETE FROM archive WHERE seq = %s", (seq,))
        conn.execute("ALTER TABLE archive ENABLE TRIGGER archive_no_update_delete")
        conn.execute("UPDATE archive_chain_head SET chain_hash = (SELECT chain_hash FROM archive WHERE partition = %s"
                     " ORDER BY seq DESC LIMIT 1) WHERE partition = %s", (partition, partition))
    assert chain_is_intact(ledger.dsn), "the database's own chain check is fooled"

    code, doc = ledger.verify_archive()
    assert code == 1
    broken = doc["first_broken"]
    assert (broken["kind"], broken["partition"], broken["seq"], broken["event_id"]) == (
        "truncated", partition, seq, event_id)
    assert "truncated" in broken["reason"] and "deleted" in broken["reason"]
    human = ledger.cli("verify-archive")
    assert human.returncode == 1 and f"BROKEN at seq {seq}" in human.stdout and "truncated" in human.stdout


def test_changing_an_amount_and_recomputing_the_chain_is_named_a_rewritten_tail(ledger: Ledger) -> None:
    with psycopg.connect(ledger.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT seq, partition, event_id, convert_from(body, 'UTF8')::jsonb ->> 'amount_cents' FROM archive"
            " WHERE event_type = 'payment_received' ORDER BY seq LIMIT 1 OFFSET 3").fetchone()
        assert row is not None
        seq, partition, amount = int(row[0]), int(row[1]), int(row[3])
        forged = amount * 1000
        conn.execute("ALTER TABLE archive DISABLE TRIGGER archive_no_update_delete")
        conn.execute(
            "UPDATE archive SET body = convert_to(jsonb_set(convert_from(body, 'UTF8')::jsonb, '{amount_cents}',"
            " to_jsonb(%s::bigint))::text, 'UTF8') WHERE seq = %s", (forged, seq))
        conn.execute("UPDATE archive SET body_hash = sha256(body) WHERE seq = %s", (seq,))
        conn.execute("""
            DO $$
            DECLARE r archive; h bytea;
            BEGIN
                SELECT chain_hash INTO h FROM archive WHERE partition = %(p)s AND seq < %(s)s ORDER BY seq DESC LIMIT 1;
                h := coalesce(h, decode(repeat('00', 32), 'hex'));
                FOR r IN SELECT * FROM archive WHERE partition = %(p)s AND seq >= %(s)s ORDER BY seq LOOP
                    h := archive_chain_link(h, r);
                    UPDATE archive SET chain_hash = h WHERE seq = r.seq;
                END LOOP;
                UPDATE archive_chain_head SET chain_hash = h WHERE partition = %(p)s;
            END $$""".replace("%(p)s", str(partition)).replace("%(s)s", str(seq)))
        conn.execute("ALTER TABLE archive ENABLE TRIGGER archive_no_update_delete")
        assert conn.execute("SELECT convert_from(body, 'UTF8')::jsonb ->> 'amount_cents' FROM archive WHERE seq = %s",
                            (seq,)).fetchone() == (str(forged),)
    assert chain_is_intact(ledger.dsn), "the database's own chain check is fooled"

    code, doc = ledger.verify_archive()
    assert code == 1
    broken = doc["first_broken"]
    assert broken["kind"] == "rewritten" and broken["partition"] == partition and broken["seq"] >= seq
    assert "rewritten" in broken["reason"] and f"up to seq {broken['seq']}" in broken["reason"]
    assert all(f["kind"] == "rewritten" and f["partition"] == partition for f in doc["anchor_findings"])

    # rebuild would turn the forged amount into books that verify: it refuses, and builds nothing
    with psycopg.connect(ledger.dsn) as conn:
        schemas = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'public_%'").fetchone()
    run = ledger.cli("rebuild", "--json")
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["switched"] is False and "rewritten" in report["archive_problem"]
    assert report["mismatches"][0]["table"] == "archive"
    with psycopg.connect(ledger.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'public_%'").fetchone() == schemas
    human = ledger.cli("rebuild")
    assert human.returncode == 1 and "NOT rebuilt: the archive fails verification" in human.stdout


def test_a_forged_checkpoint_line_is_named_and_fails_the_check(ledger: Ledger) -> None:
    path = ledger.anchor_file()
    lines = path.read_bytes().splitlines()
    doc = json.loads(lines[-1])
    doc["seq"] += 1_000  # a checkpoint the ledger never wrote, without the key to sign it
    with path.open("ab") as fh:
        fh.write(json.dumps(doc).encode() + b"\n")
    code, report = ledger.verify_archive()
    assert code == 1
    assert report["first_broken"]["kind"] == "checkpoint"
    assert f"{path}:{len(lines) + 1}" in report["first_broken"]["reason"]
    assert "signature does not match" in report["first_broken"]["reason"]


def test_verify_archive_refuses_to_run_without_the_anchor_key(ledger: Ledger) -> None:
    env = {k: v for k, v in ledger.env.items() if k != "LEDGER_ANCHOR_HMAC_KEY"}
    run = subprocess.run(cli_argv("verify-archive"), env=env, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL, check=False)
    assert run.returncode == 2 and "LEDGER_ANCHOR_HMAC_KEY" in run.stderr and "Traceback" not in run.stderr
    other = {**ledger.env, "LEDGER_ANCHOR_HMAC_KEY": "another-key-of-at-least-32-bytes-long-enough"}
    wrong = subprocess.run(cli_argv("verify-archive", "--json"), env=other, capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["first_broken"]["kind"] == "checkpoint"


def test_checkpoints_on_a_topic_catch_a_truncated_tail_without_the_file(
    settings_factory: Callable[..., Settings],
) -> None:
    """Production: several workers append to one checkpoint topic; the file alone would be per host."""
    topic = f"ledger.checkpoints.{os.urandom(6).hex()}"
    settings = settings_factory(anchor_interval_events_max=50, anchor_topic=topic)
    with open_ledger(settings) as running:
        asyncio.run(run_program(running, generate(members=20, months=3, seed=22)))
    assert settings.database_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update({"PYTHONPATH": str(REPO_ROOT), "LEDGER_DATA_DIR": str(settings.data_dir),
                "LEDGER_DATABASE_URL": settings.database_url, "LEDGER_ANCHOR_TOPIC": topic,
                "LEDGER_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "", **ledger_keys_env()})
    ledger = Ledger(settings, settings.database_url, env)
    ledger.anchor_file().unlink()  # only the topic is left
    code, doc = ledger.verify_archive()
    assert code == 0 and doc["checkpoints"] >= 4 and doc["events_unanchored"] == 0, doc
    assert doc["checkpoint_logs"][-1] == f"topic {topic}"

    seq, partition, event_id = newest_row(ledger.dsn)
    with psycopg.connect(ledger.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE archive DISABLE TRIGGER archive_no_update_delete")
        conn.execute("DELETE FROM archive WHERE seq = %s", (seq,))
        conn.execute("ALTER TABLE archive ENABLE TRIGGER archive_no_update_delete")
        conn.execute("UPDATE archive_chain_head SET chain_hash = (SELECT chain_hash FROM archive WHERE partition = %s"
                     " ORDER BY seq DESC LIMIT 1) WHERE partition = %s", (partition, partition))
    code, doc = ledger.verify_archive()
    assert code == 1
    assert {k: doc["first_broken"][k] for k in ("kind", "partition", "seq", "event_id")} == {
        "kind": "truncated", "partition": partition, "seq": seq, "event_id": event_id}
