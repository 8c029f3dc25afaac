"""The plan settings (LEDGER_PLAN__* or a plan file), a section of processor/settings.py: billing and
reconciliation rules, payroll calendars, tiers, and the plan file's loader."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from processor.settings_fsa import FsaSettings


class PayCalendar(BaseModel):
    """An agency's payroll calendar: how often it pays and one pay date, from which every other follows."""

    model_config = {"frozen": True, "extra": "forbid"}

    frequency: Literal["weekly", "biweekly", "semi_monthly", "monthly"]
    first_pay_date: date = Field(description="any one pay date of the calendar (for semi-monthly: the first"
                                 " of the month's two; the second is the month's last day, or the 15th + 15)")


class TierRule(BaseModel):
    """Who a coverage tier covers besides the subscriber: a spouse or domestic partner, and children."""

    model_config = {"frozen": True, "extra": "forbid"}

    partner: Literal["none", "required", "any"] = "none"
    children: Literal["none", "required", "any"] = "none"
    dependents_min: int = Field(default=0, ge=0, description="at least this many dependents in all")
    dependents_max: int | None = Field(default=None, ge=0, description="at most this many dependents in all")


def _default_tiers() -> dict[str, TierRule]:
    return {
        "EMP": TierRule(), "IND": TierRule(),
        "ESP": TierRule(partner="required"), "SPO": TierRule(partner="required"),
        "ECH": TierRule(children="required"), "CHD": TierRule(children="required"),
        "FAM": TierRule(partner="any", children="any", dependents_min=2),
        "E1D": TierRule(partner="any", children="any", dependents_min=1, dependents_max=1),
        "TWO": TierRule(partner="any", children="any", dependents_min=1, dependents_max=1),
        "SPC": TierRule(partner="required", children="required"),
    }


class PlanSettings(BaseModel):
    """Billing and reconciliation rules that vary by plan and state."""

    model_config = {"frozen": True, "extra": "forbid"}

    tolerance_cents: int = Field(default=100, ge=0, description="paid may differ from billed by this much")
    cobra_premium_percent: int = Field(
        default=102, ge=0, le=102, description="COBRA premium as a percent of the plan cost (42 USC 300bb-2)"
    )
    cobra_disability_percent: int = Field(
        default=150, ge=0, le=150, description="premium percent in disability extension months 19 to 29"
    )
    cobra_first_payment_days: int = Field(default=45, ge=45, description="first payment due after election")
    cobra_grace_days: int = Field(default=30, ge=30, description="later payments are timely within this")
    cobra_shortfall_max_cents: int = Field(
        default=5000, ge=0, description="a COBRA shortfall up to the lesser of this and the percent counts as paid"
    )
    cobra_shortfall_max_percent: int = Field(default=10, ge=0, le=100)
    cobra_shortfall_notice_days: int = Field(
        default=30, ge=30, le=365,
        description="the reasonable time to pay a COBRA shortfall after the notice of it (26 CFR 54.4980B-8"
        " Q&A-5(d): 30 days after the notice is reasonable); the member's notice names the date",
    )
    payroll_allocation: Literal["per_deduction", "pay_date_month"] = Field(
        default="per_deduction",
        description="per_deduction: a month's payroll deductions owe (12 / periods a year) of its premium each,"
        " so three biweekly deductions in a month are not an overpayment; pay_date_month: compare the month's"
        " deductions with its whole premium",
    )
    retroactive_limit_days: int = Field(
        default=60, ge=0, description="an enrollment change reaching further back than this needs approval"
    )
    grace_days: int = Field(default=30, ge=0, description="days after the due date before a bill is missing")
    coverage_start: Literal["event_date", "first_of_month_following"] = Field(
        default="event_date",
        description="event_date: coverage is priced from its benefit begin date; first_of_month_following:"
        " coverage beginning after the 1st is priced from the first of the next month",
    )
    proration: Literal["whole_month", "daily"] = Field(
        default="whole_month",
        description="whole_month: the coverage in force on the first of the month (or the first to begin in"
        " it) prices the whole month; daily: each coverage owes its days in the month / days in the month",
    )
    partner_tier_without: dict[str, str] = Field(
        default_factory=lambda: {"ESP": "EMP", "E1D": "EMP", "FAM": "ECH"},
        description="the tier a subscriber would have without a domestic partner: the difference between"
        " the two rates is the partner's share (employee share post-tax, employer share imputed income)",
    )
    life_contributions_post_tax: bool = Field(
        default=True,
        description="employee contributions for group-term life are taken after tax and so reduce its"
        " imputed income (IRC 79); false when they are pre-tax through the cafeteria plan",
    )
    retiree_death_month_waived: bool = Field(
        default=True,
        description="a retiree's coverage ended by death owes no premium for the month of death",
    )
    aging_buckets_days: tuple[int, ...] = Field(
        default=(30, 60, 90, 120), min_length=1,
        description="upper bounds (days past due) of the aging buckets in statements; the last is open-ended",
    )
    pay_calendars: dict[str, PayCalendar] = Field(
        default_factory=dict,
        description="payroll calendars by payer (agency) id: a month's payroll deductions are expected on each"
        " of its pay dates, so a month with fewer deductions than pay dates is short (per_deduction allocation)",
    )
    unmonthed_direct_payments: Literal["oldest_first", "hold"] = Field(
        default="oldest_first",
        description="a member's direct payment that names no coverage month: applied to the account's oldest"
        " month with a balance due (oldest_first), or held as unapplied cash (hold)",
    )
    retroactive_terminations: Literal["allowed", "unpaid_only"] = Field(
        default="allowed",
        description="allowed: a termination takes effect on the date given, however far back; unpaid_only:"
        " only when no premium was collected for the period, otherwise coverage ends at the end of the month"
        " the termination was made in and the premium collected after that is refunded",
    )
    remittance_lines_days: int = Field(
        default=3, ge=0,
        description="days after a remittance's payment date in which its lines are expected to be posted; the"
        " first business day after that judges it with the lines the ledger posted (a missing line is then a"
        " remittance_total_mismatch), and an advice still without its money is a mismatch too",
    )
    cancel_after_short_months: int | None = Field(
        default=None, ge=1,
        description="after this many consecutive months underpaid or unpaid, the finding says to cancel"
        " the coverage for non-payment (off by default)",
    )
    tiers: dict[str, TierRule] = Field(
        default_factory=_default_tiers,
        description="who each coverage tier covers besides the subscriber; a tier that does not match the"
        " covered dependents is an eligibility discrepancy (tiers not listed are not checked; a coverage"
        " line whose dependents the sender never reports is not checked either)",
    )
    child_age_limits: dict[str, int] = Field(
        default_factory=lambda: {"health": 26},
        description="by coverage line, the age at which a child's coverage ends (PHSA 2714: health to 26);"
        " coverage runs through the end of the month of that birthday; lines not listed are not checked",
    )
    timezone: str = Field(default="UTC", description="IANA zone in which a bare date means the end of that day")
    fsa: FsaSettings = Field(default_factory=FsaSettings, description="flexible spending accounts")
    waiver_approval_cents: int = Field(
        default=10_000, ge=0,
        description="a waiver or write-off of more than this (either sign) waits for a supervisor's approval",
    )

    @model_validator(mode="after")
    def _valid_report_settings(self) -> PlanSettings:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        days = self.aging_buckets_days
        if any(d <= 0 for d in days) or list(days) != sorted(set(days)):
            raise ValueError("aging_buckets_days must be positive and strictly increasing")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        return self


class PlanFileError(ValueError):
    """The plan settings file is unreadable or invalid; the message names the file and the field."""


def load_plan_file(path: Path) -> PlanSettings:
    """Plan settings from a TOML, YAML or JSON file; every field is optional (defaults apply)."""
    import json
    import tomllib

    import yaml
    from pydantic import ValidationError

    try:
        text = path.read_text()
    except OSError as exc:
        raise PlanFileError(f"{path}: cannot read the plan settings file: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise PlanFileError(f"{path}: plan settings must be a .toml, .yaml or .json file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise PlanFileError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise PlanFileError(f"{path}: expected a table of settings, got {type(data).__name__}")
    data = data.get("plan", data)  # the settings may sit under a [plan] table
    try:
        return PlanSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}" for err in exc.errors()
        )
        raise PlanFileError(f"{path}: {problems}") from exc
