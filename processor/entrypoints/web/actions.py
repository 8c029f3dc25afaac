"""From a submitted form to one event on the ledger: the person's actions on discrepancies and the entry
forms (a member's direct payment, an adjustment, a refund, a cash application, an enrollment change).

Every form carries a signed token made when the page was drawn. The event id is derived from it, and so
is ``occurred_at`` (when the form was opened), so sending the same form twice gives the same bytes and
the ledger counts the copy as a duplicate. The event is validated by the codec (the rules ingest applies)
and then folded, on a copy of the account's committed state, by the processor's own pure functions, so
most mistakes are named on the page before anything is published; the ledger's fold stays the judge.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from events import codec
from events.money import AmountError, parse_dollars
from events.publisher import deterministic_event_id
from events.topics import topic_for
from events.types import (
    AdjustmentPosted,
    CashApplied,
    DiscrepancyAction,
    EnrollmentChanged,
    Event,
    InputEvent,
    PaymentReceived,
    RefundIssued,
    tag_of,
)
from processor.batch import partition_for
from processor.entrypoints.web.auth import Submission, User
from processor.entrypoints.web.context import WebContext
from processor.rules.base import Rejected
from processor.rules.fold import fold_event
from processor.state import AccountState, PartitionState, decode_account, decode_partition, encode_state

WEB_SOURCE = "web"
# The form fields people type money into, and the event field each becomes (integer cents).
MONEY_FIELDS = {"amount": "amount_cents"}
ACTIONS = ("assign", "note", "status", "waive", "write_off", "approve", "reject", "retro_approve",
           "retro_reject", "dismiss", "reopen")
_ACTION_TYPES = {
    "assign": "discrepancy_assigned", "note": "discrepancy_noted", "status": "discrepancy_status_set",
    "waive": "discrepancy_waived", "write_off": "discrepancy_written_off", "approve": "waiver_approved",
    "reject": "waiver_rejected", "retro_approve": "retro_change_approved", "retro_reject": "retro_change_rejected",
    "dismiss": "discrepancy_dismissed", "reopen": "discrepancy_reopened",
}
ENTRY_FORMS: dict[str, tuple[str, type[Event]]] = {
    "payment": ("a member's direct payment", PaymentReceived),
    "adjustment": ("an adjustment", AdjustmentPosted),
    "refund": ("a refund issued", RefundIssued),
    "cash": ("a cash application", CashApplied),
    "enrollment": ("an enrollment change", EnrollmentChanged),
}
TEXT_FIELD_CHARS_MAX = 4000  # no form field is longer (the codec bounds the free text of actions further)


class FormError(ValueError):
    """What is wrong with a form, naming the form field (None: the form as a whole)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class FormToken:
    nonce: str
    form: str
    login: str
    issued_at: datetime


def _serializer(ctx: WebContext) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(ctx.secret, salt="benefits-ledger-form")


def form_token(ctx: WebContext, user: User, form: str) -> str:
    """A token for one form drawn for one user: it names the event that form will become."""
    return _serializer(ctx).dumps({"n": secrets.token_urlsafe(18), "f": form, "u": user.login})


def read_token(ctx: WebContext, user: User, form: str, token: str) -> FormToken:
    try:
        data, issued = _serializer(ctx).loads(token, max_age=ctx.settings.web.form_token_max_age_s,
                                              return_timestamp=True)
    except SignatureExpired as exc:
        raise FormError("this form is too old: open it again") from exc
    except BadSignature as exc:
        raise FormError("this form was not drawn by this server: open it again") from exc
    if data.get("u") != user.login or data.get("f") != form:
        raise FormError("this form belongs to another page or person: open it again")
    return FormToken(nonce=str(data["n"]), form=form, login=user.login, issued_at=issued)


def event_id_of(token: FormToken) -> str:
    return deterministic_event_id(WEB_SOURCE, token.nonce)


def business_day(ctx: WebContext, at: datetime) -> date:
    return at.astimezone(ZoneInfo(ctx.plan.timezone)).date()


def _text(form: Mapping[str, str], name: str) -> str:
    # A textarea's line breaks and tabs become spaces: events carry no control characters (events/codec.py).
    value = " ".join(form.get(name, "").split())
    if len(value) > TEXT_FIELD_CHARS_MAX:
        raise FormError(f"longer than {TEXT_FIELD_CHARS_MAX} characters", name)
    return value


def _money(form: Mapping[str, str], name: str = "amount") -> int:
    text = _text(form, name)
    if not text:
        raise FormError("an amount in dollars and cents is required (for example 123.45)", name)
    try:
        return parse_dollars(text)
    except AmountError as exc:
        raise FormError(str(exc), name) from exc


def _month(value: str) -> str | None:
    """``YYYY-MM`` (a month input) or a date: the month's first day, as the events want it."""
    value = value.strip()
    if not value:
        return None
    return f"{value}-01" if len(value) == 7 else value


def _decode(data: dict[str, Any]) -> InputEvent:
    """The event the ledger would accept, or a FormError naming the form field that is wrong."""
    try:
        return codec.decode_input(msgspec.json.encode(data))
    except codec.EventDecodeError as exc:
        field = {v: k for k, v in MONEY_FIELDS.items()}.get(exc.field or "", exc.field)
        raise FormError(exc.reason, field) from exc


# ---------------------------------------------------------------------------------------------
# Building events


def action_event(ctx: WebContext, user: User, action: str, discrepancy: Any, form: Mapping[str, str],
                 token: FormToken) -> InputEvent:
    """A person's action on a discrepancy (the row the page showed)."""
    if action not in _ACTION_TYPES:
        raise FormError(f"unknown action {action!r}")
    data: dict[str, Any] = {
        "type": _ACTION_TYPES[action], "event_id": event_id_of(token), "account_id": discrepancy.account_id,
        "effective_on": business_day(ctx, token.issued_at).isoformat(), "occurred_at": token.issued_at.isoformat(),
        "source": f"{WEB_SOURCE}:{user.login}", "discrepancy_id": discrepancy.discrepancy_id, "user": user.login,
        "role": user.role, "reason": _text(form, "reason"),
        "agency_id": user.agency_id if user.is_coordinator else None,
    }
    if action == "assign":
        assignee = _text(form, "assignee")
        data["assignee"] = assignee or None
    elif action == "note":
        data["note"] = _text(form, "note")
    elif action == "status":
        data["work_status"] = _text(form, "work_status")
    elif action in ("waive", "write_off", "retro_approve"):
        try:
            data["amount_cents"] = int(_text(form, "amount_cents"))
        except ValueError as exc:
            raise FormError("the amount to adjust is missing: reload the page", "amount_cents") from exc
    elif action in ("approve", "reject"):
        data["request_event_id"] = _text(form, "request_event_id")
    return _decode(data)


def entry_event(ctx: WebContext, user: User, form_name: str, form: Mapping[str, str], token: FormToken) -> InputEvent:
    """One of the entry forms as the event it records; money typed in dollars and cents."""
    if form_name not in ENTRY_FORMS:
        raise FormError(f"unknown form {form_name!r}")
    account = _text(form, "account_id")
    if not account:
        raise FormError("the account is required", "account_id")
    received = _text(form, "effective_on") or business_day(ctx, token.issued_at).isoformat()
    ref = f"web-{event_id_of(token).split(':', 1)[1][:16]}"  # the id of the payment, adjustment... it records
    data: dict[str, Any] = {
        "type": tag_of(ENTRY_FORMS[form_name][1]), "event_id": event_id_of(token), "account_id": account,
        "effective_on": received, "occurred_at": token.issued_at.isoformat(), "source": f"{WEB_SOURCE}:{user.login}",
    }
    if form_name == "payment":
        amount = _money(form)
        if amount <= 0:  # a take-back is a remittance's, never a member's direct payment
            raise FormError("a payment amount must be positive", "amount")
        data.update(payment_id=_text(form, "payment_id") or ref, coverage_month=_month(_text(form, "coverage_month")),
                    amount_cents=amount, method=_text(form, "method") or "check",
                    payer_id=_text(form, "payer_id") or account, trace_number=_text(form, "trace_number") or None)
    elif form_name == "adjustment":
        data.update(adjustment_id=ref, coverage_month=_month(_text(form, "coverage_month")), amount_cents=_money(form),
                    reason=_text(form, "reason"), plan=_text(form, "plan") or None)
        if not data["reason"]:
            raise FormError("say why the adjustment is made", "reason")
    elif form_name == "refund":
        data.update(refund_id=ref, payee_id=_text(form, "payee_id") or account, amount_cents=_money(form),
                    method=_text(form, "method") or "check", reason=_text(form, "reason"),
                    payment_id=_text(form, "payment_id") or None,
                    coverage_month=_month(_text(form, "coverage_month")))
        if not data["reason"]:
            raise FormError("say why the refund is made", "reason")
    elif form_name == "cash":
        data.update(application_id=ref, payment_id=_text(form, "payment_id"),
                    to_account_id=_text(form, "to_account_id"),
                    to_coverage_month=_month(_text(form, "to_coverage_month")), amount_cents=_money(form),
                    reason=_text(form, "reason"))
        if not data["reason"]:
            raise FormError("say where the research found the cash belongs", "reason")
    else:
        data.update(member_id=_text(form, "member_id") or account, relationship=_text(form, "relationship") or "self",
                    plan=_text(form, "plan"), coverage_line=_text(form, "coverage_line") or "health",
                    tier=_text(form, "tier"), action=_text(form, "action") or "change",
                    status=_text(form, "status") or "active", benefit_begin=_text(form, "benefit_begin"),
                    benefit_end=_text(form, "benefit_end") or None, agency_id=_text(form, "agency_id"),
                    reason=_text(form, "reason") or None)
        for required in ("plan", "tier", "benefit_begin", "agency_id"):
            if not data[required]:
                raise FormError("required", required)
    return _decode(data)


# ---------------------------------------------------------------------------------------------
# Checking and publishing


def precheck(ctx: WebContext, event: InputEvent) -> None:
    """Fold the event on a copy of its account's committed state: the ledger's own rules, before publishing."""
    account, part = ctx.state(event.account_id)
    if account is None:
        account = AccountState(account_id=event.account_id,
                               partition=partition_for(event.account_id.encode(), ctx.settings.partitions))
        part = None
    work = decode_account(encode_state(account))
    scratch = (decode_partition(encode_state(part)) if part is not None
               else PartitionState(partition=account.partition))
    try:  # the one fold, on copies: nothing of the committed state moves
        fold_event(event, scratch, ctx.plan, lambda _account_id: work, lambda: [work])
    except Rejected as exc:
        raise FormError(exc.reason, _form_field(exc.field)) from exc


def _form_field(field: str | None) -> str | None:
    return {v: k for k, v in MONEY_FIELDS.items()}.get(field or "", field)


def submit(ctx: WebContext, user: User, token: FormToken, event: InputEvent) -> Submission:
    """Record the submission, then publish its event (once per form token; a resend publishes the same
    bytes again, which the ledger counts as a duplicate)."""
    body = codec.encode(event)
    submission = ctx.users.add_submission(Submission(
        token=token.nonce, event_id=event.event_id, event_type=tag_of(type(event)), account_id=event.account_id,
        discrepancy_id=event.discrepancy_id if isinstance(event, DiscrepancyAction) else None, login=user.login,
        body=body, submitted_at=ctx.clock(),
    ))
    if submission.body != body:
        raise FormError(f"this form was already sent as event {submission.event_id}, with other values: open the"
                        " form again to send another")
    ctx.publish(codec.decode_input(submission.body))
    return submission


def publish_checked(ctx: WebContext, user: User, token: FormToken, event: InputEvent) -> Submission:
    """Everything a form goes through once it is an event: a resend of a form already sent is published
    again as it was (not checked again: the ledger already judged it); anything new is checked first."""
    existing = ctx.users.submission(token.nonce)
    if existing is None:
        precheck(ctx, event)
    return submit(ctx, user, token, event)


def topic_of(event: Event, ctx: WebContext) -> str:
    return topic_for(event, ctx.settings.topics)
