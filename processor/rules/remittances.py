"""Remittances: a payer's remittance reconciled against the lines the ledger actually posted, and
remittance advice matched against the payment that moves its money. Pure.

- Each remittance line applied on a member's account is reported to the payer's account by an event
  the ledger posts itself (``remittance_line_posted``, through the outbox). The remittance is judged
  when all its lines have been posted, or on the first business day after its payment date: its total
  (BPR02) against the lines posted plus its remittance-level adjustments. A line that never arrives is
  therefore a ``remittance_total_mismatch``, and cash beyond the posted lines is unapplied cash on the
  payer's account: cash is never dropped.
- Advice only (BPR01 I or U, BPR04 NON): its lines post no cash (``advised``). The payment that moves
  the money arrives on the payer's account with the remittance's trace number; once it covers the
  posted lines it funds them (``remittance_funded`` to each member's account, where the lines are paid)
  and what it brings beyond them is unapplied cash. Advice still unfunded on the first business day
  after its payment date is a ``remittance_total_mismatch`` (expected the lines, actual the money).
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

from events.money import format_cents as cents
from events.types import (
    DayClosed,
    InputEvent,
    PaymentReceived,
    RemittanceFunded,
    RemittanceLinePosted,
    RemittanceReceived,
)
from processor.rules import payments
from processor.rules.base import LEDGER_SOURCE, Finding, Outcome, Rejected
from processor.rules.lifecycle import settle
from processor.settings import PlanSettings
from processor.state import (
    PAYMENT_ADVISED,
    PAYMENT_APPLIED,
    PAYMENT_FUNDS,
    UNAPPLIED_STATUSES,
    AccountState,
    AdviceLine,
    PartitionState,
    RemittanceBook,
    book_row,
    month_of_key,
    waiting,
)

PAYER_PREFIX = "payer:"


def remittance_account(payer_id: str) -> str:
    """The account a payer's remittances live on."""
    return f"{PAYER_PREFIX}{payer_id}"


def _key(remittance_id: str) -> str:
    return f"remittance_total_mismatch|remittance:{remittance_id}"


def _book(account: AccountState, remittance_id: str, payer_id: str) -> RemittanceBook:
    book = account.remittances.get(remittance_id)
    if book is None:
        book = account.remittances[remittance_id] = RemittanceBook(remittance_id=remittance_id, payer_id=payer_id)
    return book


# ---------------------------------------------------------------------------------------------
# Handlers


def on_payment_received(account: AccountState, part: PartitionState, e: PaymentReceived,
                        plan: PlanSettings) -> Outcome:
    """A payment line posts on its month; a remittance line is reported to its payer's account; money
    on a payer's account with the trace of an advice funds it."""
    out = payments.on_payment(account, part, e, plan)
    if e.remittance_id is not None and e.source != LEDGER_SOURCE and not account.account_id.startswith(PAYER_PREFIX):
        out.derived.append(RemittanceLinePosted(
            event_id=f"{e.event_id}:posted", account_id=remittance_account(e.payer_id), effective_on=e.effective_on,
            occurred_at=e.occurred_at, source=LEDGER_SOURCE, causation_id=e.event_id,
            remittance_id=e.remittance_id, trace_number=e.trace_number, payer_id=e.payer_id,
            line_account_id=account.account_id, payment_id=e.payment_id, coverage_month=e.coverage_month,
            amount_cents=e.amount_cents, advice_only=e.advice_only,
        ))
    if account.account_id.startswith(PAYER_PREFIX) and e.trace_number is not None and not e.advice_only:
        books = account.remittances
        for rid in _in_order(account, account.waiting_books):  # an advice not funded yet is waiting
            book = books[rid]
            if book.advice_only and book.trace_number == e.trace_number and book.funded_by is None:
                _fund(account, part, book, e.payment_id, e, out)
                _judge_or_wait(account, part, book, e, plan, out)
                break
    return out


def on_remittance(account: AccountState, part: PartitionState, e: RemittanceReceived, plan: PlanSettings) -> Outcome:
    """The sender's header: what it says it paid. A later copy (a corrected remittance) replaces it."""
    if e.account_id != remittance_account(e.payer_id):
        raise Rejected(f"a remittance of payer {e.payer_id} belongs on account {remittance_account(e.payer_id)},"
                       f" not {e.account_id}", field="account_id")
    out = Outcome()
    book = _book(account, e.remittance_id, e.payer_id)
    book.header_event_id, book.trace_number = e.event_id, e.trace_number
    book.total_cents, book.declared_lines_cents, book.line_count = e.total_cents, e.lines_total_cents, e.line_count
    book.adjustments_cents = sum(a.amount_cents for a in e.adjustments)
    book.payment_date, book.advice_only = e.payment_date, e.advice_only
    out.dirty_months.add(book_row(book.remittance_id))  # the book's stored row
    account.book_changed(book.remittance_id)
    if book.advice_only and book.funded_by is None:
        held = _held_money(account, book)
        if held is not None:
            _fund(account, part, book, held, e, out)
    _judge_or_wait(account, part, book, e, plan, out)
    return out


def on_line_posted(account: AccountState, part: PartitionState, e: RemittanceLinePosted,
                   plan: PlanSettings) -> Outcome:
    if e.account_id != remittance_account(e.payer_id):
        raise Rejected(f"a remittance line of payer {e.payer_id} belongs on account"
                       f" {remittance_account(e.payer_id)}, not {e.account_id}", field="account_id")
    out = Outcome()
    book = _book(account, e.remittance_id, e.payer_id)
    book.posted_cents += e.amount_cents
    book.posted_count += 1
    out.dirty_months.add(book_row(book.remittance_id))
    if e.advice_only:
        line = AdviceLine(account_id=e.line_account_id, payment_id=e.payment_id, amount_cents=e.amount_cents)
        if book.funded_by is not None:
            out.derived.append(_funded(book, e, [line]))  # the money is here already: pay it now
        else:
            book.advice_lines.append(line)
    _judge_or_wait(account, part, book, e, plan, out)
    return out


def on_funded(account: AccountState, part: PartitionState, e: RemittanceFunded, plan: PlanSettings) -> Outcome:
    """The advice lines on this member's account are paid now: placed as cash arriving today."""
    out = Outcome()
    for payment_id in e.payment_ids:
        key, line = payments.payment_line(account, payment_id)
        if line.status != PAYMENT_ADVISED:
            continue  # reversed meanwhile: nothing to pay
        month = account.months[key]
        line.status = payments.placement(account, month, plan)
        if line.status in UNAPPLIED_STATUSES:
            out.unapplied(line.payer_id, line.amount_cents)
        out.touch(key)
    return out


def judge_due(account: AccountState, part: PartitionState, e: DayClosed, plan: PlanSettings, out: Outcome) -> None:
    """A business day past their lines' window judges the account's remittances still waiting."""
    books = account.remittances
    for rid in _in_order(account, account.waiting_books):
        book = books[rid]
        due = _due(book, plan)
        if due is not None and e.business_date > due:
            _judge(account, book, e, out)
    _index(account, part, plan, out)


def has_due(account: AccountState, business_date: date, plan: PlanSettings) -> bool:
    books = account.remittances
    return any((due := _due(books[r], plan)) is not None and business_date > due for r in account.waiting_books)


def _in_order(account: AccountState, ids: set[str]) -> list[str]:
    """``ids`` in the order the account's books arrived (the order judging them emits in)."""
    if len(ids) <= 1:
        return list(ids)
    return [r for r in account.remittances if r in ids]


def _due(book: RemittanceBook, plan: PlanSettings) -> date | None:
    """The last day a waiting remittance's lines may still come in; None when it is not waiting."""
    if not waiting(book) or book.payment_date is None:
        return None
    return book.payment_date + timedelta(days=plan.remittance_lines_days)


# ---------------------------------------------------------------------------------------------
# Judging


def _judge_or_wait(account: AccountState, part: PartitionState, book: RemittanceBook, trigger: InputEvent,
                   plan: PlanSettings, out: Outcome) -> None:
    if book.header_event_id is None:
        return  # lines before their header: nothing to compare yet
    complete = book.posted_count >= book.line_count
    if book.judged or (complete and (not book.advice_only or book.funded_by is not None)):
        _judge(account, book, trigger, out)
    _index(account, part, plan, out)


def _index(account: AccountState, part: PartitionState, plan: PlanSettings, out: Outcome) -> None:
    """Keep the partition's index of payer accounts with remittances to judge on a later day."""
    books = account.remittances
    waiting = [d for r in account.waiting_books if (d := _due(books[r], plan)) is not None]
    due = min(waiting) if waiting else None
    if part.remittances_due.get(account.account_id) != due:
        if due is None:
            del part.remittances_due[account.account_id]
        else:
            part.remittances_due[account.account_id] = due
        out.partition_changed = True


def _judge(account: AccountState, book: RemittanceBook, trigger: InputEvent, out: Outcome) -> None:
    book.judged = True
    out.dirty_months.add(book_row(book.remittance_id))
    account.book_changed(book.remittance_id)
    lines = book.posted_cents + book.adjustments_cents
    money = book.funded_cents if book.advice_only else book.total_cents
    key = _key(book.remittance_id)
    found: dict[str, Finding] = {}
    if money != lines:
        posted = f"the ledger posted {book.posted_count} of its {book.line_count} lines, {cents(book.posted_cents)}"
        if book.adjustments_cents:
            posted += f", and it carries {cents(book.adjustments_cents)} of adjustments"
        said = (f" (the file says its lines sum to {cents(book.declared_lines_cents)})"
                if book.declared_lines_cents != book.posted_cents else "")
        if book.advice_only:
            what = (f"remittance advice {book.remittance_id} (trace {book.trace_number}) from {book.payer_id} says"
                    f" {cents(book.total_cents)} moves separately; "
                    + (f"the payment {book.funded_by} brought {cents(money)}" if book.funded_by
                       else "no payment with its trace has arrived"))
        else:
            what = (f"remittance {book.remittance_id} (trace {book.trace_number}) from {book.payer_id} pays"
                    f" {cents(money)}")
        gap = money - lines
        found[key] = Finding(
            kind="remittance_total_mismatch", key=key, month=None, payer_id=book.payer_id, expected_cents=lines,
            actual_cents=money, cause_event_ids=tuple(x for x in (book.header_event_id, book.funded_by) if x),
            explanation=f"{what}; {posted}{said}; {cents(abs(gap))} {'more' if gap > 0 else 'less'} than the lines",
            action=("send the payment that moves the money, or correct the advice" if book.advice_only
                    and book.funded_by is None else
                    "correct the remittance: the payment total must equal the sum of its lines; send the missing"
                    " lines or apply the excess"),
            actor="payroll",
        )
    excess = max(0, money - lines) if (not book.advice_only or book.funded_by is not None) else 0
    if excess != book.excess_cents:
        out.unapplied(book.payer_id, excess - book.excess_cents)  # cash beyond the lines: never dropped
        book.excess_cents = excess
    settle(account, trigger, out, found, lambda dkey: dkey == key, row=month_of_key(key))


# ---------------------------------------------------------------------------------------------
# Funding advice


def _held_money(account: AccountState, book: RemittanceBook) -> str | None:
    """A payment already held on the payer's account with the advice's trace."""
    for month in account.months.values():
        for p in month.payments:
            if p.trace_number == book.trace_number and p.status in UNAPPLIED_STATUSES:
                return p.payment_id
    return None


def _fund(account: AccountState, part: PartitionState, book: RemittanceBook, payment_id: str,
          trigger: InputEvent, out: Outcome) -> None:
    """The money moves: the payment is the advice's (not unmatched cash) and pays its posted lines."""
    key, line = payments.payment_line(account, payment_id)
    if line.status in UNAPPLIED_STATUSES:
        out.unapplied(line.payer_id, -line.amount_cents)
    elif line.status == PAYMENT_APPLIED:
        return  # already applied to a bill of the payer's account: not the advice's money
    line.status = PAYMENT_FUNDS
    line.moved_to = f"remittance:{book.remittance_id}"
    book.funded_by, book.funded_cents = payment_id, line.amount_cents
    out.dirty_months.add(book_row(book.remittance_id))
    account.book_changed(book.remittance_id)
    if book.advice_lines:
        out.derived.extend(_funded_by_account(book, trigger))
        book.advice_lines = []
    out.touch(key)


def _funded(book: RemittanceBook, trigger: InputEvent, lines: list[AdviceLine]) -> RemittanceFunded:
    account_id = lines[0].account_id
    which = hashlib.sha256(f"{book.remittance_id}\x1f{account_id}".encode()).hexdigest()[:16]
    return RemittanceFunded(
        event_id=f"{trigger.event_id}:funds:{which}", account_id=account_id,
        effective_on=trigger.effective_on, occurred_at=trigger.occurred_at, source=LEDGER_SOURCE,
        causation_id=trigger.event_id, remittance_id=book.remittance_id, trace_number=book.trace_number or "",
        payment_ids=tuple(x.payment_id for x in lines), funding_payment_id=book.funded_by or "",
    )


def _funded_by_account(book: RemittanceBook, trigger: InputEvent) -> list[RemittanceFunded]:
    by_account: dict[str, list[AdviceLine]] = {}
    for line in book.advice_lines:
        by_account.setdefault(line.account_id, []).append(line)
    return [_funded(book, trigger, lines) for lines in by_account.values()]
