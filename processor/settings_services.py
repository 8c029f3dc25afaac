"""The settings of the services beside the processor, sections of processor/settings.py: the notifier
(LEDGER_NOTIFIER__*) and the workbench (LEDGER_WEB__*)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


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
