"""Notices: a notice issued to an agency coordinator or a member is recorded on the account it
concerns. It changes no amount and settles nothing: the discrepancies it names stay as they are until
an event closes the gap. Pure."""

from __future__ import annotations

from events.types import NoticeIssued
from processor.rules.base import Outcome, Rejected
from processor.rules.remittances import remittance_account
from processor.settings import PlanSettings
from processor.state import AccountState, NoticeRecord, PartitionState


def notice_account(e: NoticeIssued) -> str:
    """The account a notice belongs on: the agency's payer account, or the member's own."""
    return remittance_account(e.recipient_id) if e.recipient == "agency_coordinator" else e.recipient_id


def on_notice(account: AccountState, part: PartitionState, e: NoticeIssued, plan: PlanSettings) -> Outcome:
    """Record the notice; a notice id is issued once, on the account of its recipient."""
    if e.account_id != notice_account(e):
        raise Rejected(f"a notice to {e.recipient} {e.recipient_id} belongs on account {notice_account(e)},"
                       f" not {e.account_id}", field="account_id")
    if any(n.notice_id == e.notice_id for n in account.notices):
        raise Rejected(f"notice {e.notice_id} was already issued under another event id", field="notice_id")
    account.notices.append(NoticeRecord(
        notice_id=e.notice_id, event_id=e.event_id, recipient=e.recipient, recipient_id=e.recipient_id,
        discrepancy_ids=e.discrepancy_ids, issued_on=e.effective_on, channel=e.channel,
    ))
    return Outcome()
