"""The JSON HTTP API for other services (its OpenAPI document is /api/openapi.json). Money is integer
cents. Authenticate with ``Authorization: Bearer <token>`` (``benefits-ledger user token``); an agency
coordinator's token sees only that agency's items, an auditor's reads everything and changes nothing."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from typing import Any, Literal

import msgspec
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from processor.entrypoints.web import actions, views
from processor.entrypoints.web.app import NotAllowed, parse_known_at, parse_through, require_user
from processor.entrypoints.web.auth import User
from processor.entrypoints.web.context import WebContext
from processor.rules.workflow import agency_of
from projections.model import QUEUE_SORTS, UNASSIGNED, DiscrepancyRow, QueueQuery

router = APIRouter(prefix="/api", tags=["ledger"])


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


class Discrepancy(BaseModel):
    discrepancy_id: str
    kind: str
    account_id: str
    agency_id: str | None
    coverage_month: date | None
    payer_id: str | None
    expected_cents: int
    actual_cents: int
    cause_event_ids: list[str]
    explanation: str
    action: str
    actor: str = Field(description="who must act")
    status: str = Field(description="open, resolved, superseded, waived, written_off or closed")
    opened_by: str
    resolved_by: str | None
    opened_recorded_at: datetime | None
    resolved_recorded_at: datetime | None
    assignee: str | None
    work_status: str = Field(description="open, waiting_agency or waiting_member (or how a person closed it)")
    notes: int
    last_user: str | None
    last_reason: str | None
    pending_action: str | None = Field(description="waive or write_off, waiting for a supervisor's approval")
    pending_cents: int | None
    pending_by: str | None
    pending_event_id: str | None

    @staticmethod
    def of(row: DiscrepancyRow) -> Discrepancy:
        data = asdict(row)
        data["cause_event_ids"] = list(row.cause_event_ids)
        return Discrepancy.model_validate({k: v for k, v in data.items() if k in Discrepancy.model_fields})


class DiscrepancyPage(BaseModel):
    total: int
    rows: list[Discrepancy]


class Agency(BaseModel):
    agency_id: str
    accounts: int
    open_discrepancies: int
    outstanding_cents: int


class AccountSummary(BaseModel):
    account_id: str
    agency_id: str | None
    balance_cents: int
    open_discrepancies: int


class Month(BaseModel):
    coverage_month: date
    expected_cents: int | None
    employee_share_cents: int | None
    employer_share_cents: int | None
    billed_cents: int
    adjusted_cents: int
    paid_cents: int
    refunded_cents: int
    unapplied_cents: int
    balance_cents: int
    due_on: date | None
    post_tax_cents: int | None
    imputed_income_cents: int | None


class Coverage(BaseModel):
    member_id: str
    relationship: str
    coverage_line: str
    plan: str
    tier: str
    status: str
    begin_on: date
    end_on: date | None
    agency_id: str
    event_id: str


class Account(BaseModel):
    account_id: str
    agency_id: str | None
    balance_cents: int
    coverages: list[Coverage]
    months: list[Month]
    open_discrepancies: list[Discrepancy]


class HistoryItem(BaseModel):
    seq: int | None = Field(description="archive sequence (applied order); null for events the ledger emitted")
    event_id: str
    event_type: str
    effective_on: date
    occurred_at: datetime
    recorded_at: datetime | None
    emitted: bool
    event: dict[str, Any]


class DeadLetter(BaseModel):
    topic: str
    partition: int
    offset: int
    event_id: str | None
    reason: str
    field: str | None
    recorded_at: datetime


class EventState(BaseModel):
    event_id: str
    state: Literal["pending", "applied", "dead_lettered"]
    recorded_at: datetime | None = None
    reason: str | None = None
    field: str | None = None


class Action(BaseModel):
    """An action on a discrepancy by a service (as the workbench's buttons send them)."""

    action: Literal["assign", "note", "status", "waive", "write_off", "approve", "reject", "retro_approve",
                    "retro_reject", "dismiss", "reopen"]
    reason: str = ""
    note: str = ""
    assignee: str = ""
    work_status: str = ""
    amount_cents: int | None = Field(default=None, description="waive, write_off, retro_approve: the adjustment")
    request_event_id: str = Field(default="", description="approve, reject: the waiver asked for")
    key: str = Field(min_length=8, max_length=100,
                     description="your idempotency key: the same key and body is one event")


def _visible(user: User, agency: str | None) -> None:
    if not user.sees_agency(agency):
        raise HTTPException(status_code=404, detail="not among your agency's items")


@router.get("/discrepancies", response_model=DiscrepancyPage, summary="The discrepancy queue, filtered and sorted")
def list_discrepancies(
    request: Request,
    status: str | None = Query("open", description="open (default), resolved, superseded, waived, written_off,"
                               " closed, or all"),
    kind: str | None = None, agency: str | None = None, actor: str | None = None, payer: str | None = None,
    account: str | None = None, assignee: str | None = Query(None, description="a login, or 'nobody'"),
    work_status: str | None = None, pending: bool | None = None,
    sort: Literal["age", "amount", "agency", "kind", "actor", "assignee", "account"] = "age", desc: bool = False,
    limit: int = Query(200, ge=1, le=10_000), offset: int = Query(0, ge=0),
    known_at: str | None = Query(None, description="recorded time R: the queue as it stood then (replay)"),
) -> DiscrepancyPage:
    user = require_user(request)
    ctx = _ctx(request)
    assert sort in QUEUE_SORTS
    query = QueueQuery(
        status=None if status == "all" else status, kind=kind, account_id=account, payer_id=payer, actor=actor,
        agency_id=user.agency_id if user.is_coordinator else agency,
        assignee=UNASSIGNED if assignee == "nobody" else assignee, work_status=work_status, pending=pending,
        sort=sort, descending=desc, limit=limit, offset=offset,
    )
    r = parse_known_at(ctx, known_at)
    if r is not None:
        page = views.queue_as_of(ctx, query, r)
    else:
        with ctx.stores.lend() as store:
            page = store.discrepancy_queue(query)
    return DiscrepancyPage(total=page.total, rows=[Discrepancy.of(d) for d in page.rows])


@router.get("/discrepancies/{discrepancy_id}", response_model=Discrepancy, summary="One discrepancy")
def get_discrepancy(request: Request, discrepancy_id: str) -> Discrepancy:
    user = require_user(request)
    with _ctx(request).stores.lend() as store:
        row = store.discrepancy(discrepancy_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no discrepancy {discrepancy_id}")
    _visible(user, row.agency_id)
    return Discrepancy.of(row)


@router.post("/discrepancies/{discrepancy_id}/actions", response_model=EventState, status_code=202,
             summary="Act on a discrepancy (the event is pending until the ledger applies it)")
def post_action(request: Request, discrepancy_id: str, body: Action) -> EventState:
    user = require_user(request)
    ctx = _ctx(request)
    if not (user.is_staff or (user.is_coordinator and body.action in ("note", "status"))):
        raise NotAllowed(f"a {user.role_name} may not {body.action.replace('_', ' ')} a discrepancy")
    with ctx.stores.lend() as store:
        row = store.discrepancy(discrepancy_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no discrepancy {discrepancy_id}")
    _visible(user, row.agency_id)
    nonce = f"api:{user.login}:{body.key}"
    existing = ctx.users.submission(nonce)  # the key was used: the same event again, as first sent
    issued = datetime.fromisoformat(msgspec.json.decode(existing.body)["occurred_at"]) if existing else ctx.clock()
    token = actions.FormToken(nonce=nonce, form=f"{body.action}:{discrepancy_id}", login=user.login, issued_at=issued)
    form = {k: str(v) for k, v in body.model_dump().items() if v is not None}
    try:
        event = actions.action_event(ctx, user, body.action, row, form, token)
        submission = actions.publish_checked(ctx, user, token, event)
    except actions.FormError as exc:
        raise HTTPException(status_code=422, detail={"field": exc.field, "reason": exc.message}) from exc
    return EventState(event_id=submission.event_id, state="pending")


@router.get("/events/{event_id}", response_model=EventState, summary="What became of an event")
def get_event(request: Request, event_id: str) -> EventState:
    require_user(request)
    with _ctx(request).stores.lend() as store:
        status = store.event_status([event_id]).get(event_id)
    if status is None:
        return EventState(event_id=event_id, state="pending")
    return EventState(event_id=event_id, state=status.state,  # type: ignore[arg-type]
                      recorded_at=status.recorded_at, reason=status.reason, field=status.field)


@router.get("/agencies", response_model=list[Agency], summary="Agencies with their open items and balances")
def list_agencies(request: Request) -> list[Agency]:
    user = require_user(request)
    with _ctx(request).stores.lend() as store:
        rows = store.agencies()
    return [Agency(**asdict(a)) for a in rows if user.sees_agency(a.agency_id)]


@router.get("/accounts", response_model=list[AccountSummary], summary="Accounts by id prefix and agency")
def list_accounts(request: Request, prefix: str = "", agency: str | None = None,
                  limit: int = Query(200, ge=1, le=10_000)) -> list[AccountSummary]:
    user = require_user(request)
    with _ctx(request).stores.lend() as store:
        rows = store.accounts(prefix=prefix, agency_id=user.agency_id if user.is_coordinator else agency,
                              limit=limit)
    return [AccountSummary(**asdict(a)) for a in rows]


@router.get("/accounts/{account_id}", response_model=Account, summary="An account's coverage, months, balance")
def get_account(request: Request, account_id: str) -> Account:
    user = require_user(request)
    ctx = _ctx(request)
    state, _part = ctx.state(account_id)
    with ctx.stores.lend() as store:
        balance = store.balance(account_id)
    if state is None or balance is None:
        raise HTTPException(status_code=404, detail=f"account {account_id} is not in the ledger")
    agency = agency_of(state, None)
    _visible(user, agency)
    return Account(account_id=account_id, agency_id=agency, balance_cents=balance.balance_cents,
                   coverages=[Coverage(**msgspec.structs.asdict(c)) for c in balance.coverages],
                   months=[Month(**{k: v for k, v in msgspec.structs.asdict(m).items() if k in Month.model_fields})
                           for m in balance.months],
                   open_discrepancies=[Discrepancy.of(d) for d in balance.open_discrepancies])


@router.get("/accounts/{account_id}/history", response_model=list[HistoryItem],
            summary="Every event of the account in applied order, with the discrepancy events it caused")
def get_history(request: Request, account_id: str, limit: int = Query(10_000, ge=1, le=10_000)) -> list[HistoryItem]:
    user = require_user(request)
    ctx = _ctx(request)
    state, _part = ctx.state(account_id)
    if state is None:
        raise HTTPException(status_code=404, detail=f"account {account_id} is not in the ledger")
    _visible(user, agency_of(state, None))
    with ctx.stores.lend() as store:
        entries = store.account_history(account_id, limit=limit)
    return [HistoryItem(seq=e.seq, event_id=e.event_id, event_type=e.event_type, effective_on=e.effective_on,
                        occurred_at=e.occurred_at, recorded_at=e.recorded_at, emitted=e.emitted,
                        event=msgspec.json.decode(e.body)) for e in entries]


@router.get("/statements", summary="Statements, open discrepancies and aging as the books stood at (E, R)")
def statements(
    request: Request, known_at: str | None = Query(None, description="recorded time R (default now)"),
    through: str | None = Query(None, description="last coverage month E (YYYY-MM or a date)"),
    account: str | None = None, payer: str | None = None,
) -> dict[str, Any]:
    user = require_user(request)
    ctx = _ctx(request)
    if user.is_coordinator:
        if account is not None:
            raise NotAllowed("an agency coordinator asks for their agency's statement (payer)")
        if payer not in (None, user.agency_id):
            raise NotAllowed("an agency coordinator sees only their agency's statement")
        payer = user.agency_id
    from replay.fold import replay
    from replay.render import report_json
    from replay.statements import build_report

    r = parse_known_at(ctx, known_at) or ctx.clock()
    e = parse_through(through)
    res = replay(ctx.read_archive(r, account), ctx.plan)
    if account is not None and account not in res.accounts:
        raise HTTPException(status_code=404, detail=f"account {account} is not in the archive as known at {r}")
    report = build_report(res, ctx.plan, known_at=r, through=e, known_at_input=known_at, through_input=through,
                          account_id=account, payer_id=payer)
    out: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(report_json(report)))
    return out


@router.get("/dead-letters", response_model=list[DeadLetter], summary="Records the ledger could not apply")
def list_dead_letters(request: Request, limit: int = Query(1000, ge=1, le=100_000)) -> list[DeadLetter]:
    user = require_user(request)
    if user.is_coordinator:
        raise NotAllowed("dead letters are for the accounts staff, auditors and services")
    with _ctx(request).stores.lend() as store:
        rows = store.dead_letters(limit=limit)
    return [DeadLetter(topic=d.topic, partition=d.partition, offset=d.offset, event_id=d.event_id, reason=d.reason,
                       field=d.field, recorded_at=d.recorded_at) for d in rows]
