"""``benefits-ledger replay`` end to end: a small known history through the real pipeline in two phases,
then the CLI as a subprocess on both time axes, ``--verify`` and a tampered projection row."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from events.types import InputEvent
from processor.app import Ledger, open_ledger, run_services
from processor.embedded import EmbeddedBroker, EmbeddedPostgres
from processor.settings import Settings
from tests.conftest import ledger_keys_env, unique_topics
from tests.unit.builders import ACCOUNT, AGENCY, FEB, JAN, MAR, adjust, bill, enroll, pay, rate

RATE = 78_412
REPO_ROOT = Path(__file__).resolve().parents[2]


def cli(args: list[str], env: dict[str, str], *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("benefits-ledger")
    argv = [str(script), *args] if script.exists() else [sys.executable, "-m", "processor.cli", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


async def _process_until(ledger: Ledger, received: int) -> None:
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(ledger, stop, relay=False))
    watcher = ledger.store()
    deadline = time.monotonic() + 60
    try:
        while (await asyncio.to_thread(watcher.counts)).received < received:
            if services.done():
                services.result()
            assert time.monotonic() < deadline, f"processor did not reach {received} records"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await services


@dataclass
class History:
    env: dict[str, str]
    dsn: str
    between: datetime  # recorded time after phase 1 was applied and before phase 2 was published
    applied: int


PHASE_1: list[InputEvent] = [
    rate(RATE, event_id="r-rate"), enroll(event_id="r-enr"),
    bill(RATE, month=JAN, event_id="r-bill-jan", bill_id="B-JAN", due_on=date(2026, 1, 10)),
    pay(70_000, month=JAN, event_id="r-pay-jan", payment_id="P-JAN"),
    bill(RATE, month=FEB, event_id="r-bill-feb", bill_id="B-FEB", due_on=date(2026, 2, 10)),
    adjust(-1_000, month=FEB, event_id="r-adj-feb", adjustment_id="A-FEB"),
]
PHASE_2: list[InputEvent] = [
    pay(8_412, month=JAN, event_id="r-pay-jan-2", payment_id="P-JAN-2"),
    bill(RATE, month=MAR, event_id="r-bill-mar", bill_id="B-MAR", due_on=date(2026, 3, 10)),
]


@pytest.fixture(scope="module")
def history(broker: EmbeddedBroker, pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[History]:
    """The two phases, once per module (the tests that tamper put things back, or come last)."""
    name = f"test_replay_cli_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    data_dir = tmp_path_factory.mktemp("replay-cli")
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=pg_server.dsn_for(name),
                        topics=unique_topics(), partitions=4, data_dir=data_dir,
                        consumer_group=f"replay-cli-{uuid.uuid4().hex[:8]}")
    received = 0
    try:
        with open_ledger(settings) as ledger:
            publisher = ledger.publisher()
            try:
                for i, phase in enumerate((PHASE_1, PHASE_2)):
                    if i == 1:
                        time.sleep(0.05)
                        between = datetime.now(UTC)
                        time.sleep(0.05)
                    publisher.publish(phase)
                    publisher.flush()
                    received += sum(settings.partitions if type(e).BROADCAST else 1 for e in phase)
                    asyncio.run(_process_until(ledger, received))
            finally:
                publisher.close()
            applied = ledger.store().counts().applied
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update({"PYTHONPATH": str(REPO_ROOT), "LEDGER_DATA_DIR": str(data_dir),
                    "LEDGER_DATABASE_URL": ledger.dsn, "LEDGER_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                    **ledger_keys_env()})
        yield History(env, ledger.dsn, between, applied)
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _lines(doc: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    (member,) = doc["members"]
    return {line["coverage_month"]: line for line in member["lines"]}


def test_statements_on_both_time_axes(history: History, tmp_path: Path) -> None:  # first: reads only
    r = history.between.isoformat()
    before = cli(["replay", "--known-at", r, "--account", ACCOUNT, "--json"], history.env)
    assert before.returncode == 0, before.stderr
    doc = json.loads(before.stdout)
    assert doc["known_at"] == r and doc["known_at_input"] == r
    lines = _lines(doc)
    assert list(lines) == ["2026-01-01", "2026-02-01"]  # the March bill was recorded after R
    assert (lines["2026-01-01"]["billed_cents"], lines["2026-01-01"]["paid_cents"],
            lines["2026-01-01"]["balance_cents"]) == (78_412, 70_000, 8_412)
    assert (lines["2026-02-01"]["adjustments_cents"], lines["2026-02-01"]["balance_cents"]) == (-1_000, 77_412)
    assert doc["members"][0]["totals"]["balance_cents"] == 85_824
    assert [d["kind"] for d in doc["open_discrepancies"]] == ["underpaid"]

    now = json.loads(cli(["replay", "--account", ACCOUNT, "--json"], history.env).stdout)
    assert _lines(now)["2026-01-01"]["balance_cents"] == 0  # the top-up recorded after R
    assert now["members"][0]["totals"]["balance_cents"] == 77_412 + 78_412
    assert now["open_discrepancies"] == []
    assert now["events_replayed"] == history.applied - 3  # not the other partitions' rate copies

    through = cli(["replay", "--through", "2026-01", "--payer", AGENCY, "--format", "csv",
                   "--out", str(tmp_path / "agency.csv")], history.env)
    assert through.returncode == 0, through.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "agency.csv").read_text())))
    payer_lines = [x for x in rows if x["record"] == "payer_line"]
    assert [(x["id"], x["coverage_month"], x["billed_cents"], x["paid_cents"], x["balance_cents"])
            for x in payer_lines] == [(AGENCY, "2026-01-01", "78412", "78412", "0")]
    assert {x["through"] for x in rows} == {"2026-01-31"}

    table = cli(["replay", "--known-at", r], history.env)
    assert table.returncode == 0, table.stderr
    assert "$858.24" in table.stdout and "underpaid" in table.stdout


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_html_report_renders_in_headless_chromium(history: History, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium: apt-get install chromium (make test installs it)")
    page = tmp_path / "statement.html"
    made = cli(["replay", "--known-at", history.between.isoformat(), "--format", "html", "--out", str(page)],
               history.env)
    assert made.returncode == 0, made.stderr
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    assert history.between.isoformat() in rendered
    assert "The books: every paying agency" in rendered
    assert 'id="chart-aging"' in rendered and "<svg" in rendered  # aging by agency, drawn by vl-convert
    assert 'id="chain-verified"' in rendered and "Verified intact" in rendered
    shot = tmp_path / "statement.png"
    png = subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)
    assert png.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, png.stderr[-2000:]


def test_verify_is_clean_then_reports_a_tampered_row(history: History) -> None:
    ok = cli(["replay", "--verify", "--json"], history.env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["events_replayed"] == history.applied and doc["mismatches"] == []
    assert doc["rows_compared"] > 0
    with psycopg.connect(history.dsn, autocommit=True) as conn:
        conn.execute("UPDATE member_month SET billed_cents = 1 WHERE account_id = %s AND coverage_month = %s",
                     (ACCOUNT, FEB))
    bad = cli(["replay", "--verify", "--json"], history.env)
    assert bad.returncode == 1
    (mismatch,) = json.loads(bad.stdout)["mismatches"]
    assert mismatch["table"] == "member_month" and mismatch["key"] == [ACCOUNT, "2026-02-01"]
    assert mismatch["live"]["billed_cents"] == 1 and mismatch["replay"]["billed_cents"] == RATE
    human = cli(["replay", "--verify"], history.env)
    assert human.returncode == 1 and "MISMATCH member_month" in human.stdout
    with psycopg.connect(history.dsn, autocommit=True) as conn:  # put it back for the next test
        conn.execute("UPDATE member_month SET billed_cents = %s WHERE account_id = %s AND coverage_month = %s",
                     (RATE, ACCOUNT, FEB))
    assert cli(["replay", "--verify", "--json"], history.env).returncode == 0


def test_rebuild_switches_to_a_verified_schema(history: History) -> None:
    before = json.loads(cli(["replay", "--account", ACCOUNT, "--json"], history.env).stdout)
    dry = cli(["rebuild", "--no-switch", "--json"], history.env)
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert doc["switched"] is False and doc["mismatches"] == [] and doc["events_replayed"] == history.applied
    done = cli(["rebuild", "--json"], history.env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["switched"] is True and doc["live_schema"] == "public" and doc["retired_schema"]
    assert cli(["replay", "--verify"], history.env).returncode == 0
    after = json.loads(cli(["replay", "--account", ACCOUNT, "--json"], history.env).stdout)
    assert after["members"] == before["members"]


def test_worksheet_on_both_time_axes_and_in_every_format(history: History, tmp_path: Path) -> None:
    from openpyxl import load_workbook
    from pypdf import PdfReader

    r = history.between.isoformat()
    before = cli(["worksheet", "--payer", AGENCY, "--month", "2026-01", "--known-at", r, "--json"], history.env)
    assert before.returncode == 0, before.stderr
    doc = json.loads(before.stdout)
    # as known at R: January billed $784.12, $700.00 paid, no remittance record: underpaid explains -$84.12
    assert {k: doc[k] for k in ("billed_cents", "remitted_cents", "lines_cents", "applied_cents", "unapplied_cents",
                                "unexplained_cents")} == {
        "billed_cents": RATE, "remitted_cents": 70_000, "lines_cents": 70_000, "applied_cents": 70_000,
        "unapplied_cents": 0, "unexplained_cents": 0}
    assert [(e["kind"], e["status"], e["cents"]) for e in doc["exceptions"]] == [("underpaid", "open", -8_412)]
    assert len(doc["exceptions"][0]["discrepancy_id"]) == 24
    now = json.loads(cli(["worksheet", "--payer", AGENCY, "--month", "2026-01", "--json"], history.env).stdout)
    assert (now["remitted_cents"], now["variance_cents"], now["unexplained_cents"]) == (RATE, 0, 0)
    assert [(e["kind"], e["status"], e["cents"]) for e in now["exceptions"]] == [("underpaid", "resolved", 0)]
    assert now["exceptions"][0]["resolution"].startswith("resolved by payment_received r-pay-jan-2")
    for fmt in ("csv", "xlsx", "html", "pdf"):
        out = tmp_path / f"worksheet.{fmt}"
        made = cli(["worksheet", "--payer", AGENCY, "--month", "2026-01", "--known-at", r, "--format", fmt,
                    "--out", str(out)], history.env)
        assert made.returncode == 0 and out.stat().st_size > 0, made.stderr
    assert "underpaid" in (tmp_path / "worksheet.csv").read_text()
    summary = {row[0]: row[1] for row in load_workbook(tmp_path / "worksheet.xlsx")["Summary"].iter_rows(
        values_only=True) if row and row[0]}
    assert str(summary["Variance (remitted - net billed)"]) == "-84.12"
    html = (tmp_path / "worksheet.html").read_text()
    assert "Reconciliation worksheet: AG-001, January 2026" in html and "Verified intact" in html
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(tmp_path / "worksheet.pdf").pages).split())
    assert "-$84.12" in text and "$784.12" in text
    assert cli(["worksheet", "--payer", AGENCY, "--month", "2026-13"], history.env).returncode == 2
    assert cli(["worksheet", "--payer", AGENCY, "--month", "2026-01", "--format", "xlsx"], history.env).returncode == 2
    assert cli(["worksheet", "--payer", "AG-NOBODY", "--month", "2026-01"], history.env).returncode == 1


def test_member_and_agency_statements_as_pdf(history: History, tmp_path: Path) -> None:
    from pypdf import PdfReader

    for who in (["--account", ACCOUNT], ["--payer", AGENCY]):
        out = tmp_path / f"{who[1]}.pdf"
        made = cli(["replay", *who, "--known-at", history.between.isoformat(), "--format", "pdf", "--out", str(out)],
                   history.env)
        assert made.returncode == 0, made.stderr
        text = " ".join(" ".join(p.extract_text() for p in PdfReader(out).pages).split())
        assert "$858.24" in text and "Verified intact" in text  # the balance as known at R; the chain footer
    assert cli(["replay", "--format", "pdf"], history.env).returncode == 2  # a PDF needs --out


def test_notices_as_known_at_r_are_written_and_made_again_the_same(history: History, tmp_path: Path) -> None:
    from pypdf import PdfReader

    r = history.between.isoformat()
    made = cli(["notices", "--payer", AGENCY, "--known-at", r, "--out", str(tmp_path / "a"), "--json"], history.env)
    assert made.returncode == 0, made.stderr
    (notice,) = json.loads(made.stdout)["notices"]
    assert (notice["recipient"], notice["recipient_id"], notice["total_due_cents"]) == (
        "agency_coordinator", AGENCY, 8_412)
    html = Path(notice["file"]).read_text()
    assert "paid $84.12 short" in html and "What to do:" in html
    again = json.loads(cli(["notices", "--payer", AGENCY, "--known-at", r, "--out", str(tmp_path / "b"), "--json"],
                           history.env).stdout)
    assert again["notices"][0]["document_sha256"] == notice["document_sha256"]  # the same document from R
    assert Path(again["notices"][0]["file"]).read_text() == html
    now = json.loads(cli(["notices", "--payer", AGENCY, "--out", str(tmp_path / "c"), "--json"], history.env).stdout)
    assert now["notices"] == []  # the top-up after R resolved the only action
    pdf = cli(["notices", "--payer", AGENCY, "--known-at", r, "--format", "pdf", "--out", str(tmp_path / "d")],
              history.env)
    assert pdf.returncode == 0, pdf.stderr
    (path,) = (tmp_path / "d").glob("*.pdf")
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(path).pages).split())
    assert "$84.12" in text and notice["notice_id"] in text


def test_verify_archive_names_the_first_broken_link(history: History) -> None:  # last: alters the archive
    ok = cli(["verify-archive", "--json"], history.env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    clean = json.loads(ok.stdout)
    assert (clean["events_checked"], clean["first_broken"], clean["anchor_findings"]) == (history.applied, None, [])
    assert clean["checkpoints"] > 0 and clean["events_unanchored"] == 0  # the processor anchored at stop
    with psycopg.connect(history.dsn, autocommit=True) as conn:
        seq, event_id, partition = conn.execute(
            "SELECT seq, event_id, partition FROM archive WHERE event_id = 'r-pay-jan'").fetchone() or (0, "", 0)
        conn.execute("ALTER TABLE archive DISABLE TRIGGER archive_no_update_delete")
        conn.execute("UPDATE archive SET body = convert_to(replace(convert_from(body, 'UTF8'), '70000', '7000'),"
                     " 'UTF8'), body_hash = sha256(convert_to(replace(convert_from(body, 'UTF8'), '70000',"
                     " '7000'), 'UTF8')) WHERE seq = %s", (seq,))
        conn.execute("ALTER TABLE archive ENABLE TRIGGER archive_no_update_delete")
    bad = cli(["verify-archive", "--json"], history.env)
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    assert doc["events_checked"] == history.applied
    assert {k: doc["first_broken"][k] for k in ("seq", "partition", "event_id")} == {
        "seq": seq, "partition": partition, "event_id": event_id}
    human = cli(["verify-archive"], history.env)
    assert human.returncode == 1 and f"BROKEN at seq {seq}" in human.stdout
