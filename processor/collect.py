"""The one collector: what a fold outcome means for the store (rows, outbox events, payer cash).

The batch processor, replay, rebuild and the tests collect every ``fold_event`` result through
``Collector.add`` into a ``BatchWrite``; nothing else turns outcomes into rows.
"""

from __future__ import annotations

from datetime import datetime

from events import codec
from events.types import (
    DiscrepancyAmountChanged,
    DiscrepancyClosed,
    DiscrepancyOpened,
    DiscrepancySuperseded,
    FsaClaimAdjudicated,
    OutputEvent,
)
from processor.rules.base import Outcome
from processor.state import AccountState
from projections.model import (
    CLAIMS_STREAM,
    PAYMENTS_STREAM,
    BatchWrite,
    DiscrepancyClose,
    DiscrepancyRow,
    OutboxRow,
)


class Collector:
    """Collects outcomes into ``write``; ``recorded_at`` is when the ledger accepted the trigger."""

    def __init__(self, write: BatchWrite) -> None:
        self.write = write
        self.emitted: list[OutputEvent] = []
        self._opened: dict[str, DiscrepancyRow] = {}  # rows opened in this write, by id

    def add(self, account: AccountState, out: Outcome, recorded_at: datetime) -> None:
        write = self.write
        account_id = account.account_id
        write.accounts[account_id] = account
        write.dirty_months.setdefault(account_id, set()).update(out.dirty_months)
        if out.coverage_changed:
            write.coverage_changed.add(account_id)
        if out.fsa_changed:
            write.fsa_changed.add(account_id)
        for payer, delta in out.payer_unapplied_delta.items():
            write.payer_unapplied_delta[payer] = write.payer_unapplied_delta.get(payer, 0) + delta
        for payment in out.derived:  # cash applied elsewhere: the relay posts it on its payments topic
            write.outbox.append(OutboxRow(event_id=payment.event_id, key=payment.account_id,
                                          body=codec.encode(payment), stream=PAYMENTS_STREAM))
        for ev in out.emitted:
            self.emitted.append(ev)
            if isinstance(ev, FsaClaimAdjudicated):  # not a discrepancy: the relay sends it to the claims topic
                write.outbox.append(OutboxRow(event_id=ev.event_id, key=account_id, body=codec.encode(ev),
                                              stream=CLAIMS_STREAM))
                continue
            write.outbox.append(OutboxRow(event_id=ev.event_id, key=account_id, body=codec.encode(ev)))
            if isinstance(ev, DiscrepancyOpened):
                # just put in ``open``, so among the last: found from the end, not past every open finding
                opened = next(d for d in reversed(account.open.values()) if d.discrepancy_id == ev.discrepancy_id)
                row = DiscrepancyRow.from_open(account_id, opened, recorded_at)
                write.discrepancies_opened.append(row)
                self._opened[row.discrepancy_id] = row
            elif isinstance(ev, DiscrepancyAmountChanged):
                pass  # the row follows through changed_discrepancies below; the event goes to the outbox
            else:  # resolved by an event, superseded by a retroactive change, or closed by a person
                status = (ev.status if isinstance(ev, DiscrepancyClosed)
                          else "superseded" if isinstance(ev, DiscrepancySuperseded) else "resolved")
                write.discrepancies_closed.append(DiscrepancyClose(
                    discrepancy_id=ev.discrepancy_id, resolved_by=ev.causation_id or "", recorded_at=recorded_at,
                    status=status,
                ))
        for d in out.changed_discrepancies:
            fresh = self._opened.get(d.discrepancy_id)
            if fresh is None:
                write.discrepancies_changed.append(DiscrepancyRow.from_open(account_id, d, recorded_at))
            else:  # opened in this same write: the row goes in with its latest amounts and work
                fresh.follow(d)
