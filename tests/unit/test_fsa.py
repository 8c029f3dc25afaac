"""Flexible spending accounts: the pure rules (processor/rules/fsa.py), their settings, and the batch around them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from events.types import FsaClaimAdjudicated
from processor.rules.base import Rejected
from processor.rules.fsa import claim_deadline, incurred_through, plan_year_of
from processor.settings import FsaSettings, PlanFileError, PlanSettings, Settings, load_plan_file
from processor.state import encode_state
from projections.model import CLAIMS_STREAM, FsaRow, fsa_rows
from tests.unit.builders import (
    ACCOUNT,
    TOPICS,
    Feed,
    Ledger,
    claim,
    contribute,
    elect,
    make,
    run,
)

GRACE = PlanSettings(fsa=FsaSettings(health_year_end="grace_period"))


def adjudications(ledger: Ledger) -> list[FsaClaimAdjudicated]:
    return [e for e in ledger.emitted if isinstance(e, FsaClaimAdjudicated)]  # type: ignore[misc]


def decided(ledger: Ledger, *events: object) -> FsaClaimAdjudicated:
    """Apply the events; the last must be a claim, whose adjudication is returned."""
    ledger.apply(*events)  # type: ignore[arg-type]
    return adjudications(ledger)[-1]


def health_2026(ledger: Ledger) -> FsaRow:
    return next(r for r in fsa_rows(ledger.account()) if (r.plan_year, r.account_type) == (2026, "health"))


# -- health FSA: uniform coverage ------------------------------------------------------------------


def test_a_health_claim_may_use_the_whole_annual_election_on_the_first_day() -> None:
    ledger = Ledger()
    got = decided(ledger, elect(2_400_00), claim(1_500_00, service=date(2026, 1, 2)))
    assert (got.decision, got.approved_cents, got.requested_cents) == ("approved", 1_500_00, 1_500_00)
    assert (got.available_before_cents, got.available_after_cents) == (2_400_00, 900_00)
    assert got.plan_year == 2026 and got.causation_id == ledger.account().fsa.claims[got.claim_id].event_id
    row = health_2026(ledger)
    assert (row.election_cents, row.contributed_cents, row.reimbursed_cents, row.available_cents) == (
        2_400_00, 0, 1_500_00, 900_00)


def test_a_health_claim_above_what_remains_is_partially_approved_for_the_remainder_to_the_cent() -> None:
    ledger = Ledger()
    ledger.apply(elect(500_00), claim(300_00, service=date(2026, 3, 1)))
    got = decided(ledger, claim(250_37, service=date(2026, 4, 1)))
    assert (got.decision, got.approved_cents, got.available_after_cents) == ("partially_approved", 200_00, 0)
    assert "$200.00 of $250.37 approved" in got.reason and "$500.00 election" in got.reason
    assert "$300.00 already reimbursed" in got.reason


def test_a_health_claim_when_the_election_is_spent_is_denied() -> None:
    ledger = Ledger()
    ledger.apply(elect(100_00), claim(100_00, service=date(2026, 3, 1)))
    got = decided(ledger, claim(1, service=date(2026, 3, 2)))
    assert (got.decision, got.approved_cents) == ("denied", 0)
    assert "nothing available" in got.reason


def test_a_claim_without_an_election_for_its_plan_year_is_denied() -> None:
    got = decided(Ledger(), elect(100_00, year=2026), claim(50_00, service=date(2027, 1, 5)))
    assert (got.decision, got.plan_year, got.approved_cents) == ("denied", 2027, 0)
    assert "no health FSA election for plan year 2027" in got.reason


def test_a_service_date_before_participation_began_is_denied() -> None:
    got = decided(Ledger(), elect(100_00, on=date(2026, 6, 1)), claim(50_00, service=date(2026, 5, 31)))
    assert got.decision == "denied" and "before participation began on 2026-06-01" in got.reason


def test_an_expense_not_yet_incurred_when_claimed_is_denied() -> None:
    got = decided(Ledger(), elect(100_00), claim(50_00, service=date(2026, 5, 2), submitted=date(2026, 5, 1)))
    assert got.decision == "denied" and "once incurred" in got.reason


# -- dependent care: only what has been contributed ----------------------------------------------


FINAL = PlanSettings(fsa=FsaSettings(dependent_care_pending=False))


def test_dependent_care_pays_only_what_has_been_contributed_so_far_when_the_plan_decides_finally() -> None:
    ledger = Ledger(plan=FINAL)
    got = decided(ledger, elect(5_000_00, account_type="dependent_care"),
                  contribute(192_31, on=date(2026, 1, 15)),
                  claim(400_00, service=date(2026, 1, 20), account_type="dependent_care"))
    assert (got.decision, got.approved_cents, got.available_after_cents) == ("partially_approved", 192_31, 0)
    assert "$192.31 contributed" in got.reason
    ledger.apply(contribute(192_31, on=date(2026, 1, 31)))
    later = decided(ledger, claim(150_00, service=date(2026, 2, 2), account_type="dependent_care"))
    assert (later.decision, later.approved_cents, later.available_after_cents) == ("approved", 150_00, 42_31)


def test_dependent_care_with_nothing_contributed_is_denied_saying_so_when_the_plan_decides_finally() -> None:
    got = decided(Ledger(plan=FINAL), elect(5_000_00, account_type="dependent_care"),
                  claim(10_00, service=date(2026, 1, 20), account_type="dependent_care"))
    assert (got.decision, got.approved_cents) == ("denied", 0)
    assert "$0.00 contributed" in got.reason


def test_dependent_care_pending_remainder_is_paid_by_later_contributions() -> None:
    ledger = Ledger()
    got = decided(ledger, elect(5_000_00, account_type="dependent_care"),
                  contribute(192_31, on=date(2026, 1, 15)),
                  claim(400_00, service=date(2026, 1, 20), account_type="dependent_care", claim_id="C1"))
    assert (got.decision, got.approved_cents, got.pending_cents) == ("partially_approved", 192_31, 207_69)
    ledger.apply(contribute(250_00, on=date(2026, 1, 31)))
    paid = adjudications(ledger)[-1]
    assert (paid.claim_id, paid.decision, paid.approved_cents, paid.pending_cents) == ("C1", "approved", 207_69, 0)
    assert paid.available_after_cents == 250_00 - 207_69


def test_dependent_care_contributions_beyond_the_election_are_not_available() -> None:
    got = decided(Ledger(), elect(100_00, account_type="dependent_care"),
                  contribute(150_00, on=date(2026, 1, 15)),
                  claim(150_00, service=date(2026, 1, 20), account_type="dependent_care"))
    assert (got.decision, got.approved_cents) == ("partially_approved", 100_00)


# -- run-out, grace period, carryover ------------------------------------------------------------


def test_a_claim_submitted_on_the_last_day_of_the_run_out_is_paid_and_the_day_after_is_denied() -> None:
    assert claim_deadline(2026, "health", FsaSettings()) == date(2027, 3, 31)
    ledger = Ledger()
    ledger.apply(elect(1_000_00))
    on_time = decided(ledger, claim(100_00, service=date(2026, 12, 15), submitted=date(2027, 3, 31)))
    late = decided(ledger, claim(100_00, service=date(2026, 12, 15), submitted=date(2027, 4, 1)))
    assert on_time.decision == "approved" and on_time.plan_year == 2026
    assert (late.decision, late.approved_cents, late.plan_year) == ("denied", 0, 2026)
    assert "after the run-out period for plan year 2026 ended on 2027-03-31" in late.reason


def test_a_grace_period_expense_is_paid_from_the_prior_year_through_its_last_day() -> None:
    assert incurred_through(2026, "health", GRACE.fsa) == date(2027, 3, 15)
    assert incurred_through(2026, "dependent_care", GRACE.fsa) == date(2026, 12, 31)
    ledger = Ledger(plan=GRACE)
    ledger.apply(elect(300_00))
    in_grace = decided(ledger, claim(120_00, service=date(2027, 3, 15), submitted=date(2027, 3, 20)))
    after = decided(ledger, claim(120_00, service=date(2027, 3, 16), submitted=date(2027, 3, 20)))
    assert (in_grace.decision, in_grace.plan_year, in_grace.approved_cents) == ("approved", 2026, 120_00)
    assert (after.decision, after.plan_year) == ("denied", 2027)
    named = decided(ledger, claim(1_00, service=date(2027, 3, 16), submitted=date(2027, 3, 20), year=2026))
    assert named.decision == "denied" and "after the grace period of plan year 2026 ended on 2027-03-15" in named.reason


def test_without_a_grace_period_a_january_expense_belongs_to_the_new_year() -> None:
    got = decided(Ledger(), elect(300_00), claim(10_00, service=date(2027, 1, 2), year=2026))
    assert got.decision == "denied" and "after plan year 2026 ended on 2026-12-31" in got.reason


def test_unused_health_balance_up_to_the_cap_carries_over_once_the_run_out_has_passed() -> None:
    ledger = Ledger()
    ledger.apply(elect(1_000_00, year=2026), claim(200_00, service=date(2026, 5, 1)),
                 elect(100_00, year=2027))
    during_run_out = decided(ledger, claim(150_00, service=date(2027, 2, 1), submitted=date(2027, 3, 31)))
    assert (during_run_out.decision, during_run_out.approved_cents) == ("partially_approved", 100_00)
    after_run_out = decided(ledger, claim(700_00, service=date(2027, 4, 1), submitted=date(2027, 4, 1)))
    # 2026: $1,000.00 - $200.00 = $800.00 unused; $680.00 carries over, $120.00 is forfeited
    assert (after_run_out.decision, after_run_out.approved_cents) == ("partially_approved", 680_00)
    assert "$680.00 carried over" in after_run_out.reason
    rows = {(r.plan_year, r.account_type): r for r in fsa_rows(ledger.account())}
    old, new = rows[(2026, "health")], rows[(2027, "health")]
    assert (old.closed, old.carryover_out_cents, old.available_cents) == (True, 680_00, 0)
    assert (new.carryover_in_cents, new.reimbursed_cents, new.available_cents) == (680_00, 780_00, 0)


def test_carryover_is_capped_by_the_plan_setting_and_a_grace_period_plan_forfeits() -> None:
    capped = Ledger(plan=PlanSettings(fsa=FsaSettings(health_carryover_max_cents=500_00)))
    capped.apply(elect(1_000_00), elect(0, year=2027, on=date(2027, 4, 1)))
    rows = {r.plan_year: r for r in fsa_rows(capped.account())}
    assert rows[2027].carryover_in_cents == 500_00
    grace = Ledger(plan=GRACE)
    grace.apply(elect(1_000_00), elect(0, year=2027, on=date(2027, 7, 1)))
    rows = {r.plan_year: r for r in fsa_rows(grace.account())}
    assert rows[2026].closed and rows[2026].carryover_out_cents == 0 and rows[2027].carryover_in_cents == 0


def test_a_claim_for_a_year_already_closed_by_a_later_event_is_denied() -> None:
    ledger = Ledger()
    ledger.apply(elect(1_000_00), elect(10_00, year=2027, on=date(2027, 4, 2)))
    got = decided(ledger, claim(10_00, service=date(2026, 12, 1), submitted=date(2027, 3, 1)))
    assert got.decision == "denied" and "is closed" in got.reason


# -- elections: limits and changes ------------------------------------------------------------------


@pytest.mark.parametrize(("account_type", "filing", "limit", "setting"), [
    ("health", None, 3_400_00, "fsa.health_limit_cents"),
    ("dependent_care", None, 7_500_00, "fsa.dependent_care_limit_cents"),
    ("dependent_care", "married_filing_jointly", 7_500_00, "fsa.dependent_care_limit_cents"),
    ("dependent_care", "married_filing_separately", 3_750_00, "fsa.dependent_care_mfs_limit_cents"),
])
def test_an_election_one_cent_over_the_limit_is_rejected_naming_the_limit(
    account_type: str, filing: str | None, limit: int, setting: str,
) -> None:
    ledger = Ledger()
    ledger.apply(elect(limit, account_type=account_type, filing=filing))
    with pytest.raises(Rejected) as info:
        ledger.apply(elect(limit + 1, account_type=account_type, filing=filing))
    assert info.value.field == "election_cents"
    assert setting in info.value.reason and f"${limit // 100:,}.00" in info.value.reason


def test_a_mid_year_change_replaces_the_election_but_not_below_what_was_reimbursed() -> None:
    ledger = Ledger()
    ledger.apply(elect(1_000_00), claim(400_00, service=date(2026, 2, 1)))
    with pytest.raises(Rejected, match=r"below the \$400.00 already reimbursed"):
        ledger.apply(elect(399_99, on=date(2026, 7, 1)))
    ledger.apply(elect(400_00, on=date(2026, 7, 1)))
    row = health_2026(ledger)
    assert (row.election_cents, row.available_cents) == (400_00, 0)
    assert ledger.account().fsa.years["2026|health"].participation_from == date(2026, 1, 1)


def test_a_rejected_fsa_event_changes_nothing() -> None:
    ledger = Ledger()
    ledger.apply(elect(1_000_00), claim(100_00, service=date(2026, 2, 1), claim_id="CL-1"))
    before = encode_state(ledger.account())
    for bad in (
        claim(5_00, service=date(2026, 2, 2), claim_id="CL-1"),
        elect(3_400_01),
        contribute(10_00, on=date(2026, 1, 15)),  # no dependent-care election
        elect(10_00, year=2025, on=date(2026, 4, 1)),  # 2025 and its run-out are over
    ):
        with pytest.raises(Rejected):
            ledger.apply(bad)
    assert encode_state(ledger.account()) == before


def test_a_claim_id_paid_once_is_rejected_under_another_event_id() -> None:
    ledger = Ledger()
    ledger.apply(elect(1_000_00), claim(100_00, service=date(2026, 2, 1), claim_id="CL-7"))
    with pytest.raises(Rejected) as info:
        ledger.apply(claim(100_00, service=date(2026, 2, 1), claim_id="CL-7"))
    assert info.value.field == "claim_id" and "already adjudicated" in info.value.reason


# -- the plan year calendar and the settings --------------------------------------------------------


def test_a_plan_year_starting_in_july_runs_to_june_and_its_grace_to_mid_september() -> None:
    s = FsaSettings(plan_year_start_month=7, health_year_end="grace_period")
    assert (plan_year_of(date(2026, 6, 30), s), plan_year_of(date(2026, 7, 1), s)) == (2025, 2026)
    assert incurred_through(2026, "health", s) == date(2027, 9, 15)
    assert claim_deadline(2026, "dependent_care", s) == date(2027, 9, 28)  # 2027-06-30 + 90 days


def test_a_grace_period_of_two_months_ends_on_the_last_day_of_february_in_a_leap_year() -> None:
    s = FsaSettings(health_year_end="grace_period", grace_period_days=0)
    assert incurred_through(2027, "health", s) == date(2028, 2, 29)
    assert incurred_through(2026, "health", s) == date(2027, 2, 28)


@pytest.mark.parametrize(("fields", "named"), [
    ({"grace_period_months": 2}, "grace_period_months"),
    ({"health_year_end": "carryover", "grace_period_days": 15}, "grace_period_days"),
    ({"health_year_end": "grace_period", "health_carryover_max_cents": 68_000}, "health_carryover_max_cents"),
    ({"health_year_end": "none", "health_carryover_max_cents": 0}, "health_carryover_max_cents"),
    ({"health_year_end": "grace_period", "grace_period_months": 2, "grace_period_days": 16}, "grace_period_days"),
    ({"health_year_end": "grace_period", "grace_period_months": 3}, "grace_period_months"),
    ({"dependent_care_mfs_limit_cents": 750_001}, "dependent_care_mfs_limit_cents"),
])
def test_a_grace_period_and_a_carryover_together_or_out_of_bounds_are_refused_naming_the_field(
    fields: dict[str, object], named: str,
) -> None:
    with pytest.raises(ValidationError) as info:
        FsaSettings.model_validate(fields)
    assert named in str(info.value)


def test_the_2026_defaults() -> None:
    s = FsaSettings()
    assert (s.health_limit_cents, s.carryover_max_cents, s.dependent_care_limit_cents,
            s.dependent_care_mfs_limit_cents, s.run_out_days, s.plan_year_start_month) == (
        340_000, 68_000, 750_000, 375_000, 90, 1)
    assert (s.health_year_end, s.grace_period) == ("carryover", (0, 0))
    assert FsaSettings(health_year_end="grace_period").grace_period == (2, 15)


def test_the_plan_file_loads_the_fsa_group_and_env_overrides_one_setting_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "plan.toml"
    path.write_text('[plan]\ngrace_days = 20\n[plan.fsa]\nhealth_year_end = "grace_period"\n'
                    "grace_period_months = 1\nrun_out_days = 120\n")
    plan = load_plan_file(path)
    assert (plan.fsa.health_year_end, plan.fsa.grace_period, plan.fsa.run_out_days) == ("grace_period", (1, 15), 120)
    monkeypatch.setenv("LEDGER_PLAN__FSA__RUN_OUT_DAYS", "30")
    settings = Settings(plan_file=path)
    assert (settings.plan.grace_days, settings.plan.fsa.health_year_end, settings.plan.fsa.run_out_days) == (
        20, "grace_period", 30)
    # replay workers get the plan as JSON: the unset grace and carryover settings stay unset
    assert PlanSettings.model_validate_json(settings.plan.model_dump_json()) == settings.plan


def test_a_plan_file_with_both_a_grace_period_and_a_carryover_names_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("fsa:\n  health_year_end: carryover\n  grace_period_months: 2\n")
    with pytest.raises(PlanFileError) as info:
        load_plan_file(path)
    assert str(path) in str(info.value) and "grace_period_months" in str(info.value)


# -- the batch: topic, outbox stream, projection ------------------------------------------------------


def test_the_batch_sends_the_adjudication_to_the_claims_stream_and_projects_the_account() -> None:
    proc, store = make()
    feed = Feed()
    result = run(proc, store, feed.records(
        elect(5_000_00, account_type="dependent_care", event_id="el-1"),
        contribute(192_31, on=date(2026, 1, 15), event_id="co-1"),
        claim(400_00, service=date(2026, 1, 20), account_type="dependent_care", event_id="cl-1"),
    ))
    assert result.applied == 3 and not result.write.dead_letters
    assert {r.topic for r in result.write.archive} == {TOPICS.fsa}
    [row] = store.outbox_pending(10)[0:1]
    assert row[1].stream == CLAIMS_STREAM and row[1].event_id == "cl-1:adjudicated" and row[1].key == ACCOUNT
    assert store.discrepancies() == []
    [account] = store.fsa_accounts(ACCOUNT)
    assert (account.plan_year, account.account_type, account.election_cents, account.contributed_cents,
            account.reimbursed_cents, account.available_cents) == (2026, "dependent_care", 5_000_00, 192_31,
                                                                    192_31, 0)


def test_fsa_events_on_another_topic_and_rejected_elections_are_dead_lettered_and_counted() -> None:
    proc, store = make()
    feed = Feed()
    records = [feed.record(elect(100_00, event_id="wrong-topic"), topic=TOPICS.payments),
               *feed.records(elect(3_400_01, event_id="over"))]
    result = run(proc, store, records)
    reasons = {d.event_id: (d.reason, d.field) for d in result.write.dead_letters}
    assert reasons["over"][1] == "election_cents" and "fsa.health_limit_cents" in reasons["over"][0]
    assert reasons[None][1] == "type"
    counts = store.counts()
    assert (counts.received, counts.applied, counts.dead_lettered) == (2, 0, 2)
    assert store.fsa_accounts(ACCOUNT) == []
