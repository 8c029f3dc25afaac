"""Settings, read from the environment (prefix ``LEDGER_``) or passed in by tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from events.topics import TopicSettings

# Development default of ``member_id_hmac_key``: anyone who knows it can test a guessed SSN against a
# pseudonym, so production must set its own key (LEDGER_MEMBER_ID_HMAC_KEY).
DEVELOPMENT_HMAC_KEY = "benefits-ledger-development-key-change-me"


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
    timezone: str = Field(default="UTC", description="IANA zone in which a bare date means the end of that day")
    fsa: FsaSettings = Field(default_factory=FsaSettings, description="flexible spending accounts")

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


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` wins field by field, also inside groups (LEDGER_PLAN__FSA__RUN_OUT_DAYS keeps the file's
    other fsa settings)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, BaseModel):
            value = value.model_dump(exclude_unset=True)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


class Settings(BaseSettings):
    """Everything the composition root needs. Unset broker and database mean the embedded stack."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", env_nested_delimiter="__", extra="forbid")

    kafka_bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; unset starts the embedded Tansu broker"
    )
    database_url: str | None = Field(
        default=None, description="PostgreSQL DSN; unset starts the embedded PostgreSQL in data_dir"
    )
    database_name: str = Field(
        default="benefits_ledger", description="database created on the embedded PostgreSQL"
    )
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("benefits-ledger")))
    topics: TopicSettings = Field(default_factory=TopicSettings)
    partitions: int = Field(default=4, ge=1, le=256)
    consumer_group: str = "benefits-ledger-processor"
    batch_events_max: int = Field(default=5000, ge=1, le=100_000)
    batch_wait_ms: int = Field(default=50, ge=0, le=10_000)
    merge_idle_ms: int = Field(
        default=1000, ge=0, le=60_000,
        description="how old a record must be before it is folded while another input topic of its"
        " partition has nothing buffered (bounded lateness across topics)",
    )
    relay_batch_max: int = Field(default=1000, ge=1, le=100_000)
    relay_interval_ms: int = Field(default=200, ge=10, le=60_000)
    account_cache_max: int = Field(default=200_000, ge=1, description="accounts kept in processor memory")
    session_timeout_ms: int = Field(default=6000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    plan_file: Path | None = Field(
        default=None, description="TOML, YAML or JSON file of plan settings; LEDGER_PLAN__* variables override it"
    )
    plan: PlanSettings = Field(default_factory=PlanSettings)
    member_id_hmac_key: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_HMAC_KEY),
        description="key of the HMAC-SHA256 that replaces SSN member ids (NM108 = 34) in ingested files;"
        " the default is for development only: set LEDGER_MEMBER_ID_HMAC_KEY in production",
    )
    ingest_max_file_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="largest file ingest reads")
    ingest_max_line_bytes: int = Field(
        default=64 * 1024, ge=1, description="longest line (CSV, JSON lines) or X12 segment ingest accepts"
    )
    ingest_max_members_per_file: int = Field(
        default=1_000_000, ge=1, description="most member loops (834 INS, 820 ENT) or CSV rows in one file"
    )
    # Faults (issue 12): bounds, outages, memory. Units last.
    record_bytes_max: int = Field(
        default=1024 * 1024, ge=4096, le=256 * 1024 * 1024,
        description="largest input record the processor decodes; a larger one is dead-lettered",
    )
    account_cache_bytes_max: int = Field(
        default=160 * 1024 * 1024, ge=1024 * 1024,
        description="estimated bytes of account state a processor keeps in memory (processor/footprint.py);"
        " with the other defaults a processor stays within 1 GB (README, Memory)",
    )
    key_partition_cache_max: int = Field(
        default=100_000, ge=1, description="record keys whose partition a processor remembers (about 150 bytes each)",
    )
    outage_retry_seconds_max: int = Field(
        default=300, ge=1, le=86_400,
        description="how long the ledger waits for PostgreSQL or the broker (retrying with backoff) before it"
        " stops with exit code 75; an outage within it loses nothing and needs no restart",
    )
    log_check_interval_ms: int = Field(
        default=5000, ge=100, le=600_000,
        description="how often the processor checks that the broker's log is still the one its positions"
        " belong to (cluster id, topic ids) and that the broker answers",
    )
    outbox_echo_timeout_seconds: int = Field(
        default=3600, ge=0,
        description="a payment the ledger posted that has not come back through the payments topic after this"
        " long is published again (a copy arriving twice is a duplicate); 0: only when the log changed",
    )
    dead_letter_record_bytes_max: int = Field(
        default=1_000_000, ge=4096, le=256 * 1024 * 1024,
        description="largest dead letter sent whole to the dead-letter topic (Kafka's default message.max.bytes"
        " is 1,048,588); a larger one is sent by reference (topic, partition, offset, sha256, reason), its body"
        " kept in the dead_letter table",
    )

    @model_validator(mode="before")
    @classmethod
    def _plan_from_file(cls, data: Any) -> Any:
        """The plan file gives the base values; plan settings set directly (or by env) win."""
        if isinstance(data, dict) and data.get("plan_file"):
            from_file = load_plan_file(Path(data["plan_file"])).model_dump(exclude_unset=True)
            direct = data.get("plan") or {}
            if isinstance(direct, PlanSettings):
                direct = direct.model_dump(exclude_unset=True)
            data = {**data, "plan": _merged(from_file, direct)}
        return data

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> Settings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        return self

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None
