"""Ingest through the real pipeline: files -> adapters -> Publisher -> Tansu -> processor -> PostgreSQL.

The SSN scan reads back everything the program wrote (every table, every topic, logs and output).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from events.adapters.ingest import ingest
from processor.app import open_ledger
from processor.settings import Settings
from tests.fixtures import X12_SAMPLES
from tests.integration.test_pipeline import consume_all, derived_count, process_until

SAMPLES = X12_SAMPLES
FAMILY = SAMPLES / "834_pyx12_deident_family.txt"
TERM = SAMPLES / "834_pyx12_deident_term.txt"
LIST_BILL = SAMPLES / "820_X218_list_bill_payment.edi"
REMITTANCE_ONLY = SAMPLES / "820_X218_list_bill_remittance_only.edi"

SSN_834 = ("518274963", "518274964", "518274965")
SSN_820 = ("518274971", "518274972")
# The SSNs the real 820 samples carry in ENT04 (ENT03 = 34)
SAMPLE_820_SSNS = ("030440099", "029500563", "029480664", "030498099", "163910163", "179203456")


def rewrite(source: Path, target: Path, *pairs: tuple[str, str]) -> Path:
    text = source.read_text()
    for old, new in pairs:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    target.write_text(text)
    return target


def ssn_files(tmp_path: Path) -> list[Path]:
    enrollment = rewrite(FAMILY, tmp_path / "ssn-834.x12",
                         ("REF*0F*M000002~", f"REF*0F*{SSN_834[0]}~"), ("REF*0F*M000003~", f"REF*0F*{SSN_834[0]}~"),
                         ("34*000000002", f"34*{SSN_834[0]}"), ("34*000000003", f"34*{SSN_834[1]}"),
                         ("34*000000004", f"34*{SSN_834[2]}"), ("*000000002*0*T*", "*000000042*0*T*"),
                         ("IEA*1*000000002", "IEA*1*000000042"))
    payment = rewrite(LIST_BILL, tmp_path / "ssn-820.edi",
                      ("ENT*1*2J*34*030440099", f"ENT*1*2J*34*{SSN_820[0]}"),
                      ("NM1*EY*1*DOE*JOHN****EI*777222", f"NM1*EY*1*DOE*JOHN****34*{SSN_820[0]}"),
                      ("ENT*2*2J*34*029500563", f"ENT*2*2J*34*{SSN_820[1]}"),
                      ("NM1*EY*1*FIRSTONE*EMILY****EI*777333", f"NM1*EY*1*FIRSTONE*EMILY****34*{SSN_820[1]}"),
                      ("TRN*1*78905*", "TRN*1*78906*"))
    return [enrollment, payment]


def dump_database(dsn: str) -> bytes:
    """Every value of every table, text as UTF-8 and bytea as its raw bytes."""
    out: list[bytes] = []
    with psycopg.connect(dsn) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename").fetchall()]
        assert {"archive", "discrepancy", "account_snapshot"} <= set(tables)
        for table in tables:
            for row in conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))):
                for value in row:
                    out.append(value if isinstance(value, bytes) else str(value).encode())
    return b"\n".join(out)


def test_ingest_samples_through_the_pipeline_is_idempotent_and_stores_no_ssn(
    settings_factory: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_factory()
    imbalanced = rewrite(LIST_BILL, tmp_path / "imbalanced.edi", ("BPR*C*255*", "BPR*C*260*"),
                         ("TRN*1*78905*", "TRN*1*78907*"))
    paths = [str(p) for p in (FAMILY, TERM, LIST_BILL, REMITTANCE_ONLY, *ssn_files(tmp_path), imbalanced)]

    with open_ledger(settings) as ledger:
        first = ingest(paths, settings, publisher=ledger.publisher)
        assert [f.format for f in first.files] == ["x12-834", "x12-834", "x12-820", "x12-820", "x12-834",
                                                   "x12-820", "x12-820"]
        assert [len(f.events) for f in first.files] == [3, 2, 7, 4, 3, 7, 7]
        assert [f.errors for f in first.files] == [[]] * 7
        assert [(d.kind, d.expected_cents, d.actual_cents) for f in first.files for d in f.discrepancies] == [
            ("remittance_total_mismatch", 25_500, 26_000)]
        assert first.published_events == first.records == 33
        asyncio.run(process_until(ledger, first.records, relay=True))
        store = ledger.store()
        counts = store.counts()
        reports = derived_count(ledger.dsn)  # each 820 line posted is reported to its payer's account
        assert reports == 6 + 3 + 6 + 6  # every line of the four 820s (advice lines too, posted without cash)
        assert (counts.received, counts.applied, counts.duplicates, counts.dead_lettered) == (
            33 + reports, 33 + reports, 0, 0)

        [mismatch] = store.discrepancies(open_only=True, kind="remittance_total_mismatch")
        assert (mismatch.account_id, mismatch.expected_cents, mismatch.actual_cents, mismatch.actor) == (
            "payer:123456789", 25_500, 26_000, "payroll")
        family = store.balance("M000002")
        assert family is not None
        assert sorted(c.member_id for c in family.coverages) == ["M000002", "M000003", "M000004"]

        # the same files again: nothing new is applied, every record is a duplicate
        again = ingest(paths, settings, publisher=ledger.publisher)
        assert again.records == 33
        asyncio.run(process_until(ledger, 66, relay=True))
        counts = store.counts()
        assert (counts.received, counts.applied, counts.duplicates, counts.dead_lettered) == (
            66 + reports, 33 + reports, 33, 0)
        assert store.archive_count() == 33 + reports
        dsn = ledger.dsn

    written = dump_database(dsn)
    topics = settings.topics
    records = consume_all(settings.kafka_bootstrap_servers or "", *topics.inputs(), topics.discrepancies,
                          topics.dead_letter)
    assert len(records) >= 66
    written += b"".join((r.key or b"") + (r.value or b"") for r in records)
    captured = capfd.readouterr()
    written += (captured.out + captured.err + caplog.text).encode()
    assert b"ssn-" in written and b"777444" in written and b"M000004" in written, "the scan sees ids"
    for ssn in (*SSN_834, *SSN_820, *SAMPLE_820_SSNS):
        assert ssn.encode() not in written, f"SSN {ssn} was written somewhere"


def test_an_audit_834_is_compared_with_the_ledger_not_applied_blindly(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    from tests.conftest import ledger_keys_env
    from tests.e2e.test_cli import base_env, run_cli

    settings = settings_factory()
    audit = rewrite(FAMILY, tmp_path / "audit.x12", ("****2~", "****4~"), ("INS*Y*18*021", "INS*Y*18*030"),
                    ("INS*N*01*021", "INS*N*01*030"), ("INS*N*19*021", "INS*N*19*030"),
                    ("HD*021**PPO**FAM", "HD*030**PPO**ESP"), ("*000000002*0*T*", "*000000077*0*T*"),
                    ("IEA*1*000000002", "IEA*1*000000077"))
    with open_ledger(settings) as ledger:
        first = ingest([str(FAMILY)], settings, publisher=ledger.publisher)
        asyncio.run(process_until(ledger, first.records, relay=False))
        env = base_env(tmp_path, LEDGER_DATABASE_URL=ledger.dsn, LEDGER_KAFKA_BOOTSTRAP_SERVERS=ledger.bootstrap,
                       **{f"LEDGER_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()},
                       **ledger_keys_env())
        same = rewrite(audit, tmp_path / "same.x12", ("HD*030**PPO**ESP", "HD*030**PPO**FAM"))
        run = run_cli(["ingest", "--dry-run", "--compare", "--json", str(same)], env, tmp_path, timeout=60)
        assert run.returncode == 0, run.stderr
        [unchanged] = run.json()["files"]
        assert unchanged["events"] == [] and unchanged["audit"] == [], "the same terms publish nothing"

        run = run_cli(["ingest", "--compare", "--json", str(audit)], env, tmp_path, timeout=60)
        assert run.returncode == 0, run.stderr
        [entry] = run.json()["files"]
        assert [(a["member_id"], a["difference"], a["ledger"]["tier"], a["file"]["tier"])
                for a in entry["audit"]] == [(m, "differs", "FAM", "ESP") for m in ("M000002", "M000003", "M000004")]
        assert [e["action"] for e in entry["events"]] == ["change"] * 3
        asyncio.run(process_until(ledger, first.records + 3, relay=False))
        balance = ledger.store().balance("M000002")
        assert balance is not None
        assert {c.tier for c in balance.coverages if c.end_on is None} == {"ESP"}


def test_files_as_real_senders_write_them_reach_the_ledger_and_nothing_is_dead_lettered(
    settings_factory: Callable[..., Settings],
) -> None:
    """HD05 absent (derived, then kept through a change that does not say it), BPR04 NON advice,
    take-backs, remittance-level ADX and a quarter's period split to the cent, through the real
    broker and PostgreSQL: every event is applied, none dead-lettered."""
    hand = SAMPLES / "handwritten"
    settings = settings_factory()
    with open_ledger(settings) as ledger:
        first = ingest([str(hand / "834_hd05_absent_derivable.txt")], settings, publisher=ledger.publisher)
        asyncio.run(process_until(ledger, first.records, relay=False))
        change = ingest([str(hand / "834_hd05_absent_not_derivable.txt")], settings, publisher=ledger.publisher)
        [event] = [e for f in change.files for e in f.events if getattr(e, "tier", "x") is None
                   and getattr(e, "action", "") == "change"]
        assert event.missing_elements == ("HD05 (file 834_hd05_absent_not_derivable.txt, line 10, segment 8)",)
        names = ("820_advice_bpr01_i_bpr04_non.edi", "820_takeback_negative_rmr04.edi",
                 "820_adx_remittance_and_line_level.edi", "820_period_several_months.edi")
        payments = ingest([str(hand / n) for n in names], settings, publisher=ledger.publisher)
        assert [f.errors for f in change.files + payments.files] == [[]] * 5
        total = first.records + change.records + payments.records
        asyncio.run(process_until(ledger, total, relay=False))
        store = ledger.store()
        counts = store.counts()
        assert (counts.received, counts.applied, counts.duplicates, counts.dead_lettered) == (total, total, 0, 0)
        balance = store.balance("M4001")
        assert balance is not None
        health = sorted((c for c in balance.coverages if c.member_id == "M4001" and c.coverage_line == "health"),
                        key=lambda c: c.begin_on)
        assert [(c.plan, c.tier, str(c.begin_on)) for c in health] == [
            ("UMP", "FAM", "2026-04-01"), ("UMP-PLUS", "FAM", "2026-05-01")], "the change kept the derived tier"
