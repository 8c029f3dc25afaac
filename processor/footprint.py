"""How much memory an account's fold state takes, estimated cheaply, so the cache can be bounded by bytes.

Exact sizes (tracemalloc) cost far too much per account; the encoded snapshot's length is a poor guide
(in-memory objects are 2 to 4 times larger, depending on what they hold). The estimate counts what an
account holds, each kind at its measured cost: fitted with tracemalloc on the demo program's accounts
(12 months, CPython 3.11: mostly within 10% of the real size), then raised by 10% so it errs on the large side.
tests/faults/test_memory_bounds.py checks it against tracemalloc.
"""

from __future__ import annotations

from collections.abc import Collection

from processor.state import MONTH_LINES, AccountState, MonthState
from processor.stored import STORED_HEADER

ACCOUNT_BYTES = 700  # the AccountState and its empty containers
# a MonthState and its dict entry (1020, fitted), plus its entry in the line counts kept for the estimate
MONTH_BYTES = 1060
LINE_BYTES = 340  # a bill, adjustment, payment, refund or retroactive line
COVERAGE_BYTES = 750  # a coverage segment
OPEN_DISCREPANCY_BYTES = 1250  # an open discrepancy
ID_ENTRY_BYTES = 280  # a refund or application id (a string of its own in a list)
# The payment and bill id lookups (AccountState.payment_months, bill_months), once the fold built them: their
# ids and month keys are the lines' and the months' own strings, so an entry is a dict slot. Fitted with
# tracemalloc on 0 to 400 entries: 22 to 38 bytes an entry, at least 370 bytes for the pair. (Charged at
# the 280 of an id of its own before, they made an account of 84 months seem 45% larger than it is, and the
# cache hold a third fewer such accounts than its budget allows.)
LOOKUP_BYTES = 310  # one lookup, empty
LOOKUP_ENTRY_BYTES = 40
FSA_ENTRY_BYTES = 320  # an FSA plan year, claim or contribution id
REMITTANCE_BYTES = 900  # a payer's remittance book (its advice lines counted as ID entries)
# Rare in the demo, so not fitted: sized from their fields and rounded up.
RECORD_BYTES = 1250  # a closed discrepancy, a notice issued, an enrollment waiting for its coverage
MARGIN = 1.1


def _lines(month: MonthState) -> int:
    return len(month.bills) + len(month.adjustments) + len(month.payments) + len(month.refunds) + len(month.retro)


def _month_lines(account: AccountState, changed: Collection[str] | None) -> int:
    """The lines of all the account's months. Each month's count is kept with the account, so after a
    batch only the months it changed (``changed``, its dirty months) are counted again: the estimate
    costs what changed, not the account's history. ``None`` counts every month."""
    held = account.__dict__.get(MONTH_LINES)
    months = account.months
    if held is not None and changed is not None:
        counts, total = held
        for key in changed:
            month = months.get(key)
            n = 0 if month is None else _lines(month)
            total += n - counts.get(key, 0)
            if month is None:
                counts.pop(key, None)
            else:
                counts[key] = n
        if len(counts) == len(months):
            account.__dict__[MONTH_LINES] = (counts, total)
            return total
        # a month came or went without being marked changed: count them all again
    counts = {key: len(m.bills) + len(m.adjustments) + len(m.payments) + len(m.refunds) + len(m.retro)
              for key, m in months.items()}  # _lines inlined: every month of every account loaded
    total = sum(counts.values())
    account.__dict__[MONTH_LINES] = (counts, total)
    return total


def account_bytes(account: AccountState, changed: Collection[str] | None = None) -> int:
    """Estimated bytes of ``account`` in memory (rounded up by MARGIN); ``changed``: the month keys
    changed since the last estimate of this account (None: every month may have)."""
    lines = _month_lines(account, changed)
    fsa = account.fsa
    built = account.__dict__  # the id lookups, once the fold built them (AccountState.payment_months)
    lookups = [index for index in (built.get("_payment_months"), built.get("_bill_months")) if index is not None]
    fsa_entries = 0 if fsa is None else len(fsa.years) + len(fsa.claims) + len(fsa.contribution_ids) + len(
        fsa.election_ids)
    estimate = (
        ACCOUNT_BYTES + MONTH_BYTES * len(account.months) + LINE_BYTES * lines
        + COVERAGE_BYTES * len(account.coverages) + OPEN_DISCREPANCY_BYTES * len(account.open)
        + LOOKUP_BYTES * len(lookups) + LOOKUP_ENTRY_BYTES * sum(map(len, lookups))
        + ID_ENTRY_BYTES * (len(account.refund_ids) + len(account.application_ids))
        + FSA_ENTRY_BYTES * fsa_entries
        + REMITTANCE_BYTES * len(account.remittances)
        + ID_ENTRY_BYTES * sum(len(r.advice_lines) for r in account.remittances.values())
        + RECORD_BYTES * (len(account.closed) + len(account.notices) + len(account.pending_enrollments))
        + len(built.get(STORED_HEADER, b""))  # the header as the store holds it (processor/stored.py)
    )
    return int(estimate * MARGIN)
