"""Settings, read from the environment (prefix ``LEDGER_``) or passed in by tests.

``Settings`` is the whole; its nested sections live beside it, each readable on its own:
processor/settings_plan.py (``plan``, the plan file), processor/settings_fsa.py (``plan.fsa``) and
processor/settings_services.py (``notifier``, ``web``). Every name is importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from events.topics import TopicSettings as TopicSettings
from processor.settings_fsa import FSA_CARRYOVER_2026_CENTS as FSA_CARRYOVER_2026_CENTS
from processor.settings_fsa import FSA_GRACE_MAX as FSA_GRACE_MAX
from processor.settings_fsa import FsaSettings as FsaSettings
from processor.settings_plan import PayCalendar as PayCalendar
from processor.settings_plan import PlanFileError as PlanFileError
from processor.settings_plan import PlanSettings as PlanSettings
from processor.settings_plan import TierRule as TierRule
from processor.settings_plan import load_plan_file as load_plan_file
from processor.settings_services import NotifierSettings as NotifierSettings
from processor.settings_services import WebSettings as WebSettings

# Development default of ``member_id_hmac_key``: anyone who knows it can test a guessed SSN against a
# pseudonym, so production must set its own key (LEDGER_MEMBER_ID_HMAC_KEY).
DEVELOPMENT_HMAC_KEY = "benefits-ledger-development-key-change-me"

# Where secret files are mounted by compose and Kubernetes unless LEDGER_SECRETS_DIR says otherwise.
DEFAULT_SECRETS_DIR = "/run/secrets"


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
        description="the lateness allowed to producers' clocks and deliveries when the input topics of a"
        " partition are folded in time order: a record waits until it is this old while another topic is"
        " caught up, and while a topic behind holds no record this much younger than it",
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
