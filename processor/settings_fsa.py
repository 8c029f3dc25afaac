"""The plan's flexible spending account rules (LEDGER_PLAN__FSA__*), a section of processor/settings.py."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

# A health FSA grace period may run at most 2 months and 15 days past the plan year (IRS Notice 2005-42).
FSA_GRACE_MAX = (2, 15)
FSA_CARRYOVER_2026_CENTS = 68_000


class FsaSettings(BaseModel):
    """Flexible spending account rules of the plan; defaults are the 2026 IRS limits.

    A health FSA ends its plan year with a carryover, a grace period or neither, never both
    (``health_year_end``). Dependent-care accounts have neither; the run-out applies to both. The carryover
    limit and the grace period length are left unset unless the plan uses them, so that setting one for the
    other rule is an error rather than silently ignored.
    """

    model_config = {"frozen": True, "extra": "forbid"}

    health_limit_cents: int = Field(default=340_000, ge=0, description="largest health FSA election (2026: $3,400)")
    dependent_care_limit_cents: int = Field(
        default=750_000, ge=0, description="largest dependent-care election (2026: $7,500)"
    )
    dependent_care_mfs_limit_cents: int = Field(
        default=375_000, ge=0, description="largest dependent-care election, married filing separately ($3,750)"
    )
    health_year_end: Literal["carryover", "grace_period", "none"] = Field(
        default="carryover",
        description="what happens to an unused health balance: carried over (up to health_carryover_max_cents),"
        " spent on expenses incurred in a grace period after the plan year, or forfeited",
    )
    health_carryover_max_cents: int | None = Field(
        default=None, ge=0,
        description="unused health balance carried into the next plan year at most; unset: $680 (2026).",
    )
    grace_period_months: int | None = Field(
        default=None, ge=0, le=2, description="grace period, whole months after the plan year; unset: 2"
    )
    grace_period_days: int | None = Field(
        default=None, ge=0, le=31, description="grace period, days after the months; unset: 15 (2 months 15 days)"
    )
    run_out_days: int = Field(
        default=90, ge=0, le=366,
        description="days after the plan year (or its grace period) in which claims for it may still be submitted",
    )
    plan_year_start_month: int = Field(default=1, ge=1, le=12, description="month the plan year starts (1 = January)")
    health_cobra_continuation: bool = Field(
        default=False,
        description="a health FSA may be continued under COBRA after employment ends (an 834 COBRA enrollment"
        " of the member's fsa coverage line): participation goes on instead of ending at the termination",
    )
    dependent_care_pending: bool = Field(
        default=True,
        description="a dependent-care claim beyond what has been contributed keeps its unpaid remainder pending"
        " and pays it as later contributions arrive; false: the claim is partially approved, finally",
    )

    @model_validator(mode="after")
    def _one_year_end_rule(self) -> FsaSettings:
        rule = self.health_year_end
        if rule != "grace_period":
            for name in ("grace_period_months", "grace_period_days"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}: a grace period is set but health_year_end is {rule!r}; a health FSA has either a"
                        " grace period or a carryover, never both (set health_year_end = 'grace_period')"
                    )
        if rule != "carryover" and self.health_carryover_max_cents is not None:
            raise ValueError(
                f"health_carryover_max_cents: a carryover is set but health_year_end is {rule!r}; a health FSA"
                " has either a grace period or a carryover, never both (set health_year_end = 'carryover')"
            )
        if self.grace_period > FSA_GRACE_MAX:
            months, days = self.grace_period
            raise ValueError(
                f"grace_period_days: a grace period of {months} months {days} days is longer than the 2 months 15"
                " days it may run"
            )
        if self.dependent_care_mfs_limit_cents > self.dependent_care_limit_cents:
            raise ValueError("dependent_care_mfs_limit_cents: must not exceed dependent_care_limit_cents")
        return self

    @property
    def carryover_max_cents(self) -> int:
        """What may carry over into the next plan year: 0 unless the plan uses a carryover."""
        if self.health_year_end != "carryover":
            return 0
        return FSA_CARRYOVER_2026_CENTS if self.health_carryover_max_cents is None else self.health_carryover_max_cents

    @property
    def grace_period(self) -> tuple[int, int]:
        """(months, days) of the grace period; (0, 0) unless the plan uses one."""
        if self.health_year_end != "grace_period":
            return (0, 0)
        months = FSA_GRACE_MAX[0] if self.grace_period_months is None else self.grace_period_months
        days = FSA_GRACE_MAX[1] if self.grace_period_days is None else self.grace_period_days
        return (months, days)
