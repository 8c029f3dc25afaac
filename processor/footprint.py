"""How much memory an account's fold state takes, estimated cheaply, so the cache can be bounded by bytes.

Exact sizes (tracemalloc) cost far too much per account; the encoded snapshot's length is a poor guide
(in-memory objects are 2 to 4 times larger, depending on what they hold). The estimate counts what an
account holds, each kind at its measured cost: fitted with tracemalloc on the demo program's accounts
(12 months, CPython 3.11: mostly within 10% of the real size), then raised by 10% so it errs on the large side.
tests/faults/test_memory_bounds.py checks it against tracemalloc.
"""

from __future__ import annotations

from processor.state import AccountState

ACCOUNT_BYTES = 700  # the AccountState and its empty containers
MONTH_BYTES = 1020  # a MonthState and its dict entry
LINE_BYTES = 340  # a bill, adjustment, payment, refund or retroactive line
COVERAGE_BYTES = 750  # a coverage segment
OPEN_DISCREPANCY_BYTES = 1250  # an open discrepancy
ID_ENTRY_BYTES = 280  # an entry of the payment, bill, refund or application id indexes
FSA_ENTRY_BYTES = 320  # an FSA plan year, claim or contribution id
REMITTANCE_BYTES = 900  # a payer's remittance book (its advice lines counted as ID entries)
# Rare in the demo, so not fitted: sized from their fields and rounded up.
RECORD_BYTES = 1250  # a closed discrepancy, a notice issued, an enrollment waiting for its coverage
MARGIN = 1.1


def account_bytes(account: AccountState) -> int:
    """Estimated bytes of ``account`` in memory (rounded up by MARGIN)."""
    lines = 0
    for month in account.months.values():
        lines += len(month.bills) + len(month.adjustments) + len(month.payments) + len(month.refunds) + len(month.retro)
    fsa = account.fsa
    built = account.__dict__  # the id lookups, once the fold built them (AccountState.payment_months)
    fsa_entries = 0 if fsa is None else len(fsa.years) + len(fsa.claims) + len(fsa.contribution_ids) + len(
        fsa.election_ids)
    estimate = (
        ACCOUNT_BYTES + MONTH_BYTES * len(account.months) + LINE_BYTES * lines
        + COVERAGE_BYTES * len(account.coverages) + OPEN_DISCREPANCY_BYTES * len(account.open)
        + ID_ENTRY_BYTES * (len(built.get("_payment_months") or ()) + len(built.get("_bill_months") or ())
                            + len(account.refund_ids) + len(account.application_ids))
        + FSA_ENTRY_BYTES * fsa_entries
        + REMITTANCE_BYTES * len(account.remittances)
        + ID_ENTRY_BYTES * sum(len(r.advice_lines) for r in account.remittances.values())
        + RECORD_BYTES * (len(account.closed) + len(account.notices) + len(account.pending_enrollments))
    )
    return int(estimate * MARGIN)
