"""How a batch stores an account's fold state: its header and the month rows it changed.

The fold marks the months it re-projects dirty (processor/rules/reconcile.py), and the months whose
findings it opens, changes or closes (processor/rules/lifecycle.py, workflow.py); a write stores those
rows, each with the findings about its month, and the header (processor/state.py ``encode_header``),
never the account's whole history. A month changed without being marked would keep a stale row, so in
check mode (``LEDGER_CHECK_MONTH_WRITES=1``, which the test suite sets) every write also encodes every
month and its findings and fails on one that changed unmarked.
"""

from __future__ import annotations

import itertools
import os

from processor.state import (
    FINDINGS_IN_HEADER,
    UNSPLIT,
    AccountState,
    encode_findings,
    encode_month,
    findings_by_month,
    unpaid,
)

# (account_id, month_key, ordinal, month, the month's findings or None): one row of account_month_state
MonthStateRow = tuple[str, str, int, bytes, bytes | None]


# LEDGER_CHECK_MONTH_WRITES=1 (the test suite sets it): every freeze encodes every month of every account
# it writes and fails if one changed without being marked dirty, i.e. if a month row would go stale.
def check_month_writes() -> bool:
    return os.environ.get("LEDGER_CHECK_MONTH_WRITES", "") not in ("", "0")


_WRITTEN = "_month_bytes"  # in AccountState.__dict__, check mode only: each month as last loaded or written


def changed_months(account: AccountState, dirty: set[str], *, check: bool = False) -> list[MonthStateRow]:
    """The month rows a write stores: the months the fold marked dirty (every month of a whole-account
    snapshot written before months had rows, and the months whose findings an older header held), with
    their ordinals so a load keeps the months' order, and each with the findings about it."""
    whole = account.__dict__.pop(UNSPLIT, False)
    from_header: set[str] = account.__dict__.pop(FINDINGS_IN_HEADER, set())
    if check:
        check_months_marked(account, dirty | from_header, whole)
    if not dirty and not whole and not from_header:
        return []
    ordinals = month_ordinals(account)
    months = account.months
    keys = months if whole else sorted(dirty | from_header)
    findings = findings_by_month(account) if account.open or account.closed else {}
    return [(account.account_id, k, ordinals[k], encode_month(months[k]), encode_findings(findings.get(k)))
            for k in keys if k in months]


def month_ordinals(account: AccountState) -> dict[str, int]:
    """Month key -> its place in ``account.months`` (months are only ever added, at the end)."""
    ordinals: dict[str, int] | None = account.__dict__.get("_ordinals")
    if ordinals is None:
        ordinals = account.__dict__["_ordinals"] = {}
    if len(ordinals) != len(account.months):  # months added since: they are at the end
        for i, k in enumerate(itertools.islice(account.months, len(ordinals), None), start=len(ordinals)):
            ordinals[k] = i
    return ordinals


def check_months_marked(account: AccountState, dirty: set[str], whole: bool) -> None:
    written: dict[str, tuple[bytes, bytes | None]] = account.__dict__.setdefault(_WRITTEN, {})
    findings = findings_by_month(account)
    for key, month in account.months.items():
        raw = (encode_month(month), encode_findings(findings.get(key)))
        if not whole and key not in dirty and written.get(key) != raw:
            raise AssertionError(f"account {account.account_id}: month {key} or its findings changed but it"
                                 " was not marked dirty, so its stored row would be stale")
        written[key] = raw
    kept = account.__dict__.get("_unpaid_months")
    if kept is not None:
        fresh = {k for k, m in account.months.items() if unpaid(m)}
        if kept != fresh:
            raise AssertionError(f"account {account.account_id}: the unpaid months index {sorted(kept)} is not"
                                 f" the months billed and unpaid {sorted(fresh)}")


def remember_loaded_months(account: AccountState) -> None:
    """Check mode: the months (and their findings) as loaded, which a later write must not change unmarked.
    Months whose findings came from an older header are written anyway, so they are not remembered."""
    if check_month_writes():
        findings = findings_by_month(account)
        stale = account.__dict__.get(FINDINGS_IN_HEADER, set())
        account.__dict__[_WRITTEN] = {k: (encode_month(m), encode_findings(findings.get(k)))
                                      for k, m in account.months.items() if k not in stale}
