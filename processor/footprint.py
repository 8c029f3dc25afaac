"""How much memory an account's fold state takes, estimated cheaply, so the cache can be bounded by bytes.

Exact sizes (tracemalloc) cost far too much per account; the encoded snapshot's length is a poor guide
(in-memory objects are 2 to 4 times larger, depending on what they hold). The estimate counts what an
account holds, each kind at its measured cost: fitted with tracemalloc on the demo program's accounts
(12 months, CPython 3.11: within 10% of the real size), then raised by 10% so it errs on the large side.
tests/faults/test_memory_bounds.py checks it against tracemalloc.
"""

from __future__ import annotations

from processor.state import AccountState

ACCOUNT_BYTES = 700  # the AccountState and its empty containers
MONTH_BYTES = 800  # a MonthState and its dict entry
LINE_BYTES = 340  # a bill, adjustment, payment, refund or retroactive line
COVERAGE_BYTES = 750  # a coverage segment
OPEN_DISCREPANCY_BYTES = 1250  # an open discrepancy
ID_ENTRY_BYTES = 280  # an entry of the payment, bill, refund or application id indexes
FSA_ENTRY_BYTES = 320  # an FSA plan year, claim or contribution id
MARGIN = 1.1


def account_bytes(account: AccountState) -> int:
    """Estimated bytes of ``account`` in memory (rounded up by MARGIN)."""
    lines = 0
    for month in account.months.values():
        lines += len(month.bills) + len(month.adjustments) + len(month.payments) + len(month.refunds) + len(month.retro)
    fsa = account.fsa
    fsa_entries = 0 if fsa is None else len(fsa.years) + len(fsa.claims) + len(fsa.contribution_ids) + len(
        fsa.election_ids)
    estimate = (
        ACCOUNT_BYTES + MONTH_BYTES * len(account.months) + LINE_BYTES * lines
        + COVERAGE_BYTES * len(account.coverages) + OPEN_DISCREPANCY_BYTES * len(account.open)
        + ID_ENTRY_BYTES * (len(account.payment_months) + len(account.bill_months) + len(account.refund_ids)
                            + len(account.application_ids))
        + FSA_ENTRY_BYTES * fsa_entries
    )
    return int(estimate * MARGIN)
