"""A sample of the scenario book end to end: publisher -> Tansu -> processor -> PostgreSQL -> relay.

tests/scenarios/test_scenarios.py checks every scenario against the pure fold. Here a sample covering
the different rules goes through the real stack: each scenario's events are published in order with
the project's Publisher, folded by the processor and relay of the composition root (run_services),
and the scenario's own expectations are checked, with the same ``check`` function, against what the
ledger persisted: member_month rows, the discrepancy table and the events on the discrepancy topic,
payer_unapplied, and the dead-letter table and topic. The counts must add up, and the archive must
hold the applied events in the scenario's order (the merge of the input topics kept it).

Rates, business days and billing cycles are broadcast to every account of a ledger, and a scenario
may set its own plan rules, so each scenario gets a ledger of its own: its own topics, database and
consumer group on one broker and one PostgreSQL server that this module starts and stops.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from events import codec
from events.types import (
    DiscrepancyAmountChanged,
    DiscrepancyOpened,
    DiscrepancyResolved,
    DiscrepancySuperseded,
    FsaClaimAdjudicated,
    InputEvent,
)
from processor.app import Ledger, open_ledger, run_services
from processor.batch import partition_for
from processor.embedded import EmbeddedBroker, EmbeddedPostgres, stop_postgres_in
from processor.settings import PlanSettings, Settings
from processor.state import month_key
from projections.model import DiscrepancyRow, FsaRow, MonthRow
from tests.conftest import unique_topics
from tests.integration.support import consume_all
from tests.scenarios.test_scenarios import HERE, check, load

WAIT_S = 120.0
PARTITIONS = 4

# One scenario per rule the issue names (a few cover two); the whole book runs against the pure fold.
SAMPLE = [
    "01_paid_in_full",  # paid in full, a business day with nothing due
    "02_underpaid_tier_change_payroll_missed",  # underpaid
    "06_billed_not_enrolled_after_termination",  # billed_not_enrolled, causes
    "08_wrong_rate",  # wrong_rate
    "11_payment_without_a_month_is_unapplied_cash",  # unmatched payment, payer unapplied cash
    "16_duplicate_remittance_line",  # duplicate payment
    "18_missing_payment_after_grace",  # missing payment after grace (DayClosed), plan grace_days
    "33_late_tier_change_supersedes_wrong_rate",  # retroactive change supersedes a finding
    "38_cobra_shortfall_treated_as_paid",  # COBRA, direct pay, DayClosed
    "43_refund_of_a_credit_settles_refund_due",  # refund resolves refund_due
    "45_refunds_are_checked_before_they_apply",  # rejected events -> dead-letter topic
    "46_enrolled_not_billed",  # enrolled_not_billed (BillingCycleClosed)
    "49_non_dependent_partner_taken_pre_tax",  # tax treatment
    "52_three_biweekly_deductions_are_not_an_overpayment",  # payroll frequency
    "55_rate_correction_reaches_back_into_paid_months",  # a rate reaching back into billed months
    "83_daily_proration_splits_a_mid_month_tier_change",  # billing rules as plan settings
    "86_retiree_death_month_premium_waived",  # retiree death waiver, refund due
    "89_partner_share_post_tax_and_employer_value_imputed",  # post-tax share and imputed income
    "61_dependent_care_limited_to_contributions",  # FSA claims adjudicated on the claims topic
    "71_business_day_after_the_run_out_closes_the_year",  # FSA carryover by a business day
    "101_one_file_ends_two_coverages_retroactively",  # a retroactive change as a whole
    "103_termination_before_its_add_is_kept_and_applied",  # enrollment order, unknown_coverage
    "105_late_new_hire_flags_every_closed_unbilled_month",  # late enrollment
    "107_one_remittance_line_per_coverage_is_not_a_duplicate",  # several coverages in one remittance
    "108_refund_of_money_that_bounced_is_refund_recovery",  # refund_recovery
    "109_dependents_left_on_a_tier_the_subscriber_no_longer_has",  # eligibility
    "111_cobra_ends_at_the_maximum_period",  # COBRA maximum period
    "113_semi_monthly_month_with_one_deduction_is_short",  # pay calendar
    "118_dependent_care_remainder_pending_until_contributed",  # FSA pending claims, paid later
    "119_health_fsa_ends_with_employment",  # FSA participation ends
    "121_a_remittance_line_that_never_arrives",  # lines the ledger posted (derived reports)
    "122_remittance_advice_is_paid_when_its_money_arrives",  # advice funded by its payment
]
SAMPLE_PATHS = [HERE / f"{name}.yaml" for name in SAMPLE]


# ------------------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    broker: EmbeddedBroker
    postgres: EmbeddedPostgres
    workdir: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One Tansu broker and one PostgreSQL server for this module, both stopped when it ends."""
    workdir = tmp_path_factory.mktemp("scenarios-e2e")
    data_dir = workdir / "postgres"
    postgres = EmbeddedPostgres(data_dir)
    try:
        with EmbeddedBroker() as broker:
            postgres.start()
            yield Stack(broker, postgres, workdir)
    finally:
        postgres.stop()
        stop_postgres_in(data_dir)  # nothing may outlive the module


@pytest.fixture
def fresh_database(stack: Stack) -> Iterator[str]:
    name = f"scenario_{uuid.uuid4().hex}"
    with psycopg.connect(stack.postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield stack.postgres.dsn_for(name)
    finally:
        with psycopg.connect(stack.postgres.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def derived_count(dsn: str) -> int:
    """Events the ledger posted itself (outbox rows for the payments topic)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE stream = 'payments'").fetchone()
    assert row is not None
    return int(row[0])


async def run_until_drained(ledger: Ledger, received: int) -> None:
    """Processor and relay until the store has received ``received`` records and the outbox is empty."""
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(ledger, stop))
    watcher = ledger.store()
    deadline = time.monotonic() + WAIT_S

    def alive(what: str) -> None:
        if services.done():
            services.result()  # a failing batch raises here, with its own error
            raise AssertionError(f"the processor stopped before {what}")
        assert time.monotonic() < deadline, f"timed out after {WAIT_S:.0f} s waiting for {what}"

    try:
        # the records published, and the events the ledger posts itself (cash applied, remittance
        # lines), which come back on the payments topic
        while (got := (await asyncio.to_thread(watcher.counts)).received) < received + derived_count(ledger.dsn):
            alive(f"{received} records and the ledger's own were received (store has {got})")
            await asyncio.sleep(0.05)
        while await asyncio.to_thread(watcher.outbox_pending, 1):
            alive("the relay drained the outbox")
            await asyncio.sleep(0.05)
        while (got := (await asyncio.to_thread(watcher.counts)).received) < received + derived_count(ledger.dsn):
            alive("the ledger's own events came back")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await services


# ----------------------------------------------------------------- the books as the ledger holds them


@dataclass
class AccountView:
    """An account as persisted, shaped like the fold's AccountState for ``check``."""

    months: dict[str, MonthRow] = field(default_factory=dict)  # member_month rows by month key
    open: dict[str, DiscrepancyRow] = field(default_factory=dict)  # open rows of the discrepancy table


@dataclass
class LedgerView:
    """What a real ledger persisted, with the attributes of the scenario runner's Book.

    opened, resolved, superseded and changed come from the discrepancy topic in outbox order; open
    discrepancies from the discrepancy table; rejected events from the dead-letter table.
    """

    accounts: dict[str, AccountView]
    opened: list[tuple[str, str, str]]
    resolved: list[tuple[str, str, str]]
    superseded: list[tuple[str, str, str]]
    changed: list[tuple[str, str, int, int]]
    unapplied: dict[str, int]
    rejected: dict[str, str]
    claims: dict[str, FsaClaimAdjudicated]  # from the claims topic
    fsa: dict[str, list[FsaRow]]  # fsa_account rows by account

    def fsa_rows(self, account_id: str) -> list[FsaRow]:
        return self.fsa.get(account_id, [])

    def account(self, account_id: str) -> AccountView:
        return self.accounts.setdefault(account_id, AccountView())


@dataclass
class E2ERun:
    where: str
    spec: dict[str, Any]
    events: list[InputEvent]
    settings: Settings
    published: int
    view: LedgerView


def run_scenario(path: Path, stack: Stack, dsn: str) -> E2ERun:
    spec, events = load(path)
    where = f"{path.name} (through the broker and PostgreSQL)"
    settings = Settings(
        kafka_bootstrap_servers=stack.broker.bootstrap, database_url=dsn, topics=unique_topics(),
        partitions=PARTITIONS, data_dir=stack.workdir / path.stem,
        consumer_group=f"scenario-{uuid.uuid4().hex[:8]}", plan=PlanSettings(**spec.get("plan", {})),
    )
    with open_ledger(settings) as ledger:
        # One producer, one call: each record carries its send sequence (ledger-seq) and a CreateTime
        # that never goes back, which is the order the processor merges the input topics in.
        with ledger.publisher() as pub:
            pub.publish(events)
        published = pub.records_sent
        asyncio.run(run_until_drained(ledger, published))
        view = read_back(ledger, settings, events, where)
    return E2ERun(where, spec, events, settings, published, view)


def read_back(ledger: Ledger, settings: Settings, events: list[InputEvent], where: str) -> LedgerView:
    store = ledger.store()
    topics = settings.topics

    # Discrepancy events as the relay published them, put in outbox order (the fold's order).
    with psycopg.connect(ledger.dsn) as conn:
        outbox = {str(e): int(s) for s, e in conn.execute(
            "SELECT seq, event_id FROM outbox WHERE stream = 'discrepancies'")}
    messages = consume_all(ledger.bootstrap, topics.discrepancies)
    published = [codec.decode_output(m.value) for m in messages]
    assert Counter(e.event_id for e in published) == Counter(list(outbox)), (
        f"{where}: the discrepancy topic does not hold each outbox event exactly once")
    published.sort(key=lambda e: outbox[e.event_id])

    opened: list[tuple[str, str, str]] = []
    resolved: list[tuple[str, str, str]] = []
    superseded: list[tuple[str, str, str]] = []
    changed: list[tuple[str, str, int, int]] = []
    status: dict[str, str] = {}
    for e in published:
        if isinstance(e, DiscrepancyOpened):
            opened.append((e.account_id, e.kind, e.discrepancy_id))
            status[e.discrepancy_id] = "open"
        elif isinstance(e, DiscrepancyAmountChanged):
            changed.append((e.account_id, e.kind, e.previous_actual_cents, e.actual_cents))
        elif isinstance(e, DiscrepancySuperseded):
            superseded.append((e.account_id, e.kind, e.discrepancy_id))
            status[e.discrepancy_id] = "superseded"
        else:
            assert isinstance(e, DiscrepancyResolved), f"{where}: unexpected {type(e).__name__} on the topic"
            resolved.append((e.account_id, e.kind, e.discrepancy_id))
            status[e.discrepancy_id] = "resolved"

    rows = store.discrepancies(limit=10**6)
    assert {r.discrepancy_id: r.status for r in rows} == status, (
        f"{where}: the discrepancy table and the discrepancy topic disagree on what is open")
    for r in rows:
        assert (r.account_id, r.kind, r.discrepancy_id) in opened, f"{where}: {r.discrepancy_id} never published"

    account_ids = {e.account_id for e in events if not type(e).BROADCAST} | {r.account_id for r in rows}
    accounts: dict[str, AccountView] = {}
    for account_id in sorted(account_ids):
        balance = store.balance(account_id)
        months = {month_key(m.coverage_month): m for m in balance.months} if balance is not None else {}
        accounts[account_id] = AccountView(
            months=months,
            open={r.discrepancy_id: r for r in rows if r.account_id == account_id and r.status == "open"},
        )

    dead = store.dead_letters(limit=10**6)
    rejected: dict[str, str] = {}
    for d in dead:
        # A record the fold never saw (undecodable, wrong key or topic) is no scenario's rejection.
        rejected[d.event_id or f"<record {d.topic}/{d.partition}@{d.offset}: {d.reason}>"] = d.reason

    claims: dict[str, FsaClaimAdjudicated] = {}
    for m in consume_all(ledger.bootstrap, topics.claims):
        adjudication = codec.decode_output(m.value)
        assert isinstance(adjudication, FsaClaimAdjudicated), f"{where}: {type(adjudication).__name__} on claims"
        # a pending dependent-care claim is adjudicated again as contributions pay it: keep the latest
        claims[adjudication.claim_id] = adjudication

    return LedgerView(accounts=accounts, opened=opened, resolved=resolved, superseded=superseded,
                      changed=changed, unapplied=store.payer_unapplied(), rejected=rejected, claims=claims,
                      fsa={a: store.fsa_accounts(a) for a in sorted(account_ids)})


def check_counts_and_order(run: E2ERun, ledger_dsn: str) -> None:
    """received = applied + duplicates + dead-lettered, each rejection once on the dead-letter topic,
    and the archive holds every other event in the scenario's order."""
    where = run.where
    view = run.view
    rejected_ids = set(view.rejected)
    with psycopg.connect(ledger_dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(applied), 0), coalesce(sum(duplicates), 0),"
                           " coalesce(sum(dead_lettered), 0) FROM positions").fetchone()
        assert row is not None
        applied, duplicates, dead_lettered = (int(v) for v in row)
        archive = conn.execute("SELECT partition, dedupe_key FROM archive ORDER BY seq").fetchall()
        dead_rows = conn.execute('SELECT topic, partition, "offset", raw FROM dead_letter').fetchall()

    received = applied + duplicates + dead_lettered
    derived = derived_count(ledger_dsn)
    assert received == run.published + derived, (
        f"{where}: received {received} records, published {run.published}, posted by the ledger {derived}")
    assert duplicates == 0, f"{where}: {duplicates} records dropped as duplicates (the scenario sends none)"
    wanted_dead = sum(PARTITIONS if type(e).BROADCAST else 1 for e in run.events if e.event_id in rejected_ids)
    assert dead_lettered == len(dead_rows) == wanted_dead, (
        f"{where}: dead-lettered {dead_lettered}, dead_letter rows {len(dead_rows)}, rejected records {wanted_dead}")
    assert applied == len(archive) == run.published + derived - wanted_dead, (
        f"{where}: applied {applied}, archived {len(archive)}, published {run.published} + derived {derived}"
        f" - rejected {wanted_dead}")
    mine = {f"{e.event_id}@p{p}" if type(e).BROADCAST else e.event_id for e in run.events for p in range(PARTITIONS)}

    letters = consume_all(run.settings.kafka_bootstrap_servers or "", run.settings.topics.dead_letter)
    on_topic = Counter(
        (dict(m.headers)["source_topic"].decode(), int(dict(m.headers)["source_partition"]),
         int(dict(m.headers)["source_offset"]), m.value)
        for m in letters
    )
    in_table = Counter((str(t), int(p), int(o), bytes(raw)) for t, p, o, raw in dead_rows)
    assert on_topic == in_table, f"{where}: the dead-letter topic does not hold each rejected record once"

    for p in range(PARTITIONS):
        wanted = [
            f"{e.event_id}@p{p}" if type(e).BROADCAST else e.event_id
            for e in run.events
            if e.event_id not in rejected_ids
            and (type(e).BROADCAST or partition_for(e.account_id.encode(), PARTITIONS) == p)
        ]
        got = [str(key) for part, key in archive if part == p and str(key) in mine]
        assert got == wanted, f"{where}: partition {p} applied events out of the scenario's order"


# ------------------------------------------------------------------------------------------ the test


@pytest.mark.parametrize("path", SAMPLE_PATHS, ids=SAMPLE)
def test_scenario_books_through_broker_and_postgres_match_the_scenario(
    path: Path, stack: Stack, fresh_database: str,
) -> None:
    run = run_scenario(path, stack, fresh_database)
    check(run.spec, run.view, run.where)
    check_counts_and_order(run, fresh_database)


def test_the_sample_covers_the_rules_the_issue_names() -> None:
    """Rejections, business days, billing cycles, plan rules and several payers are all exercised."""
    assert all(p.exists() for p in SAMPLE_PATHS), [p.name for p in SAMPLE_PATHS if not p.exists()]
    specs = {p.stem: load(p) for p in SAMPLE_PATHS}
    kinds = {type(e).__name__ for _, events in specs.values() for e in events}
    assert {"DayClosed", "BillingCycleClosed", "RefundIssued", "RatePublished"} <= kinds
    opened = {o["kind"] for spec, _ in specs.values() for o in spec["expect"].get("open", [])}
    opened |= {k for spec, _ in specs.values() for k in spec["expect"].get("opened", [])}
    assert {"underpaid", "wrong_rate", "billed_not_enrolled", "unmatched_payment", "duplicate_payment",
            "missing_payment", "cobra_shortfall", "refund_due", "enrolled_not_billed", "tax_treatment",
            "unknown_coverage", "eligibility", "refund_recovery", "remittance_total_mismatch"} <= opened
    assert any(spec["expect"].get("superseded") for spec, _ in specs.values())
    assert any(spec["expect"].get("rejected") for spec, _ in specs.values())
    assert any(spec.get("plan") for spec, _ in specs.values())
