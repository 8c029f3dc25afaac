"""The ``benefits-ledger`` command end to end, as subprocesses: embedded mode, and against the test broker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from kafka import KafkaConsumer, TopicPartition

from events import codec
from events.types import DISCREPANCY_KINDS, EnrollmentChanged, PremiumBilled
from processor.embedded import EmbeddedBroker, stop_postgres_in
from processor.settings import Settings, TopicSettings
from processor.topics import ensure_topics

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_DB = "benefits_ledger_demo"
DEMO_KEYS = {
    "events_published", "events_applied", "events_dead_lettered", "discrepancies_expected",
    "discrepancies_detected", "missed", "spurious", "events_per_second", "elapsed_seconds",
    "discrepancies_by_kind", "discrepancies_by_status", "status_mismatched", "events_derived", "claims_expected",
    "claims_adjudicated", "claims_by_decision", "claims_mismatched", "discrepancy_amounts_checked",
    "amounts_mismatched", "amounts_mismatched_by_kind", "amount_examples", "member_months_checked",
    "balances_mismatched", "balance_examples", "proration", "remittance_lines_reported", "claim_payments",
    "payers_checked", "unapplied_mismatched", "unapplied_examples", "payments_reversed",
}


# ---------------------------------------------------------------------------------------------- helpers


def cli_argv(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("benefits-ledger")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "processor.cli", *args]


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update({"PYTHONPATH": str(REPO_ROOT), "LEDGER_DATA_DIR": str(data_dir), **extra})
    return env


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    children: dict[int, str] = field(default_factory=dict)  # every descendant seen: pid -> name

    def json(self) -> Any:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one JSON document on stdout, got:\n{self.stdout}\n{self.stderr}"
        return json.loads(lines[0])


def run_cli(args: list[str], env: dict[str, str], cwd: Path, *, timeout: float = 120.0,
            interrupt_when: Any = None) -> Run:
    """Run the CLI, remembering every descendant process it had (to check none outlives it).

    ``interrupt_when(proc, children)`` is polled; when it returns True the process gets SIGINT.
    """
    out_path, err_path = cwd / f"out-{uuid.uuid4().hex[:6]}", cwd / f"err-{uuid.uuid4().hex[:6]}"
    children: dict[int, str] = {}
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(cli_argv(*args), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err)
        deadline = time.monotonic() + timeout
        interrupted = False
        try:
            while proc.poll() is None:
                try:
                    for child in psutil.Process(proc.pid).children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            # the latest name: a child seen between its fork and its exec still bears
                            # its parent's name (the broker first looks like benefits-ledger)
                            children[child.pid] = child.name()
                except psutil.Error:
                    pass
                if interrupt_when is not None and not interrupted and interrupt_when(proc, children):
                    proc.send_signal(signal.SIGINT)
                    interrupted = True
                if time.monotonic() > deadline:
                    raise AssertionError(f"{args} did not finish in {timeout:.0f} s")
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return Run(proc.returncode, out_path.read_text(errors="replace"), err_path.read_text(errors="replace"),
               children)


def live(pid: int) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except psutil.Error:
        return None


def postmasters_for(data_dir: Path) -> list[int]:
    """Live (non-zombie) postgres processes whose command line names data_dir."""
    found = []
    needle = str(data_dir.resolve())
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        info = proc.info
        if info["name"] == "postgres" and info["status"] != psutil.STATUS_ZOMBIE and info["cmdline"]:
            if any(needle in part for part in info["cmdline"]):
                found.append(proc.pid)
    return found


def assert_nothing_left(data_dir: Path, run: Run, *, wait: float = 15.0) -> None:
    """No PostgreSQL for the data dir and no process the CLI started (Tansu, pg_ctl...) is alive."""
    deadline = time.monotonic() + wait
    while True:
        servers = postmasters_for(data_dir / "postgres")
        survivors = [p for p in (live(pid) for pid in run.children) if p is not None]
        if not servers and not survivors:
            return
        if time.monotonic() > deadline:
            names = [(p.pid, p.name()) for p in survivors]
            raise AssertionError(f"left behind: postgres {servers}, processes {names}")
        time.sleep(0.1)


def running_child(children: dict[int, str], name: str) -> bool:
    return any(name in n and live(pid) is not None for pid, n in children.items())


# ------------------------------------------------------------------------------------ embedded demo


@dataclass
class DemoRun:
    data_dir: Path
    env: dict[str, str]
    run: Run
    report: dict[str, Any]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """``benefits-ledger demo --members 60 --months 4 --seed 5 --json`` with the embedded stack, once."""
    data_dir = tmp_path_factory.mktemp("cli-demo")
    env = base_env(data_dir)
    try:
        run = run_cli(["demo", "--members", "60", "--months", "4", "--seed", "5", "--json"], env, data_dir)
        assert run.returncode in (0, 1), run.stderr[-3000:]  # 1: findings not clean (asserted below)
        yield DemoRun(data_dir, env, run, run.json())
    finally:
        stop_postgres_in(data_dir / "postgres")


def test_demo_in_embedded_mode_reports_every_injected_discrepancy_as_json(demo: DemoRun) -> None:
    report = demo.report
    assert isinstance(report, dict)
    assert DEMO_KEYS <= set(report)
    assert report["missed"] == 0 and report["spurious"] == 0 and report["status_mismatched"] == 0
    assert report["discrepancies_detected"] == report["discrepancies_expected"] > 0
    # every finding's amounts and every member-month's figures, to the cent, against the demo's oracle
    assert report["discrepancy_amounts_checked"] == report["discrepancies_expected"]
    assert report["member_months_checked"] > report["discrepancies_expected"]
    assert report["balances_mismatched"] == 0, report["balance_examples"]
    assert report["unapplied_mismatched"] == 0 and report["payers_checked"] > 0, report["unapplied_examples"]
    assert report["amounts_mismatched"] == sum(report["amounts_mismatched_by_kind"].values())
    assert report["proration"] == "whole_month"
    # the ledger posted a payment of its own for each cash application and reported each remittance line
    # to its payer's account: received = published + derived
    assert report["cash_applications"] >= 1 and report["remittance_lines_reported"] >= 1
    assert report["events_derived"] == report["cash_applications"] + report["remittance_lines_reported"]
    assert report["events_published"] + report["events_derived"] == (
        report["events_applied"] + report["events_duplicate"] + report["events_dead_lettered"])
    assert report["counts_add_up"] is True
    assert report["events_dead_lettered"] == 3
    assert report["discrepancies_by_status"]["resolved"] >= 1 and report["refunds_returned"] >= 1
    assert report["payments_reversed"] >= 1  # the refund paid out of money that then bounced
    # the kinds of issue 11: enrollment order, eligibility, refunds of reversed money
    assert {"unknown_coverage", "eligibility", "refund_recovery"} <= set(report["discrepancies_by_kind"])
    # every FSA claim adjudicated (read from the claims topic) as the generator decided it, and every
    # later payment of a pending dependent-care remainder
    assert report["claims_mismatched"] == 0
    assert report["claims_adjudicated"] == report["claims_expected"] > 0
    assert report["claim_payments"] >= 1
    assert set(report["claims_by_decision"]) == {"approved", "partially_approved", "denied", "pending"}
    assert sum(report["claims_by_decision"].values()) == report["claims_expected"]
    assert all(n > 0 for n in report["claims_by_decision"].values())
    assert report["events_per_second"] > 0 and report["elapsed_seconds"] > 0
    by_kind = report["discrepancies_by_kind"]
    assert by_kind and set(by_kind) <= set(DISCREPANCY_KINDS)
    assert sum(by_kind.values()) == report["discrepancies_detected"]
    assert report["database"] == DEMO_DB


def test_demo_exits_0_with_every_amount_right(demo: DemoRun) -> None:
    assert demo.report["amounts_mismatched"] == 0, demo.report["amount_examples"]
    assert demo.run.returncode == 0


def test_demo_leaves_no_postgres_or_broker_running(demo: DemoRun) -> None:
    names = set(demo.run.children.values())
    assert any("tansu" in n for n in names) and "postgres" in names, f"servers not seen running: {names}"
    assert_nothing_left(demo.data_dir, demo.run)


def query(demo: DemoRun, *args: str) -> Any:
    run = run_cli(list(args), demo.env, demo.data_dir, timeout=60)
    assert run.returncode == 0, f"{args}: {run.stderr[-2000:]}"
    assert_nothing_left(demo.data_dir, run)
    return run.json()


def test_query_commands_read_the_demo_database_consistently(demo: DemoRun) -> None:
    report = demo.report
    summary = query(demo, "summary", "--json", "--database", DEMO_DB)
    open_rows = query(demo, "discrepancies", "--database", DEMO_DB, "--open", "--json")
    all_rows = query(demo, "discrepancies", "--database", DEMO_DB, "--json")

    assert summary["counts"] == {
        "received": report["events_published"] + report["events_derived"], "applied": report["events_applied"],
        "duplicates": report["events_duplicate"], "dead_lettered": report["events_dead_lettered"],
    }
    assert summary["discrepancies_opened_by_kind"] == report["discrepancies_by_kind"]
    assert len(all_rows) == report["discrepancies_detected"]
    assert all(r["status"] == "open" for r in open_rows)
    assert Counter(r["kind"] for r in open_rows) == summary["discrepancies_open_by_kind"]
    assert {r["discrepancy_id"] for r in open_rows} <= {r["discrepancy_id"] for r in all_rows}
    assert summary["billed_cents"] == report["billed_cents"]
    assert summary["accounts"] == report["accounts"] == 60

    account = next(r["account_id"] for r in open_rows if r["account_id"].startswith("M"))
    balance = query(demo, "balance", account, "--database", DEMO_DB, "--json")
    assert balance["account_id"] == account
    assert balance["balance_cents"] == sum(m["balance_cents"] for m in balance["months"])
    for m in balance["months"]:
        assert m["balance_cents"] == m["billed_cents"] + m["adjusted_cents"] - m["paid_cents"]
        date.fromisoformat(m["coverage_month"])
    assert sorted(d["discrepancy_id"] for d in balance["open_discrepancies"]) == sorted(
        r["discrepancy_id"] for r in open_rows if r["account_id"] == account)
    assert balance["coverages"] and all(c["account_id"] == account for c in balance["coverages"])

    by_account = query(demo, "discrepancies", "--database", DEMO_DB, "--account", account, "--json")
    assert sorted(r["discrepancy_id"] for r in by_account) == sorted(
        r["discrepancy_id"] for r in all_rows if r["account_id"] == account)

    letters = query(demo, "deadletter", "list", "--database", DEMO_DB, "--json")
    assert len(letters) == report["events_dead_lettered"]
    assert all(d["reason"] for d in letters)

    unknown = run_cli(["balance", "NO-SUCH-ACCOUNT", "--database", DEMO_DB, "--json"], demo.env,
                      demo.data_dir)
    assert unknown.returncode == 1
    assert unknown.json() == {"account_id": "NO-SUCH-ACCOUNT", "error": "unknown account"}
    assert_nothing_left(demo.data_dir, unknown)


def test_the_demo_archive_is_recorded_on_business_time_so_the_books_read_as_they_stood(demo: DemoRun) -> None:
    """Issue 14 item 6: the demo's clock follows the program's business days, so a missing payment is
    open as known before the payment that resolved it was recorded, and not after."""
    rows = query(demo, "discrepancies", "--database", DEMO_DB, "--json")
    opened = sorted(datetime.fromisoformat(r["opened_recorded_at"]) for r in rows)
    assert opened[-1] - opened[0] > timedelta(days=60)  # four months of business, not a few seconds
    settled = [r for r in rows if r["kind"] in ("missing_payment", "underpaid") and r["status"] == "resolved"
               and r["account_id"].startswith("M")
               and datetime.fromisoformat(r["resolved_recorded_at"]) - datetime.fromisoformat(
                   r["opened_recorded_at"]) > timedelta(days=1)]
    assert settled, "the demo settles some missing or short payments later"
    row = settled[0]
    before = datetime.fromisoformat(row["resolved_recorded_at"]) - timedelta(hours=12)
    after = datetime.fromisoformat(row["resolved_recorded_at"]) + timedelta(seconds=1)

    def open_ids(known_at: datetime) -> set[str]:
        report = query(demo, "replay", "--database", DEMO_DB, "--known-at", known_at.isoformat(),
                       "--account", row["account_id"], "--json")
        return {d["discrepancy_id"] for d in report["open_discrepancies"]}

    assert row["discrepancy_id"] in open_ids(before)
    assert row["discrepancy_id"] not in open_ids(after)


def test_global_options_before_the_subcommand_are_honoured(demo: DemoRun) -> None:
    run = run_cli(["--json", "--database", DEMO_DB, "summary"], demo.env, demo.data_dir, timeout=60)
    assert_nothing_left(demo.data_dir, run)
    assert run.returncode == 0
    summary = run.json()
    assert summary["counts"]["received"] == demo.report["events_published"] + demo.report["events_derived"]


# ------------------------------------------------------------------------------------------ publish


def test_publish_reports_the_bad_line_with_file_line_and_field(
    broker: EmbeddedBroker, tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:12]
    defaults = TopicSettings()
    topics = TopicSettings(**{f: f"{getattr(defaults, f)}.{suffix}" for f in TopicSettings.model_fields})
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url="postgresql:///unused",
                        topics=topics, partitions=4, data_dir=tmp_path)
    ensure_topics(broker.bootstrap, settings)
    env = base_env(tmp_path, LEDGER_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, LEDGER_PARTITIONS="4",
                   **{f"LEDGER_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items()})

    t0 = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
    good = EnrollmentChanged(
        event_id=f"cli-enr-{suffix}", account_id="M-CLI-1", effective_on=date(2026, 1, 1), occurred_at=t0,
        member_id="M-CLI-1", plan="DELTA-PPO", coverage_line="dental", tier="EMP", action="add",
        benefit_begin=date(2026, 1, 1), agency_id="AG-001",
    )
    bad = PremiumBilled(
        event_id=f"cli-bill-{suffix}", account_id="M-CLI-1", effective_on=date(2026, 1, 1), occurred_at=t0,
        bill_id="B-CLI-1", coverage_month=date(2026, 1, 1), plan="DELTA-PPO", tier="EMP", amount_cents=-500,
        due_on=date(2026, 1, 1),
    )
    lines = [codec.encode(good).decode(), "", codec.encode(bad).decode()]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    text = run_cli(["publish", str(path)], env, tmp_path, timeout=60)
    assert text.returncode == 1, text.stderr
    assert f"{path}:3: amount_cents:" in text.stderr
    assert "published 1 events (1 records)" in text.stdout and "1 lines rejected" in text.stdout

    as_json = run_cli(["publish", str(path), "--json"], env, tmp_path, timeout=60)
    assert as_json.returncode == 1, as_json.stderr
    result = as_json.json()
    assert result["events"] == 1 and result["records"] == 1
    [error] = result["errors"]
    assert (error["file"], error["line"], error["field"]) == (str(path), 3, "amount_cents")
    assert "negative" in error["reason"]

    # the good line went out, keyed by its account, twice (once per run)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topics.enrollment, p) for p in range(4)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got: list[Any] = []
        deadline = time.monotonic() + 60
        while len(got) < 2 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
    finally:
        consumer.close()
    assert [(m.key, codec.decode_input(m.value)) for m in got] == [(b"M-CLI-1", good)] * 2


def test_publish_without_a_broker_says_how_to_get_one(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("")
    run = run_cli(["publish", str(path)], base_env(tmp_path), tmp_path, timeout=60)
    assert run.returncode == 2
    assert "LEDGER_KAFKA_BOOTSTRAP_SERVERS" in run.stderr


def test_demo_too_small_for_its_errors_is_a_one_line_usage_error_and_starts_nothing(tmp_path: Path) -> None:
    run = run_cli(["demo", "--members", "5", "--months", "3"], base_env(tmp_path), tmp_path, timeout=60)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.startswith("benefits-ledger demo: ") and len(run.stderr.strip().splitlines()) == 1
    assert "at least 20 members" in run.stderr and "Traceback" not in run.stderr
    assert not set(run.children.values()) & {"postgres", "tansu"}
    assert_nothing_left(tmp_path, run)


# ------------------------------------------------------------------------------------------ SIGINT


def test_demo_interrupted_with_sigint_exits_and_leaves_no_server_behind(tmp_path: Path) -> None:
    started = time.monotonic()

    def running(proc: subprocess.Popen[bytes], children: dict[int, str]) -> bool:
        # ~3 s in, and both servers are up with no pg_ctl/initdb still starting one
        if time.monotonic() - started < 3:
            return False
        if not postmasters_for(tmp_path / "postgres") or not running_child(children, "tansu"):
            return False
        return not (running_child(children, "pg_ctl") or running_child(children, "initdb"))

    try:
        # big enough that a slow, loaded machine still interrupts it mid-run rather than after it finished
        run = run_cli(["demo", "--members", "10000", "--months", "12", "--json"], base_env(tmp_path), tmp_path,
                      timeout=120, interrupt_when=running)
        assert run.returncode == 130, (run.returncode, run.stderr[-2000:])
        assert "interrupted" in run.stderr
        assert run.stdout.strip() == ""
        assert_nothing_left(tmp_path, run)
    finally:
        stop_postgres_in(tmp_path / "postgres")


def test_demo_interrupted_while_postgres_starts_leaves_no_server_behind(tmp_path: Path) -> None:
    def postmaster_appeared(proc: subprocess.Popen[bytes], children: dict[int, str]) -> bool:
        return bool(postmasters_for(tmp_path / "postgres"))

    try:
        # big enough that a slow, loaded machine still interrupts it mid-run rather than after it finished
        run = run_cli(["demo", "--members", "10000", "--months", "12", "--json"], base_env(tmp_path), tmp_path,
                      timeout=120, interrupt_when=postmaster_appeared)
        assert run.returncode == 130, (run.returncode, run.stderr[-2000:])
        assert_nothing_left(tmp_path, run, wait=5)
    finally:
        stop_postgres_in(tmp_path / "postgres")


# ------------------------------------------------------------------------------------------ the workbench


def test_the_discrepancy_table_prints_ids_literally_with_the_agency_and_filters_by_payer(demo: DemoRun) -> None:
    rows = query(demo, "discrepancies", "--database", DEMO_DB, "--open", "--json")
    table = run_cli(["discrepancies", "--database", DEMO_DB, "--open"], demo.env, demo.data_dir, timeout=60)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [r["discrepancy_id"] for r in rows]
    for line, r in zip(lines, rows, strict=True):
        assert f" {r['agency_id'] or '-'} " in line
    assert all(r["agency_id"] for r in rows)
    payer = next(r["payer_id"] for r in rows if r["payer_id"])
    everything = query(demo, "discrepancies", "--database", DEMO_DB, "--json")
    by_payer = query(demo, "discrepancies", "--database", DEMO_DB, "--payer", payer, "--json")
    assert sorted(r["discrepancy_id"] for r in by_payer) == sorted(
        r["discrepancy_id"] for r in everything if r["payer_id"] == payer)
    lettered = next(r for r in rows if r["discrepancy_id"][0].isalpha() and r["account_id"].startswith("M"))
    balance = run_cli(["balance", lettered["account_id"], "--database", DEMO_DB], demo.env, demo.data_dir,
                      timeout=60)
    assert f"[{lettered['discrepancy_id']}]" in balance.stdout  # not read as rich markup


def test_users_and_tokens_are_added_from_the_command_line(demo: DemoRun) -> None:
    added = run_cli(["user", "add", "pat", "--role", "specialist", "--name", "Pat Doe", "--database", DEMO_DB,
                     "--json"], demo.env, demo.data_dir, timeout=60)
    assert added.returncode == 0, added.stderr
    assert added.json()["login"] == "pat" and len(added.json()["password"]) >= 12
    again = run_cli(["user", "add", "pat", "--role", "specialist", "--database", DEMO_DB], demo.env, demo.data_dir,
                    timeout=60)
    assert again.returncode == 2 and "error: user pat exists already" in again.stderr
    lonely = run_cli(["user", "add", "cora", "--role", "agency_coordinator", "--database", DEMO_DB], demo.env,
                     demo.data_dir, timeout=60)
    assert lonely.returncode == 2 and "needs --agency" in lonely.stderr
    listed = query(demo, "user", "list", "--database", DEMO_DB, "--json")
    assert [(u["login"], u["role"], u["display_name"], u["active"]) for u in listed] == [
        ("pat", "specialist", "Pat Doe", True)]
    token = query(demo, "user", "token", "billing-system", "--role", "auditor", "--database", DEMO_DB, "--json")
    assert token["token"].startswith("blt_") and token["role"] == "auditor"
