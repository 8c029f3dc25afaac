"""The workbench's pages: log in, the work queue, a discrepancy and its actions, an account as of any
(E, R), the entry forms, what became of a submitted event, dead letters."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import msgspec
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from events.types import DISCREPANCY_KINDS
from processor.entrypoints.web import actions, views
from processor.entrypoints.web.app import (
    NotAllowed,
    local,
    parse_known_at,
    parse_through,
    render,
    require_user,
    user_of,
)
from processor.entrypoints.web.auth import User
from processor.entrypoints.web.context import WebContext
from processor.rules.workflow import agency_of
from projections.model import QUEUE_SORTS, UNASSIGNED, DiscrepancyRow, QueueQuery

router = APIRouter()
ACTORS = ("agency_coordinator", "payroll", "member", "billing", "accounts_staff")
WORK_STATUSES = ("open", "waiting_agency", "waiting_member")
QUEUE_PAGE_ROWS = 50


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


async def _form(request: Request) -> dict[str, str]:
    data = await request.form()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _flash(request: Request, message: str) -> None:
    request.session["flash"] = message


def _safe_next(target: str | None) -> str:
    """Only a path of this site (browsers read a backslash as a slash: "/\\x" would leave it)."""
    ok = target and target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if ok and target else "/queue"


# ---------------------------------------------------------------------------------------------
# log in and out


@router.get("/", include_in_schema=False)
def home(request: Request) -> Response:
    return RedirectResponse("/queue", status_code=303)


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str = "/queue") -> HTMLResponse:
    return render(request, "login.html", next=_safe_next(next), error=None, login="")


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    ctx = _ctx(request)
    form = await _form(request)
    login_name, password = form.get("login", "").strip().lower()[:100], form.get("password", "")
    target = _safe_next(form.get("next"))
    remote = request.client.host if request.client else "unknown"
    now = ctx.clock()
    web = ctx.settings.web
    since = now - timedelta(seconds=web.login_window_s)
    by_login, by_remote = ctx.users.failures_since(login_name, remote, since)
    if by_login >= web.login_failures_max or by_remote >= web.login_remote_failures_max:
        minutes = max(1, web.login_window_s // 60)
        return render(request, "login.html", status_code=429, next=target, login=login_name,
                      error=f"too many failed logins: try again in {minutes} minutes")
    user = ctx.users.authenticate(login_name, password)
    if user is None:
        ctx.users.record_failure(login_name, remote, now, since)
        return render(request, "login.html", status_code=401, next=target, login=login_name,
                      error="wrong login or password")
    ctx.users.clear_failures(login_name)
    request.session.clear()
    request.session["login"] = user.login
    return RedirectResponse(target, status_code=303)


@router.post("/logout", include_in_schema=False)
def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# ---------------------------------------------------------------------------------------------
# the queue


def queue_query(user: User, params: dict[str, str], page: int) -> QueueQuery:
    """The queue's filters from the page's query string; a coordinator's are held to their agency."""
    state = params.get("state", "open")
    sort = params.get("sort", "age")
    if sort not in QUEUE_SORTS:
        raise HTTPException(status_code=400, detail=f"sort by one of {', '.join(QUEUE_SORTS)}")
    assignee = params.get("assignee", "") or None
    if assignee == "me":
        assignee = user.login
    elif assignee == "nobody":
        assignee = UNASSIGNED
    status: str | None = "open"
    work_status = pending = None
    if state in WORK_STATUSES:
        work_status = state
    elif state == "pending":
        pending = True
    elif state == "all":
        status = None
    elif state in ("resolved", "superseded", "waived", "written_off", "closed"):
        status = state
    elif state != "open":
        raise HTTPException(status_code=400, detail=f"unknown state {state!r}")
    kind = params.get("kind") or None
    if kind is not None and kind not in DISCREPANCY_KINDS:
        raise HTTPException(status_code=400, detail=f"unknown kind {kind!r}")
    return QueueQuery(
        status=status, kind=kind, agency_id=user.agency_id if user.is_coordinator else params.get("agency") or None,
        actor=params.get("actor") or None, assignee=assignee, work_status=work_status, pending=pending,
        account_id=params.get("account") or None, payer_id=params.get("payer") or None, sort=sort,
        descending=params.get("desc") == "1", limit=QUEUE_PAGE_ROWS, offset=max(0, page - 1) * QUEUE_PAGE_ROWS,
    )


@router.get("/queue", include_in_schema=False)
def queue(request: Request, page: int = 1) -> HTMLResponse:
    user = require_user(request)
    ctx = _ctx(request)
    params = dict(request.query_params)
    query = queue_query(user, params, page)
    known_at = parse_known_at(ctx, params.get("known_at"))
    if known_at is not None:
        result = views.queue_as_of(ctx, query, known_at)
    else:
        with ctx.stores.lend() as store:
            result = store.discrepancy_queue(query)
    with ctx.stores.lend() as store:
        agencies = [a.agency_id for a in store.agencies()] if not user.is_coordinator else [user.agency_id]
    template = "_queue_rows.html" if request.headers.get("hx-request") and params.get("rows") else "queue.html"
    return render(request, template, rows=result.rows, total=result.total, params=params, page=page,
                  pages=max(1, -(-result.total // QUEUE_PAGE_ROWS)), kinds=DISCREPANCY_KINDS, actors=ACTORS,
                  agencies=agencies, users=[] if user.is_coordinator else ctx.users.users(),
                  sorts=QUEUE_SORTS, known_at=local(ctx, known_at),
                  page_rows=QUEUE_PAGE_ROWS,
                  base_query=urlencode({k: v for k, v in params.items() if k not in ("page", "rows")}))


# ---------------------------------------------------------------------------------------------
# one discrepancy


def _visible(user: User, row: DiscrepancyRow) -> None:
    if not user.sees_agency(row.agency_id):
        raise HTTPException(status_code=404, detail="no such discrepancy among your agency's items")


def _discrepancy_page(request: Request, user: User, discrepancy_id: str, *, error: str | None = None,
                      error_field: str | None = None, error_action: str | None = None, status: int = 200,
                      known_at_text: str | None = None) -> HTMLResponse:
    ctx = _ctx(request)
    known_at = parse_known_at(ctx, known_at_text)
    with ctx.stores.lend() as store:
        row = store.discrepancy(discrepancy_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no discrepancy {discrepancy_id}")
    _visible(user, row)
    if known_at is not None:
        as_of = next((r for r in views.replayed_rows(views.replay_account(ctx, row.account_id, known_at))
                      if r.discrepancy_id == discrepancy_id), None)
        if as_of is None:
            raise HTTPException(status_code=404, detail=f"discrepancy {discrepancy_id} was not opened by"
                                f" {known_at.isoformat()}")
        row = as_of
    account, part = ctx.state(row.account_id)
    open_d = views.open_discrepancy(account, discrepancy_id)
    entries = [e for e in views.history(ctx, row.account_id, known_at) if e.discrepancy_id == discrepancy_id
               or e.entry.event_id in row.cause_event_ids]
    submissions = ctx.users.submissions(discrepancy_id=discrepancy_id, limit=20)
    with ctx.stores.lend() as store:
        states = store.event_status([s.event_id for s in submissions])
    pending = [s for s in submissions if s.event_id not in states]
    tokens = {a: actions.form_token(ctx, user, f"{a}:{discrepancy_id}") for a in actions.ACTIONS}
    rule, source = views.rule_of(row.kind, ctx.plan)
    return render(
        request, "discrepancy.html", status_code=status, d=row, rule=rule, rule_source=source, history=entries,
        proposal=views.proposal(ctx, account, part, open_d) if known_at is None else None,
        retro_approval=views.retro_needs_approval(account, open_d), pending=pending, tokens=tokens,
        users=ctx.users.users(), error=error, error_field=error_field, error_action=error_action,
        known_at=local(ctx, known_at), live=known_at is None, closed_by_people=views.CLOSED_BY_PEOPLE,
        work_statuses=WORK_STATUSES,
    )


@router.get("/discrepancies/{discrepancy_id}", include_in_schema=False)
def discrepancy(request: Request, discrepancy_id: str, known_at: str | None = None) -> HTMLResponse:
    return _discrepancy_page(request, require_user(request), discrepancy_id, known_at_text=known_at)


COORDINATOR_ACTIONS = ("note", "status")


@router.post("/discrepancies/{discrepancy_id}/{action}", include_in_schema=False)
async def act(request: Request, discrepancy_id: str, action: str) -> Response:
    user = require_user(request)
    ctx = _ctx(request)
    if action not in actions.ACTIONS:
        raise HTTPException(status_code=404, detail=f"no action {action}")
    if not (user.is_staff or (user.is_coordinator and action in COORDINATOR_ACTIONS)):
        raise NotAllowed(f"a {user.role_name} may not {action.replace('_', ' ')} a discrepancy")
    if action in ("approve", "reject", "retro_approve", "retro_reject") and not user.is_supervisor:
        raise NotAllowed("only a supervisor approves or rejects")
    with ctx.stores.lend() as store:
        row = store.discrepancy(discrepancy_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no discrepancy {discrepancy_id}")
    _visible(user, row)
    form = await _form(request)
    try:
        token = actions.read_token(ctx, user, f"{action}:{discrepancy_id}", form.get("form_token", ""))
        event = actions.action_event(ctx, user, action, row, form, token)
        submission = actions.publish_checked(ctx, user, token, event)
    except actions.FormError as exc:
        return _discrepancy_page(request, user, discrepancy_id, error=exc.message, error_field=exc.field,
                                 error_action=action, status=400)
    if action == "reopen":
        return RedirectResponse(f"/events/{submission.event_id}", status_code=303)
    _flash(request, f"{action.replace('_', ' ')} sent as event {submission.event_id}: pending until the ledger"
                    " applies it")
    return RedirectResponse(f"/discrepancies/{discrepancy_id}", status_code=303)


# ---------------------------------------------------------------------------------------------
# accounts


@router.get("/accounts", include_in_schema=False)
def accounts(request: Request, q: str = "") -> Response:
    user = require_user(request)
    ctx = _ctx(request)
    q = q.strip()[:100]
    with ctx.stores.lend() as store:
        if q and store.balance(q) is not None:
            return RedirectResponse(f"/accounts/{q}", status_code=303)
        rows = store.accounts(prefix=q, agency_id=user.agency_id if user.is_coordinator else None, limit=100)
    return render(request, "accounts.html", rows=rows, q=q)


@router.get("/accounts/{account_id}", include_in_schema=False)
def account(request: Request, account_id: str, known_at: str | None = None, through: str | None = None
            ) -> HTMLResponse:
    user = require_user(request)
    ctx = _ctx(request)
    r = parse_known_at(ctx, known_at)
    e = parse_through(through)
    if r is not None:
        res = views.replay_account(ctx, account_id, r)
        state = res.accounts.get(account_id)
        part = next(iter(res.partitions.values()), None) if state is None else res.partitions.get(state.partition)
        rows = [d for d in views.replayed_rows(res) if d.account_id == account_id]
    else:
        state, part = ctx.state(account_id)
        with ctx.stores.lend() as store:
            page = store.discrepancy_queue(QueueQuery(status=None, account_id=account_id, sort="account",
                                                      limit=1000))
        rows = page.rows
    if state is None:
        raise HTTPException(status_code=404, detail=f"account {account_id} is not in the ledger"
                            + (f" as known at {r.isoformat()}" if r else ""))
    if not user.sees_agency(agency_of(state, None)):
        raise HTTPException(status_code=404, detail="no such account among your agency's")
    from processor.state import PartitionState

    view = views.account_view(ctx, state, part or PartitionState(partition=state.partition), rows,
                              views.history(ctx, account_id, r), known_at=r, through=e)
    submissions = ctx.users.submissions(account_id=account_id, limit=20) if r is None else []
    with ctx.stores.lend() as store:
        states = store.event_status([s.event_id for s in submissions])
    return render(request, "account.html", a=view, known_at=local(ctx, r), through=e, known_at_text=known_at or "",
                  through_text=through or "", pending=[s for s in submissions if s.event_id not in states],
                  live=r is None)


# ---------------------------------------------------------------------------------------------
# entry forms


def _staff(user: User) -> None:
    if not user.is_staff:
        raise NotAllowed(f"a {user.role_name} does not enter events; a specialist or supervisor does")


@router.get("/entries/{form_name}", include_in_schema=False)
def entry_form(request: Request, form_name: str) -> HTMLResponse:
    user = require_user(request)
    _staff(user)
    ctx = _ctx(request)
    if form_name not in actions.ENTRY_FORMS:
        raise HTTPException(status_code=404, detail=f"no form {form_name}")
    return render(request, "entry.html", form_name=form_name, title=actions.ENTRY_FORMS[form_name][0],
                  values=dict(request.query_params), token=actions.form_token(ctx, user, f"entry:{form_name}"),
                  error=None, error_field=None)


@router.post("/entries/{form_name}", include_in_schema=False)
async def entry_submit(request: Request, form_name: str) -> Response:
    user = require_user(request)
    _staff(user)
    ctx = _ctx(request)
    if form_name not in actions.ENTRY_FORMS:
        raise HTTPException(status_code=404, detail=f"no form {form_name}")
    form = await _form(request)
    try:
        token = actions.read_token(ctx, user, f"entry:{form_name}", form.get("form_token", ""))
        event = actions.entry_event(ctx, user, form_name, form, token)
        submission = actions.publish_checked(ctx, user, token, event)
    except actions.FormError as exc:
        return render(request, "entry.html", status_code=400, form_name=form_name,
                      title=actions.ENTRY_FORMS[form_name][0], values=form, token=form.get("form_token", ""),
                      error=exc.message, error_field=exc.field)
    return RedirectResponse(f"/events/{submission.event_id}", status_code=303)


# ---------------------------------------------------------------------------------------------
# what became of an event, dead letters


def _event_state(request: Request, user: User, event_id: str) -> dict[str, Any]:
    ctx = _ctx(request)
    found = ctx.users.submissions(event_id=event_id, limit=1)
    submission = found[0] if found else None
    if submission is not None and user.is_coordinator and submission.login != user.login:
        raise HTTPException(status_code=404, detail=f"no event {event_id} of yours")
    with ctx.stores.lend() as store:
        status = store.event_status([event_id]).get(event_id)
    if submission is None and status is None:
        raise HTTPException(status_code=404, detail=f"no event {event_id}")
    caused: list[views.HistoryView] = []
    applied = None
    account_id = submission.account_id if submission else status.account_id if status else None
    if status is not None and status.state == "applied" and account_id is not None:
        for entry in views.history(ctx, account_id):
            if entry.entry.event_id == event_id:
                applied = entry
            elif entry.data.get("causation_id") == event_id:
                caused.append(entry)
    fields = views.event_details(msgspec.json.decode(submission.body), envelope=True) if submission else []
    return {"event_id": event_id, "submission": submission, "status": status, "caused": caused,
            "applied": applied, "event_fields": fields, "account_id": account_id}


@router.get("/events/{event_id}", include_in_schema=False)
def event_page(request: Request, event_id: str) -> HTMLResponse:
    user = require_user(request)
    return render(request, "event.html", **_event_state(request, user, event_id))


@router.get("/events/{event_id}/status", include_in_schema=False)
def event_status(request: Request, event_id: str, was: str = "pending") -> Response:
    """The htmx poll: while the event is pending, a badge; once the ledger applied (or refused) it, the page
    that asked reloads."""
    user = require_user(request)
    state = _event_state(request, user, event_id)
    now = state["status"].state if state["status"] else "pending"
    if now != was:
        return Response(status_code=200, headers={"HX-Refresh": "true"})
    return render(request, "_event_status.html", **state)


@router.get("/dead-letters", include_in_schema=False)
def dead_letters(request: Request) -> HTMLResponse:
    user = require_user(request)
    if user.is_coordinator:
        raise NotAllowed("dead letters are for the accounts staff and auditors")
    ctx = _ctx(request)
    with ctx.stores.lend() as store:
        rows = store.dead_letters(limit=500)
    return render(request, "dead_letters.html", rows=rows, user_of=user_of)
