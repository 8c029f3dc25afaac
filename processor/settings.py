"""Settings, read from the environment (prefix ``LEDGER_``) or passed in by tests."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from events.topics import TopicSettings

# Development default of ``member_id_hmac_key``: anyone who knows it can test a guessed SSN against a
# pseudonym, so production must set its own key (LEDGER_MEMBER_ID_HMAC_KEY).
DEVELOPMENT_HMAC_KEY = "benefits-ledger-development-key-change-me"

# Where secret files are mounted by compose and Kubernetes unless LEDGER_SECRETS_DIR says otherwise.
DEFAULT_SECRETS_DIR = "/run/secrets"


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


class NotifierSettings(BaseModel):
    """The notifier (``benefits-ledger up --role notifier``): daily digests to agency coordinators by SMTP."""

    model_config = {"frozen": True, "extra": "forbid"}

    consumer_group: str = Field(default="benefits-ledger-notifier", description="its own group on the topic")
    smtp_host: str | None = Field(default=None, description="SMTP server; unset: the notifier does not start")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = Field(default=False, description="upgrade the connection with STARTTLS")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(default=30.0, gt=0, le=600)
    sender: str = Field(default="benefits-ledger@localhost", description="the From address of every digest")
    coordinators: dict[str, str] = Field(
        default_factory=dict,
        description="agency id -> the coordinator's e-mail address (JSON in LEDGER_NOTIFIER__COORDINATORS);"
        " an agency without one gets no digest (logged)",
    )
    digest_hour: int = Field(default=7, ge=0, le=23, description="hour of the day (plan time zone) digests go out")
    batch_records_max: int = Field(default=5000, ge=1, le=100_000, description="records folded in one transaction")
class WebSettings(BaseModel):
    """The workbench (``benefits-ledger serve``): where it listens, its sessions and its limits."""

    model_config = {"frozen": True, "extra": "forbid"}

    host: str = Field(default="127.0.0.1", description="address to listen on (loopback unless told otherwise)")
    port: int = Field(default=8000, ge=1, le=65535)
    session_secret: SecretStr | None = Field(
        default=None, description="signs session cookies and form tokens; unset: a random secret kept in"
        " data_dir/web-secret (so sessions survive a restart)",
    )
    session_max_age_s: int = Field(default=8 * 3600, ge=60, description="a session lasts this long")
    secure_cookies: bool = Field(default=False, description="send cookies over HTTPS only (set behind TLS)")
    login_failures_max: int = Field(default=5, ge=1, description="failed logins of one user within the window")
    login_remote_failures_max: int = Field(
        default=20, ge=1, description="failed logins from one address within the window")
    login_window_s: int = Field(default=900, ge=1, description="throttling window of failed logins")
    form_token_max_age_s: int = Field(default=12 * 3600, ge=60, description="a form must be sent within this")
    db_connections_max: int = Field(default=4, ge=1, le=64, description="database connections of the web app")
    asof_cache_entries_max: int = Field(default=4, ge=0, le=64, description="as-of replays kept in memory")
    request_body_bytes_max: int = Field(default=64 * 1024, ge=1024, description="largest request body accepted")
    pending_poll_ms: int = Field(default=1000, ge=100, description="how often a page asks for a pending event")


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
    notifier: NotifierSettings = Field(default_factory=NotifierSettings)
    member_id_hmac_key: SecretStr | None = Field(
        default=None,
        description="key (at least 32 bytes) of the HMAC-SHA256 that replaces SSN member ids (NM108 = 34) in"
        " ingested files; unset: the embedded demo uses a public demo key, anything else refuses to ingest"
        " (processor/keys.py)",
    )
    ingest_max_file_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="largest file ingest reads")
    ingest_max_line_bytes: int = Field(
        default=64 * 1024, ge=1, description="longest line (CSV, JSON lines) or X12 segment ingest accepts"
    )
    ingest_max_members_per_file: int = Field(
        default=1_000_000, ge=1, description="most member loops (834 INS, 820 ENT) or CSV rows in one file"
    )
    ingest_errors_max: int = Field(
        default=1000, ge=1, description="most errors one file may have: at the next, ingest stops reading it and"
        " ingests nothing of it"
    )
    # -- operations (issue 15): Kafka security and topic shape, timeouts, metrics, logs -------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="how every Kafka client (processor, relay, publisher, admin) connects"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism; required with SASL_PLAINTEXT and SASL_SSL"
    )
    kafka_sasl_username: str | None = Field(default=None, max_length=256, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password; best from a secret file (LEDGER_SECRETS_DIR)"
    )
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle that signed the brokers' certificates")
    kafka_ssl_certfile: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="client private key (mutual TLS)")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="password of the client key")
    kafka_replication_factor: int = Field(
        default=3, ge=1, le=32,
        description="replication factor of the topics the ledger creates; the embedded broker (one node) uses 1",
    )
    kafka_min_insync_replicas: int = Field(
        default=2, ge=1, le=32,
        description="min.insync.replicas of the topics the ledger creates (with acks=all a write needs this many"
        " replicas); the embedded broker uses 1",
    )
    kafka_retention_ms: int = Field(
        default=-1, ge=-1,
        description="retention.ms of the input topics and of the discrepancy and claims topics: -1 keeps"
        " everything, so a new ledger (or a new subscriber) can start from the beginning",
    )
    kafka_dead_letter_retention_ms: int | None = Field(
        default=None, ge=-1,
        description="retention.ms of the dead-letter topic; unset: the broker's default (the dead_letter table"
        " is the record)",
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, le=300,
        description="how long a broker or database may take to answer before it counts as unreachable (exit 3)",
    )
    database_password: SecretStr | None = Field(
        default=None,
        description="password for LEDGER_DATABASE_URL, kept out of the DSN; best from a secret file",
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="HTTP port of /metrics, /livez and /readyz (processor, relay, web app); unset: no endpoint",
    )
    metrics_host: str = Field(default="127.0.0.1", max_length=255, description="address the metrics endpoint binds")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: one line per record; json: one JSON object per line (JSON lines)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="level of the ledger's own loggers"
    )
    # issue 12: keys from a secret file or the environment; chain heads anchored outside the database
    member_id_hmac_key_file: Path | None = Field(
        default=None, description="file holding member_id_hmac_key (instead of the variable)"
    )
    anchor_hmac_key: SecretStr | None = Field(
        default=None,
        description="key (at least 32 bytes) that signs the archive's checkpoints; PostgreSQL never sees it."
        " Unset: the embedded demo uses a public demo key, anything else refuses to process",
    )
    anchor_hmac_key_file: Path | None = Field(default=None, description="file holding anchor_hmac_key")
    anchor_file: Path | None = Field(
        default=None, description="append-only checkpoint log; unset: data_dir/anchors/<database>.jsonl"
    )
    anchor_topic: str | None = Field(
        default=None, description="also append checkpoints to this Kafka topic (production: retention.ms=-1)"
    )
    anchor_interval_events_max: int = Field(
        default=1000, ge=1, le=1_000_000,
        description="a partition's chain head is checkpointed by the first commit that brings it this many"
        " archived events since its last checkpoint",
    )
    anchor_interval_ms: int = Field(
        default=5000, ge=10, le=3_600_000,
        description="and at the latest this long after its first event not yet checkpointed (and at stop)",
    )
    web: WebSettings = Field(default_factory=WebSettings, description="the workbench (benefits-ledger serve)")
    demo_clock: bool = Field(
        default=False,
        description="demo only: recorded_at follows the business time of the events folded (processor/clock.py),"
        " so the demo's archive answers \"as known on\" questions; `benefits-ledger demo` turns it on (unless"
        " --wall-clock), `up` refuses to start with it",
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
    gc_full_collect_interval_seconds: int = Field(
        default=300, ge=0, le=86_400,
        description="a processor runs the garbage collector's full collection on this timer instead of CPython's"
        " allocation count, which with a large account cache visits the whole cache every few seconds"
        " (processor/collector.py); 0 leaves CPython's default",
    )
    key_partition_cache_max: int = Field(
        default=100_000, ge=1, description="record keys whose partition a processor remembers (about 150 bytes each)",
    )
    outage_retry_seconds_max: int = Field(
        default=300, ge=1, le=86_400,
        description="how long the ledger waits for PostgreSQL or the broker (retrying with backoff) before it"
        " stops with exit code 3; an outage within it loses nothing and needs no restart",
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
    # issue 16: replay (verify, rebuild, the benchmark) folds a group of accounts at a time (replay/stream.py)
    replay_accounts_max: int = Field(
        default=500, ge=1, le=1_000_000,
        description="accounts replay holds at once: a group of one partition's accounts, folded, compared or"
        " written, then dropped",
    )
    replay_bytes_max: int = Field(
        default=16 * 1024 * 1024, ge=1,
        description="archived event bytes replay reads ahead for one group (an account is never split)",
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

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and (self.kafka_sasl_mechanism is None or not self.kafka_sasl_username
                     or self.kafka_sasl_password is None):
            raise ValueError(
                f"kafka_security_protocol {self.kafka_security_protocol} needs kafka_sasl_mechanism,"
                " kafka_sasl_username and kafka_sasl_password (LEDGER_KAFKA_SASL_*)"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together (mutual TLS)")
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            raise ValueError("kafka_min_insync_replicas must not exceed kafka_replication_factor")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any) -> tuple[Any, ...]:
        """Secrets may come from files (compose and Kubernetes ``secrets:``): one file per setting, named
        like its variable (``ledger_database_password``), in LEDGER_SECRETS_DIR (default /run/secrets).
        Arguments and the environment win over files."""
        import os

        from pydantic_settings import SecretsSettingsSource

        directory = Path(os.environ.get("LEDGER_SECRETS_DIR") or DEFAULT_SECRETS_DIR)
        sources: tuple[Any, ...] = (init_settings, env_settings, dotenv_settings)
        if directory.is_dir():
            sources += (SecretsSettingsSource(settings_cls, secrets_dir=directory),)
        return sources

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def topic_replication_factor(self) -> int:
        """What topics are created with: the embedded broker is one node, so 1 there."""
        return 1 if self.embedded_broker else self.kafka_replication_factor

    @property
    def topic_min_insync_replicas(self) -> int:
        return 1 if self.embedded_broker else self.kafka_min_insync_replicas

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None
